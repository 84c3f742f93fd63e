"""Mask collapse: detection and the restart-from-last-healthy-checkpoint policy.

Layered GANs (ILSGAN included) can fall into a degenerate solution where the mask is all 0 (the
background generator draws the whole image) or all 1 (the foreground does). The mask-area hinge of
eq. (4) of Zou et al. 2023 fights the first, the perturbed composition of eq. (3) the second, but
neither is a guarantee; users of layered GANs report both. `detect_mask_collapse` looks at a batch
of
generated masks; `CollapseMonitor` keeps the history over training, remembers the last healthy
checkpoint and says whether to restart from it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from indep_seg import checks

__all__ = ["CollapseReport", "detect_mask_collapse", "CollapseMonitor"]


@dataclasses.dataclass
class CollapseReport:
    """Outcome of one check. `kind` is None (healthy), "all-0" or "all-1"."""

    collapsed: bool
    kind: str | None
    mean_coverage: float
    fraction_empty: float
    fraction_full: float
    message: str

    def to_dict(self):
        return dataclasses.asdict(self)


def detect_mask_collapse(
    masks, empty_coverage=0.01, full_coverage=0.99, min_fraction=0.9, threshold=0.5
):
    """Is this batch of generated masks collapsed?

    A mask is *empty* when less than `empty_coverage` of its pixels exceed `threshold`, *full* when
    more than `full_coverage` do. The batch is collapsed ("all-0" / "all-1") when at least
    `min_fraction` of its masks are empty / full.

    Args:
        masks: `[N, H, W, 1]` (or `[N, H, W]`) values in [0, 1].

    Returns:
        `CollapseReport`, with a message a person can act on.
    """
    checks.check_rank(masks, "masks", (3, 4), "[N, H, W, 1] or [N, H, W]")
    arr = checks.to_numpy(masks, "masks").astype(np.float32)
    if arr.ndim == 4:
        checks.check_channels(arr, "masks", 1, what="[N, H, W, 1]")
    if arr.shape[0] == 0:
        raise ValueError("masks: expected at least one mask, got an empty batch")
    checks.check_range(arr, "masks", 0.0, 1.0)
    checks.check_fraction(empty_coverage, "empty_coverage")
    checks.check_fraction(full_coverage, "full_coverage")
    checks.check_fraction(min_fraction, "min_fraction")
    coverage = (arr > threshold).reshape(arr.shape[0], -1).mean(axis=1)
    frac_empty = float((coverage < empty_coverage).mean())
    frac_full = float((coverage > full_coverage).mean())
    mean_cov = float(coverage.mean())
    if frac_empty >= min_fraction:
        kind = "all-0"
        msg = (
            f"MASK COLLAPSE (all-0): {frac_empty:.0%} of generated masks are empty "
            f"(mean coverage {mean_cov:.3f}); the background layer is drawing the whole image"
        )
    elif frac_full >= min_fraction:
        kind = "all-1"
        msg = (
            f"MASK COLLAPSE (all-1): {frac_full:.0%} of generated masks cover the whole image "
            f"(mean coverage {mean_cov:.3f}); the foreground layer is drawing the whole image"
        )
    else:
        kind = None
        msg = (
            f"masks healthy: mean coverage {mean_cov:.3f}, {frac_empty:.0%} empty, "
            f"{frac_full:.0%} full"
        )
    return CollapseReport(kind is not None, kind, mean_cov, frac_empty, frac_full, msg)


class CollapseMonitor:
    """Tracks collapse over training and implements the restart policy.

    Call `check(step, masks, checkpoint_path)` after each checkpoint: a healthy batch makes that
    checkpoint the *last healthy* one; `patience` consecutive collapsed checks make `check` return
    the action "restart" (policy "restart", a healthy checkpoint known, fewer than `max_restarts`
    restarts so far) or "report". Every event is kept in `events` (JSON-ready) and can be appended
    to
    a JSONL file.

    Args:
        policy: "report" (only report) or "restart".
        patience: consecutive collapsed checks before acting (1 = act at once).
        max_restarts: restarts allowed in one run.
        log_path: optional JSONL file receiving one line per collapsed check / restart.
    """

    def __init__(self, policy="report", patience=2, max_restarts=3, log_path=None, **detect_kwargs):
        self.policy = checks.check_choice(policy, "policy", ("report", "restart"))
        self.patience = checks.check_int(patience, "patience", minimum=1)
        self.max_restarts = checks.check_int(max_restarts, "max_restarts", minimum=0)
        self.log_path = log_path
        self.detect_kwargs = detect_kwargs
        self.last_healthy = None  # (step, checkpoint_path)
        self.consecutive = 0
        self.restarts = 0
        self.events = []

    def _log(self, event):
        self.events.append(event)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(event) + "\n")

    def check(self, step, masks, checkpoint_path=None):
        """Returns `(report, action)` with action None, "report" or "restart"."""
        report = detect_mask_collapse(masks, **self.detect_kwargs)
        if not report.collapsed:
            self.consecutive = 0
            if checkpoint_path is not None:
                self.last_healthy = (int(step), str(checkpoint_path))
            return report, None
        self.consecutive += 1
        action = "report"
        if (
            self.policy == "restart"
            and self.consecutive >= self.patience
            and self.last_healthy is not None
            and self.restarts < self.max_restarts
        ):
            action = "restart"
            self.restarts += 1
            self.consecutive = 0
        event = {"step": int(step), "action": action, **report.to_dict()}
        if action == "restart":
            event["restart_from_step"], event["restart_from"] = self.last_healthy
            event["message"] += (
                f"; restarting from the last healthy checkpoint (step {self.last_healthy[0]})"
            )
        self._log(event)
        return report, action

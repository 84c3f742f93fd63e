"""Mask-collapse detector and restart policy (indep_seg/collapse.py)."""

import json

import numpy as np
import pytest

from indep_seg.collapse import CollapseMonitor, detect_mask_collapse


def _healthy(n=8, r=16):
    m = np.zeros((n, r, r, 1), np.float32)
    m[:, 4:12, 5:11] = 1.0
    return m


def test_fires_on_all_ones_and_all_zeros():
    rep = detect_mask_collapse(np.ones((8, 16, 16, 1), np.float32))
    assert rep.collapsed and rep.kind == "all-1" and "MASK COLLAPSE (all-1)" in rep.message
    assert rep.mean_coverage == 1.0
    rep = detect_mask_collapse(np.full((8, 16, 16), 0.1, np.float32))
    assert rep.collapsed and rep.kind == "all-0" and rep.fraction_empty == 1.0


def test_healthy_and_mixed_batches_do_not_fire():
    rep = detect_mask_collapse(_healthy())
    assert not rep.collapsed and rep.kind is None
    assert rep.mean_coverage == pytest.approx(48 / 256)
    mixed = np.concatenate([np.ones((5, 16, 16, 1), np.float32), _healthy(5)])
    assert not detect_mask_collapse(mixed).collapsed  # half full is not "all-1"


def test_input_validation():
    with pytest.raises(ValueError, match="masks"):
        detect_mask_collapse(np.full((2, 4, 4, 1), 2.0, np.float32))
    with pytest.raises(ValueError, match="masks"):
        detect_mask_collapse(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="policy"):
        CollapseMonitor(policy="retry")


def test_restart_policy_goes_back_to_last_healthy(tmp_path):
    log = tmp_path / "collapse.jsonl"
    mon = CollapseMonitor("restart", patience=2, max_restarts=1, log_path=log)
    full = np.ones((8, 16, 16, 1), np.float32)
    assert mon.check(100, _healthy(), "ckpt-100")[1] is None
    assert (
        mon.check(200, full, "ckpt-200")[1] == "report"
    )  # patience 2: first collapsed check reports
    rep, action = mon.check(300, full, "ckpt-300")
    assert action == "restart" and mon.last_healthy == (100, "ckpt-100")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[-1]["restart_from"] == "ckpt-100" and events[-1]["kind"] == "all-1"
    assert mon.check(400, full)[1] == "report"
    assert mon.check(500, full)[1] == "report"  # max_restarts reached


def test_report_policy_never_restarts():
    mon = CollapseMonitor("report", patience=1)
    mon.check(1, _healthy(), "a")
    assert mon.check(2, np.zeros((8, 16, 16, 1), np.float32))[1] == "report"

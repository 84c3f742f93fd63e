"""The HoC trainer's test size, shared by the tests that run `train_hoc` in-process."""

from indep_seg.training.experiments.hoc import HocConfig


def tiny_hoc_config(**overrides) -> HocConfig:
    """A `HocConfig` small enough for a two-step run in seconds (16 px windows, narrow nets, a
    two-step counter), with `overrides` applied."""
    base = dict(
        resolution=16,
        g_initial_size=4,
        g_widths=(16, 8, 8),
        d_widths=(8, 16),
        q_widths=(4, 8),
        counter_steps=2,
        counter_width=4,
        checkpoint_every=2,
        image_every=2,
        log_every=1,
        batch_size=4,
    )
    base.update(overrides)
    return HocConfig(**base)

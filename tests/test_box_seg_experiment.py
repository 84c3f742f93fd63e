"""`box_seg` experiment: data reading and its errors, backgrounds, a tiny end-to-end run."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from indep_seg.data.backgrounds import scale_matched_backgrounds
from indep_seg.training.context import TrainContext
from indep_seg.training.experiments.box_seg import (
    BoxSegConfig,
    BoxSegDataError,
    effective_a,
    load_box_data,
    paper_config,
)


def _photo(path, w=40, h=32, box=(10, 8, 30, 24)):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 200  # green background
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = (230, 20, 20)  # red object filling the box
    Image.fromarray(img).save(path)
    return img


def _folder(tmp_path, n=6, rows=None):
    for i in range(n):
        _photo(tmp_path / f"im{i}.png")
    rows = rows if rows is not None else [f"im{i}.png,10,8,30,24" for i in range(n)]
    (tmp_path / "boxes.csv").write_text("filename,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    return tmp_path


def test_reads_boxes_csv(tmp_path):
    items = load_box_data(
        _folder(tmp_path, 3, ["im0.png,10,8,30,24", "im0.png,0,0,5,5", "im2.png,1,1,39,31"])
    )
    assert [n for n, _, _ in items] == ["im0.png#2", "im0.png#3", "im2.png#4"]
    assert items[1][2] == [0.0, 0.0, 5.0, 5.0] and items[0][1].shape == (32, 40, 3)


@pytest.mark.parametrize(
    "row, message",
    [
        ("im0.png,10,8,10,24", "row 2: empty box"),
        ("im0.png,10,8,50,24", "row 2: box .* leaves the image im0.png"),
        ("im0.png,1,2,3", "row 2: expected 5 fields"),
        ("im0.png,a,2,3,4", "row 2: box values must be numbers"),
        ("missing.png,1,2,3,4", "row 2: image .*missing.png not found"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, row, message):
    folder = _folder(tmp_path, 1, [row])
    with pytest.raises(BoxSegDataError, match=message):
        load_box_data(folder)
    warnings = []
    with pytest.raises(BoxSegDataError, match="no usable image/box pair .*1 bad"):
        load_box_data(folder, skip_bad=True, log=warnings.append)
    assert warnings and "skipped" in warnings[0]


def test_unreadable_image_and_masks(tmp_path):
    folder = _folder(tmp_path, 2)
    (folder / "im1.png").write_bytes(b"not an image")
    with pytest.raises(BoxSegDataError, match="row 3: .*im1.png: cannot read image"):
        load_box_data(folder)
    assert len(load_box_data(folder, skip_bad=True, log=lambda m: None)) == 1
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((32, 40), np.uint8)
    m[5:20, 3:13] = 255
    Image.fromarray(m).save(masks / "im0.png")
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(masks / "im1.png")
    (folder / "im1.png").unlink()
    items = load_box_data(folder, masks=masks)
    assert items[0][2] == [3.0, 5.0, 13.0, 20.0]  # box of the mask, x1/y1 exclusive
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(folder / "im1.png")
    with pytest.raises(BoxSegDataError, match="im1.png: empty mask"):
        load_box_data(folder, masks=masks)
    Image.fromarray(np.zeros((10, 40), np.uint8)).save(masks / "im1.png")
    with pytest.raises(BoxSegDataError, match="im1.png: mask size 40x10 does not match"):
        load_box_data(folder, masks=masks)


def test_backgrounds_use_no_foreground_pixel():
    imgs, boxes = [], []
    for i in range(3):
        img = np.zeros((50, 60, 3), np.float32)
        img[..., 1] = 0.8
        img[10:40, 15:45] = (1.0, 0.0, 0.0)
        imgs.append(img)
        boxes.append([15, 10, 45, 40])
    bgs, src = scale_matched_backgrounds(imgs, boxes, 16, variants=2)
    assert bgs.shape == (6, 16, 16, 3) and list(src) == [0, 0, 1, 1, 2, 2]
    assert bgs[..., 0].max() < 0.05 and bgs[..., 1].min() > 0.75  # all green, no red object
    with pytest.raises(ValueError, match="boxes\\[0\\]: empty box"):
        scale_matched_backgrounds(imgs[:1], [[5, 5, 5, 9]], 16)
    with pytest.raises(ValueError, match="no photo has enough pixels outside"):
        scale_matched_backgrounds(imgs[:1], [[0, 0, 60, 50]], 16)


def test_presets():
    paper = paper_config()
    assert (
        paper.resolution,
        paper.unet,
        paper.discriminator,
        paper.area_a,
        paper.area_lambda,
        paper.margin,
        paper.upsampling,
    ) == (128, "paper", "paper", 0.25, 1000.0, 0.0, "transpose")
    assert effective_a(dataclasses.replace(paper, margin=0.25)) == pytest.approx(0.25 / 2.25)
    from indep_seg.training.registry import get_experiment

    assert get_experiment("box_seg").default_config == BoxSegConfig()
    assert get_experiment("box_seg_paper").default_config == paper


def test_tiny_end_to_end(tmp_path):
    from indep_seg.segmenter import Segmenter

    data = _folder(tmp_path / "data", 6) if (tmp_path / "data").mkdir() is None else None
    cfg = BoxSegConfig(
        resolution=16,
        unet="tiny",
        discriminator="tiny",
        batch_size=4,
        steps=10,
        adversarial_fraction=0.8,
        snapshot_every=2,
        probe_images=4,
        log_every=2,
    )
    ctx = TrainContext(
        model_dir=tmp_path / "run", data=str(data), extra={"verbose": False, "log": lambda m: None}
    )
    result = __import__("indep_seg.training.experiments.box_seg", fromlist=["x"]).train_box_seg(
        cfg, ctx
    )
    assert (
        result["phase"] == "distill"
        and result["adversarial_steps"] == 8
        and result["distill_steps"] == 2
    )
    assert result["selected_step"] in (2, 4, 6, 8)
    for png in ("adversarial_selected.png", "distill.png", "adversarial/reals.png"):
        assert (tmp_path / "run" / png).is_file()
    seg = Segmenter.load(tmp_path / "run")
    assert seg.resolution == 16 and seg.metadata()["phase"] == "distill"
    masks = seg.predict([np.zeros((32, 40, 3), np.uint8)], [[10, 8, 30, 24]])
    assert np.asarray(masks[0]).shape[:2] == (32, 40)
    assert np.asarray(masks[0])[:8].max() == 0.0  # nothing outside the box


class _StubNet:
    """predict() returns the masks set by the test; weights are one array tagged by the step."""

    def __init__(self):
        self.masks, self.tag = None, 0

    def predict(self, x, batch_size=None, verbose=0):
        return self.masks

    def get_weights(self):
        return [np.array([self.tag])]


def test_only_the_confident_priors_anchor_the_network(tmp_path):
    """`prior_confident_share=0.5`: the shards keep each prior's score, the run's threshold is
    the collection's median score, its batches weigh the priors at or above it 1 and the rest 0,
    and the adversarial phase trains with those weights."""
    from indep_seg.training.experiments import box_seg

    cfg = BoxSegConfig(
        resolution=16,
        unet="tiny",
        discriminator="tiny",
        d_downsample=1,
        batch_size=4,
        steps=4,
        adversarial_fraction=0.5,
        snapshot_every=2,
        probe_images=4,
        evidence_images=0,
        prior_confident_share=0.5,
    )
    lines = []
    ctx = TrainContext(
        model_dir=tmp_path / "run",
        data="synthetic:8",
        extra={"verbose": False, "log": lines.append},
    )
    with pytest.raises(ValueError, match=r"prior_confident_share: .* got 1.5"):
        box_seg.train_box_seg(dataclasses.replace(cfg, prior_confident_share=1.5), ctx)
    assert not (tmp_path / "run").exists()  # refused before any work
    result = box_seg.train_box_seg(cfg, ctx)
    assert result["adversarial_steps"] == 2 and result["distill_steps"] == 2
    from indep_seg.data.box_seg_stream import read_box_seg_shards

    shards = read_box_seg_shards(tmp_path / "run" / "box_shards")
    median = float(shards["prior_score_percentiles"][50])
    assert any(f"scoring at least {median:.3f} (the top 50%" in str(x) for x in lines)
    run = box_seg._BoxSegRun(cfg, ctx, "box_seg", {}, print, tmp_path, tmp_path, 0.0, shards)
    assert run.prior_threshold == pytest.approx(median)
    batch = next(iter(run.dataset_fn(0)()))
    assert set(np.unique(batch["prior_weight"].numpy())) <= {0.0, 1.0}
    distill_batch = next(iter(run.dataset_fn(0, with_prior=False)()))
    assert "prior_weight" not in distill_batch and "prior" not in distill_batch


def test_snapshot_selector_prefers_confident_stable_snapshots():
    from indep_seg.training.experiments.box_seg import SnapshotSelector

    net, sel = _StubNet(), SnapshotSelector(np.zeros((2, 4, 4, 3)), a=0.5)
    base = np.zeros((2, 4, 4, 1), "float32")
    base[:, :2] = 1.0  # half the crop: area 0.5 = a
    for step, (masks) in enumerate(
        [
            base * 0.6 + 0.2,  # unsure (confidence 0.6)
            base * 0.8 + 0.1,  # same binary masks, more confident
            base * 0.7 + 0.15,  # stable but less confident
            np.ones_like(base),
        ],
        start=1,
    ):  # collapsed to full
        net.masks, net.tag = masks, step
        sel(net, step)
    assert sel.best_step == 2 and sel.best_weights[0][0] == 2
    assert [r["eligible"] for r in sel.history] == [False, True, True, False]


def test_snapshot_selector_refuses_frames_of_background():
    """A snapshot whose masks carve the background inside the box (a frame) is never eligible."""
    from indep_seg.training.experiments.box_seg import SnapshotSelector

    r = 16
    yy, xx = np.mgrid[0:r, 0:r] + 0.5
    blob = (((xx - 8) / 6) ** 2 + ((yy - 8) / 6) ** 2 <= 1).astype("float32")
    frame = 1.0 - (((xx - 8) / 5) ** 2 + ((yy - 8) / 5) ** 2 <= 1).astype("float32")
    assert SnapshotSelector.degenerate_share(np.stack([frame, frame])[..., None] > 0.5) == 1.0
    assert SnapshotSelector.degenerate_share(np.stack([blob, frame])[..., None] > 0.5) == 0.5
    net, sel = _StubNet(), SnapshotSelector(np.zeros((4, r, r, 3)), a=None)
    for step, m in enumerate([blob, blob, frame, frame], start=1):
        net.masks, net.tag = np.stack([m * 0.98 + 0.01] * 4)[..., None], step
        sel(net, step)
    assert [h["degenerate"] for h in sel.history] == [0.0, 0.0, 1.0, 1.0]
    assert [h["eligible"] for h in sel.history] == [False, True, False, False]
    assert sel.best_step == 2  # the frames are as confident and stable, but degenerate


@pytest.mark.parametrize(
    "setting, value",
    [
        ("PRIOR_TIGHTNESS_POWER", 3),
        ("LOW_RANGE", 0),
        ("SMALL_MASK_MEET", 0.5),
        ("PRIOR_CLEAN", False),
        ("CLEAN_TIGHTNESS_SLACK", 0.1),
        ("CLEAN_SCALE", 1.0),
        ("CLEAN_PHOTO_DETAIL", False),
    ],
)
def test_shards_are_made_again_for_another_prior_method(tmp_path, monkeypatch, setting, value):
    """Shards made with one version of the box prior are not reused by a run whose prior chooses
    among other GrabCut settings, stretches other windows, keeps other small masks or cleans its
    masks otherwise: the prior's method is part of the shards' settings."""
    from indep_seg import box_prior
    from indep_seg.training.experiments.box_seg import box_seg_config, prepare_box_shards

    small = dict(resolution=16, unet="tiny", discriminator="tiny", d_downsample=1)
    cfg = dataclasses.replace(box_seg_config(), **small, evidence_images=0, probe_images=4)
    lines = []
    prepare_box_shards("synthetic:4", cfg, tmp_path, log=lines.append)
    prepare_box_shards("synthetic:4", cfg, tmp_path, log=lines.append)
    assert sum("reusing" in str(x) for x in lines) == 1
    monkeypatch.setattr(box_prior, setting, value)
    lines.clear()
    prepare_box_shards("synthetic:4", cfg, tmp_path, log=lines.append)
    assert not any("reusing" in str(x) for x in lines)


def test_budget_leaves_the_evidence_report_its_time():
    """The distillation phase ends early enough for the end-of-run evidence report: 0.25 s per
    evidence photo (200 photos: 50 s of a 30-minute budget), never more than a tenth of it."""
    import time

    from indep_seg.training.experiments.box_seg import EVIDENCE_SECONDS_PER_IMAGE, _BoxSegRun

    def run(budget, images):
        ctx = TrainContext(model_dir="unused", budget_minutes=budget)
        cfg = BoxSegConfig(evidence_images=images)
        return _BoxSegRun(cfg, ctx, "box_seg", {}, print, None, None, time.time())

    assert EVIDENCE_SECONDS_PER_IMAGE == 0.25
    assert run(30.0, 200).evidence_reserve_seconds() == 50.0
    assert run(1.0, 200).evidence_reserve_seconds() == 6.0  # a tenth of one minute
    assert run(30.0, 0).evidence_reserve_seconds() == 0.0
    assert run(None, 200).evidence_reserve_seconds() == 0.0
    r = run(30.0, 200)
    assert abs(r.remaining_minutes() - 30.0) < 0.01
    assert abs(r.remaining_minutes(r.evidence_reserve_seconds()) - (30.0 - 50.0 / 60)) < 0.01
    assert r.remaining_minutes(10**6) == 0.05  # never below its floor
    assert run(None, 200).remaining_minutes(50.0) is None

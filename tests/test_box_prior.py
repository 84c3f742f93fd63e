"""Per-image box evidence (`indep_seg.box_prior`), the GAN's prior terms and the titled
galleries."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from indep_seg import box_prior as bp


def _disc_photo(h=96, w=112, centre=(56, 48), radius=22, seed=0):
    """A red disc on a textured green/blue background: (uint8 photo, bool disc, tight box)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    disc = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    photo = np.zeros((h, w, 3), np.float32)
    photo[..., 1] = 0.45 + 0.15 * np.sin(xx / 5.0)
    photo[..., 2] = 0.55 + 0.15 * np.cos(yy / 7.0)
    photo[disc] = (0.85, 0.15, 0.1)
    photo += rng.normal(0, 0.03, photo.shape)
    ys, xs = np.nonzero(disc)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return (np.clip(photo, 0, 1) * 255).astype(np.uint8), disc, box


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def test_box_and_ellipse_masks_by_hand():
    m = bp.box_mask((4, 6), (1, 1, 4, 3))
    assert m.sum() == 6 and m[1:3, 1:4].all()
    e = bp.ellipse_mask((10, 10), (0, 0, 10, 10))
    assert e[5, 5] and not e[0, 0] and not e[0, 9]
    assert abs(e.sum() - np.pi * 25) < 8  # area of a radius-5 disc


def test_mask_diagnostics_and_degenerate_shapes():
    shape, box = (64, 64), (8, 8, 56, 56)
    ellipse = bp.ellipse_mask(shape, box)
    frame = bp.box_mask(shape, box) & ~bp.ellipse_mask(shape, box, 0.7)
    d = bp.mask_diagnostics(ellipse, box)
    assert d["core"] == 1.0 and d["outside"] == 0.0 and 0.75 < d["fill"] < 0.82
    assert not bp.is_degenerate(ellipse, box)
    fd = bp.mask_diagnostics(frame, box)
    assert fd["frame"] > 0.5 and fd["core"] == 0.0
    assert bp.is_degenerate(frame, box)  # background carved inside the box
    assert bp.is_degenerate(np.zeros(shape, bool), box)  # empty
    assert bp.is_degenerate(bp.box_mask(shape, box), box)  # the whole box


def test_a_small_mask_is_degenerate_unless_it_meets_its_box():
    shape, box = (64, 64), (8, 8, 56, 56)
    # a thin cross through the box: 2-px arms, fill (2 * 48 * 2 - 4) / 48^2 = 0.082 < 0.1,
    # yet it reaches all four sides (a kite surfer's lines, a bike's frame)
    cross = np.zeros(shape, bool)
    cross[31:33, 8:56] = True
    cross[8:56, 31:33] = True
    assert abs(bp.mask_diagnostics(cross, box)["fill"] - 188 / 48**2) < 1e-6
    assert bp.box_tightness(cross, box) == 1.0
    assert not bp.is_degenerate(cross, box)
    # the same pixels as a blob in the middle (a collapsed GrabCut): tightness 14/48
    blob = np.zeros(shape, bool)
    blob[25:39, 25:39] = True
    assert bp.mask_diagnostics(blob, box)["fill"] < 0.1
    assert bp.box_tightness(blob, box) == 14 / 48
    assert bp.is_degenerate(blob, box)
    # a thin outline along the box's edges meets every row and column, but is a frame
    outline = bp.box_mask(shape, box) & ~bp.box_mask(shape, (9, 9, 55, 55))
    assert bp.mask_diagnostics(outline, box)["fill"] < 0.1
    assert bp.box_tightness(outline, box) == 1.0 and bp.is_degenerate(outline, box)
    # the old rule (fill under min_fill is degenerate) with min_meet above 1
    assert bp.is_degenerate(cross, box, min_meet=1.01)
    # near-empty or half-met masks stay degenerate
    corners = np.zeros(shape, bool)
    corners[[8, 8, 55, 55], [8, 55, 8, 55]] = True
    assert bp.box_tightness(corners, box) == 2 / 48 and bp.is_degenerate(corners, box)
    single_line = np.zeros(shape, bool)
    single_line[8:56, 31] = True  # fill 1/48 = 0.021: meets rows, not columns
    assert bp.box_tightness(single_line, box) == 0.5 * (1 + 1 / 48)
    assert bp.is_degenerate(single_line, box)
    tiny = cross & (np.arange(64)[None, :] % 24 == 0)  # under empty_fill
    assert bp.mask_diagnostics(tiny, box)["fill"] < 0.01 and bp.is_degenerate(tiny, box)


def test_grabcut_finds_the_object_and_prior_falls_back_to_the_ellipse():
    photo, disc, box = _disc_photo()
    assert _iou(bp.grabcut(photo, box), disc) > 0.85
    assert _iou(bp.box_prior(photo, box), disc) > 0.85
    flat = np.full((64, 64, 3), 128, np.uint8)  # nothing to separate: degenerate
    prior = bp.box_prior(flat, (16, 16, 48, 48))
    assert np.array_equal(prior, bp.ellipse_mask(flat.shape, (16, 16, 48, 48)))


def test_core_held_grabcut_keeps_its_seed():
    """GrabCut with the box's core held as foreground cannot collapse to nothing."""
    photo, disc, box = _disc_photo()
    seed = bp.ellipse_mask(photo.shape, box, bp.CORE_SEED_SCALE)
    # the core is foreground whatever the colours say (a flat photo included)
    flat = np.full(photo.shape, 128, np.uint8)
    assert bp.grabcut(flat, box, init="core")[seed].all()
    assert _iou(bp.grabcut(photo, box, init="core"), disc) > 0.85
    with pytest.raises(ValueError, match="init"):
        bp.grabcut(photo, box, init="circle")


def test_box_tightness_and_prior_score_by_hand():
    box = (2, 2, 10, 6)  # 8 columns, 4 rows
    mask = np.zeros((8, 12), bool)
    assert bp.box_tightness(mask, box) == 0.0
    mask[2:6, 2:10] = True
    assert bp.box_tightness(mask, box) == 1.0
    left = np.zeros((8, 12), bool)
    left[2:6, 2:6] = True  # every row, half of the columns
    assert bp.box_tightness(left, box) == pytest.approx(0.5 * (1.0 + 0.5))
    diag = np.zeros((8, 12), bool)
    diag[[2, 3, 4, 5], [2, 4, 6, 8]] = True  # a thin diagonal meets every row, half the columns
    assert bp.box_tightness(diag, box) == pytest.approx(0.75)
    photo, disc, dbox = _disc_photo()
    half = disc & (np.mgrid[0 : disc.shape[0], 0 : disc.shape[1]][1] < 56)
    c = bp.colour_contrast(photo, half, dbox)
    t = bp.box_tightness(half, dbox)
    assert t == pytest.approx(0.75, abs=0.03)
    assert bp.prior_score(photo, half, dbox) == pytest.approx(c * t**bp.PRIOR_TIGHTNESS_POWER)


def test_prior_keeps_the_best_scoring_grabcut_and_falls_back_to_the_ellipse(monkeypatch):
    """Every setting of `PRIOR_CANDIDATES` is asked; degenerate masks and core-held masks that did
    not grow past their seed are dropped; the highest `prior_score` wins; the ellipse where none
    is left (the choice before `clean_prior`, which is off here)."""
    monkeypatch.setattr(bp, "PRIOR_CLEAN", False)
    photo, disc, box = _disc_photo()
    seed = bp.ellipse_mask(photo.shape, box, bp.CORE_SEED_SCALE)
    empty = np.zeros(disc.shape, bool)
    half = disc & (np.mgrid[0 : disc.shape[0], 0 : disc.shape[1]][1] < 56)
    calls = []

    def fake(answer):
        def grabcut(image, b, iterations=5, init="rect", core=bp.CORE_SEED_SCALE, **kw):
            calls.append((init, kw["colour"], kw["seed"]))
            return answer(init, kw["colour"], kw["seed"])

        return grabcut

    monkeypatch.setattr(bp, "grabcut", fake(lambda i, c, s: disc if i == "core" else empty))
    assert np.array_equal(bp.box_prior(photo, box), disc)
    assert calls == list(bp.PRIOR_CANDIDATES)
    ellipse = bp.ellipse_mask(photo.shape, box)
    for core_answer in (seed, empty, bp.box_mask(photo.shape, box)):  # no growth, empty, full
        monkeypatch.setattr(
            bp, "grabcut", fake(lambda i, c, s, a=core_answer: a if i == "core" else empty)
        )
        assert np.array_equal(bp.box_prior(photo, box), ellipse)
    # the half disc is as unlike the background as the disc, and reaches half of the box's
    # columns: the whole disc scores higher, whichever setting gave it
    for winner in bp.PRIOR_CANDIDATES:
        monkeypatch.setattr(
            bp, "grabcut", fake(lambda i, c, s, w=winner: disc if (i, c, s) == w else half)
        )
        assert np.array_equal(bp.box_prior(photo, box), disc)


def test_grabcut_colour_spaces_and_seed():
    photo, disc, box = _disc_photo()
    for colour in ("rgb", "lab", "ycrcb"):
        assert _iou(bp.grabcut(photo, box, colour=colour), disc) > 0.85
    with pytest.raises(ValueError, match="colour"):
        bp.grabcut(photo, box, colour="hsv")
    a, b = bp.grabcut(photo, box, seed=3), bp.grabcut(photo, box, seed=3)
    assert np.array_equal(a, b)  # the seed fixes GrabCut's k-means start


def test_fill_outside_photo_copies_background_never_the_box():
    photo, disc, box = _disc_photo()
    window = photo.copy()
    window[80:] = 0  # the window leaves the photo below the box ...
    window[:, :20] = 0  # ... and on its left
    filled = bp.fill_outside_photo(window, box)
    assert filled.dtype == np.uint8 and filled.shape == window.shape
    assert np.array_equal(filled[:80, 20:], window[:80, 20:])  # the photo is kept
    assert filled[80:].max(axis=-1).min() > 20 and filled[:, :20].max(axis=-1).min() > 20
    # every filled pixel is a photo pixel outside the box: none of the red disc's colour
    red = (filled[..., 0] > 150) & (filled[..., 1] < 80)
    assert not red[80:].any() and not red[:, :20].any()
    # by hand: below the box's columns the nearest background pixel is the one straight above
    assert np.array_equal(filled[90, 40], window[79, 40])
    # nothing to fill: the same pixels
    assert np.array_equal(bp.fill_outside_photo(photo, box), photo)
    # the box reaching the black edge: its rows and columns are never taken for the outside
    dark = np.zeros((32, 32, 3), np.uint8)
    dark[4:28, 4:28] = 90
    out = bp.fill_outside_photo(dark, (0, 0, 32, 32))
    assert np.array_equal(out, dark)


def test_prior_finds_a_dark_horse_that_black_padding_hid(shared_datasets):
    """horse063 (tuning half): a dark horse whose context window leaves the photo. GrabCut took
    the window's black padding for background colour and gave the horse to the background
    (docs/box_seg_notes.md, session 9); the filled window and Lab colour models find it."""
    from PIL import Image

    folder = shared_datasets / "weizmann_horse"
    gt = np.asarray(Image.open(folder / "figure_ground" / "horse063.jpg").convert("L")) > 127
    with Image.open(folder / "rgb" / "horse063.jpg") as im:
        photo = np.asarray(im.convert("RGB").resize((gt.shape[1], gt.shape[0])))
    ys, xs = np.nonzero(gt)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    crop, cbox, _, gt_crop = bp.context_crop(photo, box, extra=gt.astype(np.float32))
    truth = gt_crop > 0.5
    assert (crop[-1] == 0).all()  # the window does leave the photo
    assert _iou(bp.grabcut(crop, cbox), truth) < 0.3  # the collapse, RGB on the padded window
    assert _iou(bp.box_prior(crop, cbox), truth) > 0.5
    # the refinement prepares GrabCut's image the same way when asked: from the ellipse, RGB on
    # the padded window loses the horse, the filled window in Lab keeps it
    start = bp.ellipse_mask(crop.shape, cbox).astype(np.float32)
    old = bp.refine_with_grabcut(crop, start, cbox, guard=False, colour="rgb", fill=False)
    new = bp.refine_with_grabcut(crop, start, cbox, guard=False, colour="lab", fill=True)
    assert _iou(new > 0.5, truth) > _iou(old > 0.5, truth) + 0.1
    with pytest.raises(ValueError, match="colour"):
        bp.refine_with_grabcut(crop, start, cbox, guard=False, colour="hsv")


def test_colour_contrast_prefers_the_object_mask():
    photo, disc, box = _disc_photo()
    c_obj = bp.colour_contrast(photo, disc, box)
    c_box = bp.colour_contrast(photo, bp.box_mask(photo.shape, box), box)
    frame = bp.box_mask(photo.shape, box) & ~disc
    c_frame = bp.colour_contrast(photo, frame, box)
    assert c_obj > 0.8 and c_obj > c_box > c_frame
    # the same colour inside and outside the box: nothing to tell apart
    flat = np.full((32, 32, 3), 77, np.uint8)
    assert bp.colour_contrast(
        flat, bp.box_mask(flat.shape, (8, 8, 24, 24)), (8, 8, 24, 24)
    ) == pytest.approx(0.0)


def test_refine_with_grabcut_moves_a_blob_to_the_outline():
    photo, disc, box = _disc_photo()
    blob = bp.ellipse_mask(photo.shape, box, 1.0).astype(np.float32) * 0.8 + 0.1
    blob[bp.box_mask(photo.shape, box) & ~bp.ellipse_mask(photo.shape, box, 1.0)] = 0.6  # too big
    refined = bp.refine_with_grabcut(photo, blob, box)
    assert refined.dtype == np.float32
    assert _iou(refined > 0.5, disc) > max(_iou(blob > 0.5, disc), 0.85)
    assert refined[~bp.box_mask(photo.shape, box)].max() == 0.0
    # unguarded, a mask GrabCut cannot start from is kept as it is
    empty = np.zeros(photo.shape[:2], np.float32)
    assert np.array_equal(bp.refine_with_grabcut(photo, empty, box, guard=False), empty)
    # guarded, an empty or inverted mask (the background inside the box) gives way to the prior
    frame = (bp.box_mask(photo.shape, box) & ~disc).astype(np.float32)
    assert bp.is_inverted_or_degenerate(photo, frame > 0.5, box)
    assert not bp.is_inverted_or_degenerate(photo, disc, box)
    for bad in (empty, frame):
        assert _iou(bp.refine_with_grabcut(photo, bad, box) > 0.5, disc) > 0.85


def test_refinement_keeps_the_refined_mask_or_the_prior_by_score(monkeypatch):
    """With a prior in its start, the refinement answers with the refined mask only where its
    `prior_score` is at least the prior's (`select`); without `select`, always the refined mask."""
    photo, disc, box = _disc_photo()
    # the prior is the disc's left half, the start leans on the network's (good) disc mask
    half = disc & (np.mgrid[0 : disc.shape[0], 0 : disc.shape[1]][1] < 56)
    monkeypatch.setattr(bp, "box_prior", lambda image, b, iterations=5, detail=None: half)
    start = disc.astype(np.float32)
    kw = dict(prior_blend=0.25, guard=False)
    refined = bp.refine_with_grabcut(photo, start, box, select=False, **kw) > 0.5
    assert _iou(refined, disc) > 0.85
    chosen = bp.refine_with_grabcut(photo, start, box, select=True, **kw) > 0.5
    assert np.array_equal(chosen, refined)  # the disc scores higher than the half disc
    # a score that prefers smaller masks: the prior wins
    monkeypatch.setattr(bp, "prior_score", lambda image, m, b: -float(np.sum(m)))
    chosen = bp.refine_with_grabcut(photo, start, box, select=True, **kw) > 0.5
    assert np.array_equal(chosen, half)
    # no prior in the start (prior_blend 0): nothing to choose from
    assert _iou(bp.refine_with_grabcut(photo, start, box, guard=False) > 0.5, disc) > 0.85


def test_refinement_runs_grabcut_on_the_photos_window_when_given(monkeypatch):
    """`refine_with_grabcut(detail=...)` (`REFINE_PHOTO_DETAIL`): GrabCut sees the detail window
    (its size), starts from the mask resampled to it, and the mask comes back in the window's
    pixels, inside the box; `on_detail=False` keeps GrabCut on the window."""
    import cv2

    photo, disc, box = _disc_photo()
    h, w = disc.shape
    big = cv2.resize(photo, (w * 3, h * 3), interpolation=cv2.INTER_LINEAR)
    start = (disc & (np.mgrid[0:h, 0:w][1] < 56)) | np.roll(disc, 3, axis=0)
    sizes = []
    real = cv2.grabCut

    def spy(img, *a, **kw):
        sizes.append(img.shape[:2])
        return real(img, *a, **kw)

    monkeypatch.setattr(cv2, "grabCut", spy)
    on = bp.refine_with_grabcut(photo, start.astype(np.float32), box, guard=False, detail=big)
    assert sizes == [(h * 3, w * 3)]
    assert on.shape == disc.shape and on.dtype == np.float32
    assert not (on > 0.5)[~bp.box_mask(disc.shape, box)].any()
    assert _iou(on > 0.5, disc) > 0.85
    off = bp.refine_with_grabcut(
        photo, start.astype(np.float32), box, guard=False, detail=big, on_detail=False
    )
    assert sizes[-1] == (h, w) and _iou(off > 0.5, disc) > 0.85
    monkeypatch.setattr(bp, "REFINE_PHOTO_DETAIL", False)
    bp.refine_with_grabcut(photo, start.astype(np.float32), box, guard=False, detail=big)
    assert sizes[-1] == (h, w)


def test_refinement_answers_binary_masks_where_grabcut_result_is_dropped(monkeypatch):
    """Where the refined mask is degenerate (a ring is frame-shaped) the starting mask is kept,
    thresholded: no haze of soft values over the box."""
    photo, disc, box = _disc_photo()
    soft = np.where(disc, 0.7, 0.3).astype(np.float32) * bp.box_mask(photo.shape, box)
    monkeypatch.setattr(bp, "is_degenerate", lambda mask, b, **kw: True)
    out = bp.refine_with_grabcut(photo, soft, box, guard=False)
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert np.array_equal(out > 0.5, disc & bp.box_mask(photo.shape, box))


def test_box_priors_in_training_crops_and_mask_evidence():
    items = [(f"p{i}", *(_disc_photo(seed=i)[0::2])) for i in range(3)]
    priors = bp.box_priors(items, 32, margin=0.0)
    assert priors.shape == (3, 32, 32, 1) and priors.dtype == np.float32
    # crop = box: the disc fills pi/4 of its box, corners are background
    assert np.all(np.abs(priors.mean(axis=(1, 2, 3)) - np.pi / 4) < 0.08)
    assert priors[:, 0, 0, 0].max() < 0.5 and priors[:, 16, 16, 0].min() > 0.5
    photo, disc, box = _disc_photo()
    ev = bp.mask_evidence(photo, disc.astype(np.float32), box)
    assert ev["contrast"] > ev["contrast_box"] > 0 and not ev["degenerate"]
    assert ev["crop"].shape == (bp.PRIOR_RESOLUTION, bp.PRIOR_RESOLUTION, 3)


def test_area_penalty_per_image_target_by_hand():
    from indep_seg.models.foreground_seg_gan import area_penalty

    mask = tf.constant(np.stack([np.full((4, 4, 1), 0.5), np.full((4, 4, 1), 0.25)]), tf.float32)
    got = area_penalty(mask, tf.constant([0.3, 0.25])).numpy()
    assert got == pytest.approx(((0.5 - 0.3) ** 2 + 0.0) / 2)
    assert area_penalty(mask, 0.25).numpy() == pytest.approx((0.25**2 + 0) / 2)


def test_prior_consistency_loss_is_binary_cross_entropy():
    from indep_seg.models.foreground_seg_gan import prior_consistency_loss

    m = np.array([0.9, 0.2, 0.6, 0.5], np.float32).reshape(1, 2, 2, 1)
    p = np.array([1.0, 0.0, 0.0, 1.0], np.float32).reshape(1, 2, 2, 1)
    want = -np.mean(p * np.log(m) + (1 - p) * np.log(1 - m))
    assert prior_consistency_loss(tf.constant(m), tf.constant(p)).numpy() == pytest.approx(
        want, rel=1e-5
    )
    import keras

    ref = keras.losses.binary_crossentropy(p.reshape(1, -1), m.reshape(1, -1)).numpy()[0]
    assert float(ref) == pytest.approx(want, rel=1e-3)  # an independent implementation


def test_prior_consistency_loss_weighs_each_image_by_its_prior_weight():
    """`weight` [B]: the images' mean cross-entropies averaged with these weights, by hand; a
    weight of 0 leaves its image out, all zeros give 0, all ones the unweighted term."""
    from indep_seg.models.foreground_seg_gan import prior_consistency_loss

    rng = np.random.default_rng(3)
    m = rng.uniform(0.05, 0.95, (3, 4, 4, 1)).astype(np.float32)
    p = (rng.random((3, 4, 4, 1)) > 0.5).astype(np.float32)
    per_image = [-np.mean(p[i] * np.log(m[i]) + (1 - p[i]) * np.log(1 - m[i])) for i in range(3)]
    w = np.array([1.0, 0.0, 2.0], np.float32)
    want = (per_image[0] + 2 * per_image[2]) / 3.0
    got = prior_consistency_loss(tf.constant(m), tf.constant(p), tf.constant(w)).numpy()
    assert got == pytest.approx(want, rel=1e-5)
    zero = prior_consistency_loss(tf.constant(m), tf.constant(p), tf.zeros([3])).numpy()
    assert zero == 0.0
    ones = prior_consistency_loss(tf.constant(m), tf.constant(p), tf.ones([3])).numpy()
    assert ones == pytest.approx(prior_consistency_loss(tf.constant(m), tf.constant(p)).numpy())


def test_box_prior_returns_its_score_and_the_ellipse_scores_zero(monkeypatch):
    """`return_score`: the chosen mask's `prior_score` in the window GrabCut saw; where every
    candidate is degenerate the ellipse, whose score is 0 (no evidence of the photo)."""
    photo, disc, box = _disc_photo()
    mask, score = bp.box_prior(photo, box, return_score=True)
    assert np.array_equal(mask, bp.box_prior(photo, box))
    window = bp.stretch_low_range(bp.fill_outside_photo(photo, box))
    assert score == pytest.approx(bp.prior_score(window, mask, box)) and score > 0
    monkeypatch.setattr(bp, "is_degenerate", lambda m, b, **kw: True)
    ellipse, zero = bp.box_prior(photo, box, return_score=True)
    assert zero == 0.0 and np.array_equal(ellipse, bp.ellipse_mask(photo.shape[:2], box))
    items = [("p0", photo, box), ("p1", photo, box)]
    priors, scores = bp.box_priors(items, 16, return_scores=True)
    assert priors.shape == (2, 16, 16, 1) and scores.tolist() == [0.0, 0.0]


def test_prior_score_threshold_is_the_collections_quantile():
    from indep_seg.training.experiments.box_seg import _score_stats, prior_score_threshold

    scores = list(np.linspace(0.0, 1.0, 11))
    manifest = _score_stats(scores)
    assert len(manifest["prior_score_percentiles"]) == 101
    assert prior_score_threshold(manifest, 0.5) == pytest.approx(0.5)
    assert prior_score_threshold(manifest, 0.25) == pytest.approx(0.75)
    assert prior_score_threshold(manifest, 1.0) is None  # every prior anchors
    assert prior_score_threshold({}, 0.5) is None  # shards without scores
    # 0.3 of 11 scores: the 70th percentile, 0.7, keeps 0.7, 0.8, 0.9 and 1.0
    assert prior_score_threshold(manifest, 0.3) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="prior_confident_share.*got 0"):
        prior_score_threshold(manifest, 0.0)


def test_dataset_flips_prior_with_its_crop_and_carries_area():
    from indep_seg.training.experiments.box_seg import make_dataset

    rng = np.random.default_rng(0)
    crops = rng.random((6, 8, 8, 3)).astype(np.float32)
    priors = (crops[..., :1] > 0.5).astype(np.float32)  # a function of the crop's pixels
    areas = np.arange(6, dtype=np.float32) / 10
    batch = next(
        iter(make_dataset(crops, crops[::-1].copy(), 6, seed=1, priors=priors, areas=areas))
    )
    img, pri = batch["image"].numpy(), batch["prior"].numpy()
    assert np.array_equal(pri, (img[..., :1] > 0.5).astype(np.float32))
    for i in range(6):  # each element's area is its own crop's
        k = [
            j
            for j in range(6)
            if np.allclose(crops[j], img[i]) or np.allclose(crops[j][:, ::-1], img[i])
        ]
        assert len(k) == 1 and batch["area"].numpy()[i] == pytest.approx(areas[k[0]])
    no_area = next(iter(make_dataset(crops, crops, 2, priors=priors)))
    assert set(no_area) == {"image", "prior", "background"}


def test_gallery_has_titled_columns_and_one_row_per_case(tmp_path):
    from PIL import Image

    from indep_seg.gallery import gallery_image, save_gallery

    photo, disc, _ = _disc_photo()
    g = gallery_image([photo, photo], [disc, ~disc], [disc, disc], ["a", "b"], title="t", cell=64)
    blank = gallery_image([photo, photo], [disc, ~disc], [disc, disc], None, title="t", cell=64)
    assert g.dtype == np.uint8 and g.shape[1] == 4 * (64 + 4) + 4
    header = g[:30]
    assert (header < 128).any()  # titles are drawn
    assert not np.array_equal(g, blank)  # captions are drawn
    path = save_gallery(tmp_path / "g.png", [photo], [disc])
    assert Image.open(path).size[0] == 3 * (128 + 4) + 4
    assert not list(tmp_path.glob(".*tmp*"))


def test_stretch_low_range_by_hand(monkeypatch):
    # half the pixels 100, half 140: 1st / 99th percentiles 100 and 140, range 40 < LOW_RANGE;
    # stretched, 100 -> 0 and 140 -> 255 on every channel
    low = np.full((8, 8, 3), 100, np.uint8)
    low[:, 4:] = 140
    assert bp.window_range(low) == 40
    out = bp.stretch_low_range(low)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 255}
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()
    # half 0, half 255: range 255, kept as it is; a flat window too; threshold 0 turns it off
    full = np.where(low == 140, 255, 0).astype(np.uint8)
    assert bp.window_range(full) == 255 and np.array_equal(bp.stretch_low_range(full), full)
    flat = np.full((8, 8, 3), 30, np.uint8)
    assert np.array_equal(bp.stretch_low_range(flat), flat)
    assert np.array_equal(bp.stretch_low_range(low, threshold=0), low)
    # the default threshold is the module's LOW_RANGE when called (what box_seg's shards record)
    monkeypatch.setattr(bp, "LOW_RANGE", 0)
    assert np.array_equal(bp.stretch_low_range(low), low)


def test_prior_of_a_dark_photo_is_the_photo_s_prior():
    """The disc photo four times darker: its window is stretched back before GrabCut, so the
    prior finds the disc as in the photo itself."""
    photo, disc, box = _disc_photo()
    dark = (photo.astype(np.float32) * 0.25).astype(np.uint8)
    assert bp.window_range(dark) < bp.LOW_RANGE <= bp.window_range(photo)
    assert _iou(bp.box_prior(dark, box), disc) > 0.85
    assert np.array_equal(bp.box_prior(photo, box), bp.box_prior(photo, box, low_range=0))


def _table_photo(h=96, w=112, seed=0):
    """A brown table (a top and two legs) on textured grass: (uint8 photo, bool table, tight
    box, the bulky mask that also holds the grass between the legs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    photo = np.zeros((h, w, 3), np.float32)
    photo[..., 0] = 0.25 + 0.05 * np.sin(xx / 3.0)
    photo[..., 1] = 0.6 + 0.1 * np.cos(yy / 4.0)
    photo[..., 2] = 0.2
    table = np.zeros((h, w), bool)
    table[20:56, 20:92] = True  # the top
    table[56:76, 20:32] = True  # the legs
    table[56:76, 80:92] = True
    photo[table] = (0.55, 0.3, 0.15)
    photo += rng.normal(0, 0.02, photo.shape)
    bulky = table.copy()
    bulky[56:70, 32:80] = True  # most of the grass between the legs
    return (np.clip(photo, 0, 1) * 255).astype(np.uint8), table, (20.0, 20.0, 92.0, 76.0), bulky


def test_outside_likelier_by_hand():
    # outside the box colour A; the mask holds 4 pixels of A and 12 of B: A is likelier outside
    # (log p_out(A) ~ 0 > log(4.5 / 16 ...)), B inside; nothing outside the box is flagged
    a, b = (200, 30, 30), (30, 30, 200)
    img = np.zeros((8, 8, 3), np.uint8)
    img[:] = a
    img[2:6, 2:6] = b
    img[2, 2:6] = a
    mask = bp.box_mask(img.shape, (2, 2, 6, 6))
    out = bp.outside_likelier(img, mask, (2, 2, 6, 6))
    assert out[2, 2:6].all() and out.sum() == 4
    # the log-ratio for A by hand: 48 of 48 outside pixels and 4 of the mask's 16, half a count
    # in each of 8^3 bins: log(48.5 / 304) - log(4.5 / 272) = 2.267
    ratio = np.log(48.5 / (48 + 256)) - np.log(4.5 / (16 + 256))
    assert ratio == pytest.approx(2.267, abs=1e-3)
    assert bp.outside_likelier(img, mask, (2, 2, 6, 6), margin=ratio - 1e-3).sum() == 4
    assert not bp.outside_likelier(img, mask, (2, 2, 6, 6), margin=ratio + 1e-3).any()
    # an empty mask flags nothing
    assert not bp.outside_likelier(img, np.zeros((8, 8), bool), (2, 2, 6, 6)).any()


@pytest.mark.parametrize("scale", [None, 1.0, 2.5])
def test_clean_prior_takes_the_grass_out_from_between_the_legs(scale):
    """At the window's own grid and enlarged (`CLEAN_SCALE` by default): the mask comes back in
    the window's pixels, inside the box."""
    photo, table, box, bulky = _table_photo()
    assert _iou(bulky, table) < 0.85
    cleaned = bp.clean_prior(photo, box, bulky, scale=scale)
    assert cleaned.shape == table.shape and cleaned.dtype == bool
    assert not (cleaned & ~bp.box_mask(photo.shape, box)).any()
    assert _iou(cleaned, table) > 0.9
    assert bp.prior_score(photo, cleaned, box) >= bp.prior_score(photo, bulky, box)
    with pytest.raises(ValueError):
        bp.clean_prior(photo, box, bulky, scale="x")


def test_clean_prior_on_the_photos_detail_is_the_enlarged_window_when_that_is_all_it_holds():
    """`detail` replaces the enlarged window: given the window enlarged as `scale` enlarges it
    (RGB, where enlarging and the colour space commute), the same mask; given a window with
    more pixels than the window's grid, the mask comes back in the window's pixels."""
    import cv2

    photo, table, box, bulky = _table_photo()
    h, w = table.shape
    big = cv2.resize(photo, (w * 3, h * 3), interpolation=cv2.INTER_LINEAR)
    by_scale = bp.clean_prior(photo, box, bulky, colour="rgb", scale=3)
    by_detail = bp.clean_prior(photo, box, bulky, colour="rgb", detail=big, scale=1)
    assert np.array_equal(by_detail, by_scale) and _iou(by_detail, table) > 0.9
    default = bp.clean_prior(photo, box, bulky, detail=big)
    assert default.shape == table.shape and _iou(default, table) > 0.9
    with pytest.raises(ValueError, match="detail"):
        bp.clean_prior(photo, box, bulky, detail=big[..., 0])


def test_box_prior_hands_the_prepared_detail_to_the_cleaning(monkeypatch):
    """`box_prior(detail=...)`: the cleaning GrabCut gets the detail window filled and
    stretched as the window is (`fill_outside_photo`, `stretch_low_range`), at its own size;
    without `detail` it gets none."""
    photo, _, box, bulky = _table_photo()
    monkeypatch.setattr(bp, "grabcut", lambda *a, **kw: bulky)
    seen = []
    real = bp.clean_prior
    monkeypatch.setattr(
        bp, "clean_prior", lambda *a, **kw: seen.append(kw.get("detail")) or real(*a, **kw)
    )
    dark = (photo // 4).astype(np.uint8)  # a low-range photo: the window is stretched
    big = np.repeat(np.repeat(dark, 2, axis=0), 2, axis=1)
    bp.box_prior(dark, box, detail=big)
    bp.box_prior(dark, box)
    f = np.asarray(box, np.float64) * 2
    assert np.array_equal(seen[0], bp.stretch_low_range(bp.fill_outside_photo(big, f)))
    assert seen[0].max() == 255 and big.max() < 128
    assert seen[1] is None


def test_clean_detail_cuts_the_context_window_from_the_photo(monkeypatch):
    """`clean_detail`: the box's `context_crop` at `CLEAN_SCALE` x `PRIOR_RESOLUTION`
    (`photo_window`), the photo's own pixels; None with `CLEAN_PHOTO_DETAIL` or `PRIOR_CLEAN`
    off. `box_priors` and `refine_full_mask` hand it to the prior."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    box = (100.0, 80.0, 260.0, 220.0)
    detail = bp.clean_detail(photo, box)
    side = int(round(bp.PRIOR_RESOLUTION * bp.CLEAN_SCALE))
    assert detail.shape == (side, side, 3) and detail.dtype == np.uint8
    again = bp.context_crop(photo, box, resolution=side)[0]
    assert np.array_equal(detail, again) and np.array_equal(bp.photo_window(photo, box), again)
    seen = []
    monkeypatch.setattr(
        bp,
        "box_prior",
        lambda image, b, *a, detail=None, **kw: (
            seen.append(None if detail is None else detail.shape)
            or (
                (bp.ellipse_mask(image.shape[:2], b), 1.0)
                if kw.get("return_score")
                else bp.ellipse_mask(image.shape[:2], b)
            )
        ),
    )
    bp.box_priors([("p", photo, box)], 32)
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[100:200, 120:240] = 1.0
    bp.refine_full_mask(photo, mask, box)
    assert seen[0] == (side, side, 3) and seen[-1] == (side, side, 3)
    monkeypatch.setattr(bp, "CLEAN_PHOTO_DETAIL", False)
    assert bp.clean_detail(photo, box) is None
    monkeypatch.setattr(bp, "CLEAN_PHOTO_DETAIL", True)
    monkeypatch.setattr(bp, "PRIOR_CLEAN", False)
    assert bp.clean_detail(photo, box) is None


def test_clean_prior_keeps_the_prior_where_cleaning_leaves_rows_of_the_box(monkeypatch):
    """Legs of the grass's own colours: cleaning cuts their rows off the tight box, so
    (`CLEAN_TIGHTNESS_SLACK`) the prior stands; without that check the legless mask would win
    on colour contrast alone."""
    photo, table, box, _ = _table_photo()
    grassy = photo.copy()
    grassy[56:76, 20:32] = photo[56:76, 0:12]
    grassy[56:76, 80:92] = photo[56:76, 100:112]
    assert np.array_equal(bp.clean_prior(grassy, box, table), table)
    monkeypatch.setattr(bp, "CLEAN_TIGHTNESS_SLACK", 1.0)
    legless = bp.clean_prior(grassy, box, table)
    assert not legless[60:76].any() and bp.box_tightness(legless, box) < 0.9
    assert np.array_equal(bp.clean_prior(grassy, box, table, select=False), legless)
    assert np.array_equal(bp.clean_prior(grassy, box, table, slack=0.0), table)


def test_box_prior_cleans_its_choice_unless_told_not_to(monkeypatch):
    """`box_prior` hands its chosen candidate to `clean_prior` (`PRIOR_CLEAN`), and returns the
    cleaned mask's score; `clean=False` or `PRIOR_CLEAN = False` returns the candidate."""
    photo, table, box, bulky = _table_photo()
    monkeypatch.setattr(bp, "grabcut", lambda *a, **kw: bulky)
    mask, score = bp.box_prior(photo, box, return_score=True)
    window = bp.stretch_low_range(bp.fill_outside_photo(photo, box))
    assert np.array_equal(mask, bp.clean_prior(window, box, bulky)) and _iou(mask, table) > 0.9
    assert score == pytest.approx(bp.prior_score(window, mask, box))
    assert np.array_equal(bp.box_prior(photo, box, clean=False), bulky)
    monkeypatch.setattr(bp, "PRIOR_CLEAN", False)
    assert np.array_equal(bp.box_prior(photo, box), bulky)

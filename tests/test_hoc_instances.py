"""indep_seg.hoc.instances: polarity / stain / scale from the image, LoG centres, watershed label
maps,
AP at IoU 0.5; training data from several images; counting many images (issue 19)."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from indep_seg.hoc import counting
from indep_seg.hoc import instances as inst


def disks(h, w, centres, r, fg=0.8, bg=0.1, noise=0.0, seed=0):
    """Gray image of disks of radius r, and its instance label map."""
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), bg, np.float32)
    lab = np.zeros((h, w), np.int32)
    for i, (x, y) in enumerate(centres):
        m = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        img[m] = fg
        lab[m] = i + 1
    img = ndimage.gaussian_filter(img, 1.0)  # a microscope's image is band-limited (soft rims)
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 1), lab


def grid_centres(h, w, step, margin):
    return [
        (x, y)
        for y in range(margin, h - margin + 1, step)
        for x in range(margin, w - margin + 1, step)
    ]


CEN = grid_centres(160, 200, 30, 15)  # 6 x 5 = 30 disks, including ones touching the border margin


def rgb(g):
    return np.repeat(g[..., None], 3, -1)


def test_polarity_and_stain_from_the_histogram():
    g, _ = disks(160, 200, CEN, 7)
    bright = inst.nucleus_signal(rgb(g))
    dark = inst.nucleus_signal(rgb(1.0 - g))
    assert bright.polarity == "bright" and dark.polarity == "dark"
    assert not bright.colour
    # both give the same signal: nuclei ~1, background ~0
    np.testing.assert_allclose(bright.signal, dark.signal, atol=0.02)
    assert bright.signal[15, 15] > 0.9 and bright.signal[0, 30] < 0.05
    # a purple stain on a pink-white background (H&E-like): the stain direction is found
    bg = np.array([0.95, 0.85, 0.92], np.float32)
    nuc = np.array([0.35, 0.2, 0.6], np.float32)
    m = g > 0.5
    col = np.where(m[..., None], nuc, bg).astype(np.float32)
    s = inst.nucleus_signal(col)
    assert s.polarity == "dark" and s.colour
    assert np.dot(s.stain, (nuc - bg) / np.linalg.norm(nuc - bg)) > 0.99
    assert s.signal[m].mean() > 0.9 and s.signal[~m].mean() < 0.05


def test_constant_image_is_a_clear_kind_error():
    with pytest.raises(inst.ImageKindError, match="constant"):
        inst.nucleus_signal(np.full((64, 64, 3), 0.5, np.float32))


@pytest.mark.parametrize("r", [4, 7, 11])
def test_scale_follows_the_nucleus_size(r):
    h, w = 12 * r * 5, 12 * r * 6
    g, _ = disks(h, w, grid_centres(h, w, 4 * r, 2 * r), r, noise=0.03)
    sc = inst.estimate_scale(inst.nucleus_signal(rgb(g)).signal)
    assert sc["radius"] == pytest.approx(r, rel=0.25)


def test_log_centres_count_touching_and_border_disks():
    g, lab = disks(160, 200, CEN, 7, noise=0.03)
    ns = inst.nucleus_signal(rgb(g))
    sc = inst.estimate_scale(ns.signal)
    c = inst.log_centres(ns.signal, sc["sigma"])
    assert len(c) == len(CEN)
    # disks cut by the image edge count like the middle ones (reflect padding)
    h2, _ = disks(160, 200, [(x - 15, y) for x, y in CEN], 7, noise=0.03)
    c2 = inst.log_centres(inst.nucleus_signal(rgb(h2)).signal, sc["sigma"])
    assert len(c2) == len(CEN)
    # no false centres on the empty border
    g3, _ = disks(160, 200, [(100, 80)], 7, noise=0.03)
    c3 = inst.log_centres(inst.nucleus_signal(rgb(g3)).signal, sc["sigma"])
    assert len(c3) == 1


def test_watershed_instances_split_touching_disks_and_score_perfectly():
    cen = [(30, 30), (43, 30), (80, 60), (80, 73), (120, 30)]  # two touching pairs
    g, truth = disks(100, 150, cen, 7)
    ns = inst.nucleus_signal(rgb(g))
    sc = inst.estimate_scale(ns.signal)
    seeds = np.array([[x, y, 1.0] for x, y in cen])
    labels = inst.watershed_instances(ns.signal, seeds, sc["sigma"])
    m = inst.match_instances(labels, truth)
    assert m["tp"] == 5 and m["ap"] == 1.0 and m["mean_iou"] > 0.8
    # the baseline also runs and finds the isolated disk
    ows, _ = inst.otsu_watershed(ns.signal)
    assert inst.match_instances(ows, truth)["tp"] >= 1


def test_seeded_watershed_follows_the_ridge():
    yy, xx = np.mgrid[:40, :60]
    s = np.exp(-((xx - 15) ** 2 + (yy - 20) ** 2) / 50) + np.exp(
        -((xx - 40) ** 2 + (yy - 20) ** 2) / 50
    )
    m = np.zeros(s.shape, np.int32)
    m[20, 15], m[20, 40] = 1, 2
    ws = inst.seeded_watershed(-s, m, np.ones(s.shape, bool))
    assert (ws[:, :27] == 1).all() and (ws[:, 29:] == 2).all()


def test_match_instances_counts_fp_fn():
    a = np.zeros((20, 20), np.int32)
    a[2:8, 2:8], a[10:16, 10:16] = 1, 2
    b = np.zeros_like(a)
    b[2:8, 2:8], b[0:2, 15:20] = 7, 9  # one match, one false positive, one miss
    m = inst.match_instances(b, a)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    assert m["ap"] == pytest.approx(1 / 3) and m["mean_iou"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        inst.match_instances(a[:5], a)


def test_label_png_is_16_bit(tmp_path):
    lab = np.zeros((10, 10), np.int32)
    lab[2:4, 2:4] = 300
    inst.save_label_png(tmp_path / "l.png", lab)
    back = np.asarray(Image.open(tmp_path / "l.png"))
    assert back.dtype == np.uint16 and back[3, 3] == 300
    lab[0, 0] = 70000
    with pytest.raises(ValueError, match="16-bit"):
        inst.save_label_png(tmp_path / "m.png", lab)


def oracle():
    from test_hoc_counting import oracle_counter

    return oracle_counter()


def test_count_instances_normalised_scale_and_polarity():
    """A normalising model counts dark-on-light and bright-on-dark disks of any size alike."""
    meta = {
        "normalise": True,
        "window_per_sigma": 4.25,
        "resolution": 32,
        "sigma": 2.5,
        "grayscale": True,
    }
    for r, dark in ((5, False), (9, True)):
        h, w = 14 * r * 4, 14 * r * 5
        cen = grid_centres(h, w, 5 * r, 3 * r)
        g, truth = disks(h, w, cen, r, noise=0.02)
        img = rgb(1 - g if dark else g)
        res = counting.count_instances(oracle(), meta, img, centres_from="log")
        assert res["count"] == len(cen)
        assert res["polarity"] == ("dark" if dark else "bright")
        assert res["window"] == pytest.approx(4.25 * r / math.sqrt(2), rel=0.3)
        assert inst.match_instances(res["labels"], truth)["ap"] > 0.9


def test_count_instances_bad_input():
    meta = {"normalise": True, "window_per_sigma": 4.25, "resolution": 32, "sigma": 2.5}
    res = counting.count_instances(oracle(), meta, np.full((64, 64, 3), 0.3, np.float32))
    assert res["count"] == 0 and "constant" in res["note"] and not res["labels"].any()
    with pytest.raises(ValueError, match="too small"):
        counting.count_instances(oracle(), meta, np.zeros((8, 64, 3), np.float32))
    big = np.lib.stride_tricks.as_strided(np.zeros(3, np.float32), (9000, 9000, 3), (0, 0, 4))
    with pytest.raises(ValueError, match="megapixels"):
        counting.count_instances(oracle(), meta, big)


def test_predict_heatmap_has_no_border_artefact():
    """A counter with a bias answers a flat image with a flat heatmap, edges included (reflect
    padding)."""
    import keras

    inp = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, 5, padding="same")
    model = keras.Model(inp, conv(inp))
    conv.kernel.assign(np.full((5, 5, 3, 1), 0.1, np.float32))
    heat = counting.predict_heatmap(model, np.full((37, 50, 3), 0.5, np.float32))
    assert heat.shape == (37, 50)
    np.testing.assert_allclose(heat, heat[18, 25], rtol=1e-5)


def test_data_paths_folder_and_list(tmp_path):
    from indep_seg.training.experiments.hoc import data_paths

    for n in ("a.png", "b.tif", "a_instances.png", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.split("/")[-1] for p in data_paths(str(tmp_path))] == ["a.png", "b.tif"]
    assert data_paths("x.png, y.png") == ["x.png", "y.png"]
    with pytest.raises(ValueError, match="no image"):
        data_paths(",")


def test_count_command_many_images_one_line_each(tmp_path, capsys):
    from indep_seg.cli import main

    counting.save_counter(
        tmp_path / "run" / "counter",
        oracle(),
        {
            "window": 32,
            "resolution": 32,
            "sigma": 2.5,
            "experiment": "hoc",
            "normalise": True,
            "window_per_sigma": 4.25,
            "grayscale": True,
            "images": [{"polarity": "bright", "colour": False}],
        },
    )
    paths = []
    for i, r in enumerate((5, 7)):
        g, _ = disks(200, 240, grid_centres(200, 240, 5 * r, 3 * r), r, noise=0.02)
        p = tmp_path / f"img{i}.png"
        Image.fromarray((g * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    g16 = np.full((64, 64), 1000, np.uint16)
    Image.fromarray(g16).save(tmp_path / "flat16.tif")
    paths.append(str(tmp_path / "flat16.tif"))
    paths.append(str(tmp_path / "missing.png"))
    out_dir = tmp_path / "out"
    assert (
        main(
            [
                "count",
                "--model",
                str(tmp_path / "run"),
                *paths,
                "--out-dir",
                str(out_dir),
                "--centres",
                "log",
            ]
        )
        == 2
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["image"] for x in lines] == paths
    assert lines[0]["count"] == len(grid_centres(200, 240, 25, 15))
    assert lines[1]["count"] == len(grid_centres(200, 240, 35, 21))
    assert lines[2]["count"] == 0 and "constant" in lines[2]["note"]
    assert "error" in lines[3] and "missing.png" in lines[3]["error"]
    lab = np.asarray(Image.open(out_dir / "img0_labels.png"))
    assert lab.dtype == np.uint16 and len(np.unique(lab)) - 1 == lines[0]["instances"]
    # a dark-on-light image is flagged as another kind than the bright training images
    p = tmp_path / "dark.png"
    g, _ = disks(200, 240, grid_centres(200, 240, 25, 15), 5, noise=0.02)
    Image.fromarray(((1 - g) * 255).astype(np.uint8)).save(p)
    assert (
        main(
            [
                "count",
                "--model",
                str(tmp_path / "run"),
                str(p),
                "--overlay",
                str(tmp_path / "o.png"),
                "--centres",
                "log",
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    one = json.loads(cap.out)
    assert one["kind_mismatch"] and "not like the images" in cap.err
    assert "centres" in one and (tmp_path / "dark_labels.png").is_file()


@pytest.mark.slow
def test_train_on_a_folder_of_images_of_one_kind(tmp_path):
    """`--data FOLDER`: every image normalised and rescaled by its own LoG scale; the counter knows
    it."""
    from indep_seg.training.context import TrainContext
    from indep_seg.training.registry import get_experiment
    from tests._hoc_helpers import tiny_hoc_config

    data = tmp_path / "data"
    data.mkdir()
    for i, r in enumerate((5, 9)):
        h, w = 14 * r * 3, 14 * r * 3
        g, lab = disks(h, w, grid_centres(h, w, 4 * r, 2 * r), r, noise=0.02, seed=i)
        img = 1 - g if i == 1 else g  # one dark-on-light: normalised to bright-on-dark
        Image.fromarray((img * 255).astype(np.uint8)).save(data / f"img{i}.png")
        inst.save_label_png(data / f"img{i}_instances.png", lab)  # skipped as a label map
    cfg = tiny_hoc_config()
    ctx = TrainContext(model_dir=tmp_path / "run", data=str(data), steps=2)
    get_experiment("hoc").train_fn(cfg, ctx)
    meta = json.loads((tmp_path / "run" / "counter" / "counter.json").read_text())
    assert meta["normalise"] and [i["path"].split("/")[-1] for i in meta["images"]] == [
        "img0.png",
        "img1.png",
    ]
    assert [i["polarity"] for i in meta["images"]] == ["bright", "dark"]
    w0, w1 = (i["window"] for i in meta["images"])
    assert w1 / w0 == pytest.approx(9 / 5, rel=0.3)


def test_an_undertrained_counter_falls_back_to_the_log_centres():
    g, _ = disks(200, 240, grid_centres(200, 240, 25, 15), 5, noise=0.02)
    meta = {"normalise": True, "window_per_sigma": 4.25, "resolution": 32, "sigma": 2.5, "steps": 1}
    res = counting.count_instances(oracle(), meta, rgb(g))
    assert res["centres_from"] == "log" and res["count"] == res["count_log"] == len(
        grid_centres(200, 240, 25, 15)
    )
    meta["steps"] = counting.MIN_COUNTER_STEPS
    res = counting.count_instances(disk_counter(), meta, rgb(g))
    assert res["count_from"] == "mean" and res["fallback"] is None
    assert res["count"] == counting.count_by_mean(res["count_learned"], res["count_log"])
    assert res["centres_from"] == "log"  # the label map is the LoG centres'


def test_a_stained_image_is_answered_by_the_log_alone():
    """Dark purple discs on a pink field (`describe_kind`: stained): the automatic choice answers
    with the LoG count and says why, even from a trained counter (`LOG_ONLY_KINDS`)."""
    cen = grid_centres(200, 240, 25, 15)
    g, _ = disks(200, 240, cen, 5, noise=0.02)
    pink, purple = np.array([0.95, 0.8, 0.88]), np.array([0.45, 0.25, 0.6])
    img = (pink + g[..., None] * (purple - pink)).astype(np.float32)
    meta = {"normalise": True, "window_per_sigma": 4.25, "resolution": 32, "sigma": 2.5}
    meta["steps"] = counting.MIN_COUNTER_STEPS
    res = counting.count_instances(disk_counter(), meta, img)
    assert res["kind"] == "stained" and res["count_from"] == res["centres_from"] == "log"
    assert res["count"] == res["count_log"] and "stained" in res["fallback"]
    assert abs(res["count"] - len(cen)) <= 2
    assert res["illumination_min"] == 1.0
    # the same slide under a light that falls to 0.3 across it: counted alike, and said
    shaded = (img * np.linspace(1.0, 0.3, 240, dtype=np.float32)[None, :, None]).astype(np.float32)
    res2 = counting.count_instances(disk_counter(), meta, shaded)
    assert res2["kind"] == "stained" and abs(res2["count"] - len(cen)) <= 2
    assert 0.2 < res2["illumination_min"] < 0.45


def test_the_automatic_count_is_the_mean_of_the_two_rounded_half_up():
    assert counting.count_by_mean(100, 120) == 110
    assert counting.count_by_mean(135, 120) == 128  # 127.5
    assert counting.count_by_mean(7, 7) == 7 and counting.count_by_mean(0, 1) == 1


def disk_counter(gain=1.0):
    """`oracle` scaled so that a disk of radius 5 px (`disks`), seen through `count_instances`'
    normalised window, holds a heatmap mass of `gain` instances (the oracle's own mass for such a
    disk is 553 / 63 = 8.8: measured on the grid of the tests below)."""
    model = oracle()
    model.layers[-1].kernel.assign(np.full((1, 1, 3, 1), gain * 63 / 553 / 3, np.float32))
    return model


def test_a_learned_count_far_from_the_log_count_falls_back_to_the_log_centres():
    """A counter whose heatmap holds 5x each instance's mass: uncalibrated it counts 5x the disks
    (the LoG count is exact), calibrated its factor 5 is outside the limits (1/3-3); either way the
    automatic choice answers with the LoG centres and says why; asked for, the learned count
    stays the answer."""
    cen = grid_centres(200, 240, 25, 15)
    g, _ = disks(200, 240, cen, 5, noise=0.02)
    meta = {"normalise": True, "window_per_sigma": 4.25, "resolution": 32, "sigma": 2.5}
    meta["steps"] = counting.MIN_COUNTER_STEPS
    five = disk_counter(5.0)
    res = counting.count_instances(disk_counter(), meta, rgb(g))
    assert res["fallback"] is None and res["count_from"] == "mean"
    assert abs(res["count_learned"] - len(cen)) <= 2  # calibrated by the image's own single disks
    assert abs(res["count"] - len(cen)) <= 1
    res = counting.count_instances(five, meta, rgb(g), calibrate=False)
    assert res["count_learned"] > counting.MAX_COUNT_DISAGREEMENT * len(cen)
    assert res["centres_from"] == "log" and res["count"] == res["count_log"] == len(cen)
    assert "differ by more than 2x" in res["fallback"]
    res = counting.count_instances(five, meta, rgb(g))
    assert res["calibration"] is None and res["centres_from"] == "log"
    assert res["count"] == len(cen) and "refused" in res["fallback"]
    res = counting.count_instances(five, meta, rgb(g), centres_from="learned")
    assert res["centres_from"] == res["count_from"] == "learned"
    assert res["count"] == res["count_learned"]
    assert res["fallback"] is None


def bright_field(seed=0, size=448, cells=14, r=7, granules=False, cluster=1):
    """A synthetic bright-field image (transmitted light, so transmittances multiply): a light
    field; large overlapping cells of cytoplasm with fine grain and uneven thickness, each holding
    one dark nucleus with a light halo (and with `granules`, a row of `cluster` dark granules of
    radius 3, 8 px apart, on the cell's other side). Returns ``(gray image, object centres)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    trans = np.full((size, size), 0.92, np.float32)
    centres = []
    for _ in range(cells):
        cx, cy = rng.uniform(50, size - 50, 2)
        a, b = rng.uniform(32, 48, 2)
        th = rng.uniform(0, math.pi)
        u = (xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)
        v = -(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)
        cell = (u / a) ** 2 + (v / b) ** 2 <= 1
        fine = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5)  # grain, specks
        shade = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 2.0 * r)  # thickness
        grain = 0.08 * fine / fine.std() + 0.06 * shade / shade.std()
        trans[cell] *= np.clip(rng.uniform(0.6, 0.8) + grain[cell], 0.3, 1.0)  # cytoplasm
        nx, ny = cx + rng.uniform(-0.4, 0.4) * a, cy + rng.uniform(-0.4, 0.4) * b
        d2 = (xx - nx) ** 2 + (yy - ny) ** 2
        trans[d2 <= r * r] *= 0.45  # the nucleus absorbs more
        halo = (d2 > r * r) & (d2 <= (r + 2) ** 2)
        trans[halo] = np.minimum(trans[halo] * 1.15, 1.0)  # phase halo
        centres.append((nx, ny))
        if granules:  # a small dark granule (radius 3) on the cell's other side
            gx, gy = 2 * cx - nx, 2 * cy - ny
            if math.hypot(gx - nx, gy - ny) > 3 * r:
                for k in range(cluster):
                    kx, ky = gx + 8 * k * math.cos(th), gy + 8 * k * math.sin(th)
                    trans[(xx - kx) ** 2 + (yy - ky) ** 2 <= 9] *= 0.45
                    centres.append((kx, ky))
    g = ndimage.gaussian_filter(trans, 1.0) + rng.normal(0, 0.01, (size, size))
    return np.clip(g, 0, 1).astype(np.float32), centres


def distinct_centres(centres, r):
    """Nuclei closer than a radius to an earlier one are one (two cells' nuclei may overlap)."""
    out = []
    for c in centres:
        if all(math.hypot(c[0] - o[0], c[1] - o[1]) > r for o in out):
            out.append(c)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bright_field_counts_nuclei_not_cytoplasm_texture(seed):
    g, cen = bright_field(seed)
    n = len(distinct_centres(cen, 7))
    img = rgb(g)
    ns = inst.nucleus_signal(img)
    assert ns.polarity == "dark" and not ns.colour
    assert inst.describe_kind(ns.meta()) == "bright-field"
    sc = inst.estimate_scale(ns.signal)
    # the plain nucleus signal counts the cytoplasm's grain and the cells' corners (issue 19)
    plain = inst.log_centres(ns.signal, sc["sigma"])
    assert len(plain) > 1.5 * n
    det, split = inst.detection_signal(img, ns, sc["sigma"])
    assert split
    c = inst.log_centres(det, sc["sigma"], texture_split=split)
    assert abs(len(c) - n) <= max(1, round(0.15 * n))
    # and the centres are on the nuclei
    hits = sum(any(math.hypot(x - nx, y - ny) <= 7 for nx, ny in cen) for x, y, _ in c)
    assert hits >= 0.85 * len(c)


def test_bright_field_nuclei_on_an_empty_field_are_not_split():
    """Dark disks on a light field with no cytoplasm: no plateau, so no texture split, every disk
    counts (a split of one population would halve the count)."""
    cen = grid_centres(200, 240, 35, 18)
    g, _ = disks(200, 240, cen, 7, fg=0.35, bg=0.9, noise=0.02)
    img = rgb(g)
    ns = inst.nucleus_signal(img)
    assert ns.polarity == "dark"
    sc = inst.estimate_scale(ns.signal)
    det, split = inst.detection_signal(img, ns, sc["sigma"])
    assert not split
    assert len(inst.log_centres(det, sc["sigma"], texture_split=split)) == len(cen)


def test_optical_density_gives_a_nucleus_the_same_excess_on_thin_and_thick_cytoplasm():
    yy, xx = np.mgrid[:120, :200]
    trans = np.full((120, 200), 0.9, np.float32)
    trans[20:100, 10:95] *= 0.8  # thin cytoplasm
    trans[20:100, 105:190] *= 0.45  # thick (two overlapping cells)
    for x in (52, 147):
        trans[(xx - x) ** 2 + (yy - 60) ** 2 <= 64] *= 0.5
    g = ndimage.gaussian_filter(trans, 1.0)
    ns = inst.nucleus_signal(rgb(g))
    od = inst.optical_density(rgb(g), ns.background)
    top = inst.remove_plateau(od, 8 / math.sqrt(2))
    a, b = top[60, 52], top[60, 147]
    assert a > 0.1 and b == pytest.approx(a, rel=0.1)
    assert top[60, 30] < 0.1 * a and top[60, 170] < 0.1 * a  # the cytoplasm's level is gone
    # in intensity the thick side's nucleus has about half the contrast
    assert (g[60, 30] - g[60, 52]) > 1.6 * (g[60, 170] - g[60, 147])


def test_split_texture_separates_texture_from_nuclei_of_any_proportion():
    """Many weak texture maxima and fewer strong nuclei (log-normal responses): the nuclei are kept,
    the texture dropped, whether texture outnumbers the nuclei 3:1 or 10:1."""
    rng = np.random.default_rng(0)
    for n_tex, n_nuc in ((180, 60), (300, 30)):
        nuclei = np.exp(rng.normal(math.log(0.3), 0.25, n_nuc))
        texture = np.exp(rng.normal(math.log(0.06), 0.4, n_tex))
        keep = inst.split_texture(np.concatenate([texture, nuclei]))
        assert keep[n_tex:].mean() > 0.9 and keep[:n_tex].mean() < 0.05
    assert inst.split_texture(np.array([0.1, 0.5, 0.2])).all()  # too few to split


def test_bright_field_counts_small_granules_below_the_nucleus_scale():
    """Granules of half a nucleus' radius, as dark as the nuclei, count too (the pass over the
    scales just below the nucleus range), and the cytoplasm's fine grain does not."""
    g, cen = bright_field(3, granules=True)
    g0, cen0 = bright_field(3)
    n, n0 = len(distinct_centres(cen, 7)), len(distinct_centres(cen0, 7))
    assert n >= n0 + 5
    img = rgb(g)
    ns = inst.nucleus_signal(img)
    sc = inst.estimate_scale(ns.signal)
    det, split = inst.detection_signal(img, ns, sc["sigma"])
    c = inst.log_centres(det, sc["sigma"], texture_split=split)
    assert abs(len(c) - n) <= max(1, round(0.15 * n))
    hits = sum(any(math.hypot(x - nx, y - ny) <= 7 for nx, ny in cen) for x, y, _ in c)
    assert hits >= 0.85 * len(c)


def disc_truth(shape, centres, r):
    """Annotations of `bright_field`'s nuclei: a disc of radius `r` each (distinct centres)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for i, (x, y) in enumerate(distinct_centres(centres, r)):
        truth[((xx - x) ** 2 + (yy - y) ** 2 <= r * r) & (truth == 0)] = i + 1
    return truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bright_field_label_maps_end_at_the_nucleus_not_the_cell(seed):
    """Each cell's dark nucleus (radius 7, 154 px) lies in a plateau of grainy cytoplasm that is
    foreground too. Cut at half of the basin's 95th percentile, a basin is a cell (the percentile
    is the cytoplasm's level) and the label maps are 2-2.5x a nucleus (AP50 0.22-0.29, measured);
    cut at half of the nucleus's own peak (`own_peak`) they keep to the nucleus."""
    g, cen = bright_field(seed)
    img = rgb(g)
    truth = disc_truth(g.shape, cen, 7)
    ns = inst.nucleus_signal(img)
    sigma = inst.estimate_scale(ns.signal)["sigma"]
    det, split, c = inst.classical_centres(img, ns, sigma)
    assert split  # the plateau is there: the bright-field rule applies
    area = {}
    for own in (False, True):
        lab = inst.watershed_instances(det, c, sigma, own_peak=own)
        a = np.bincount(lab.ravel())[1:]
        area[own] = float(np.median(a[a > 0])) / (math.pi * 49)
    assert area[False] > 1.8
    assert 0.6 < area[True] < 1.2
    own = inst.match_instances(inst.watershed_instances(det, c, sigma, own_peak=True), truth)
    assert own["ap"] >= 0.75


def test_count_instances_label_maps_on_bright_field_end_at_the_nucleus():
    """`count_instances` (the Python API of `indep-seg count`) applies the same rule."""
    g, cen = bright_field(0)
    meta = {"normalise": True, "window_per_sigma": 4.25, "resolution": 32, "sigma": 2.5}
    res = counting.count_instances(disk_counter(), meta, rgb(g), centres_from="log")
    a = np.bincount(res["labels"].ravel())[1:]
    assert res["kind"] == "bright-field"
    assert 0.6 < float(np.median(a[a > 0])) / (math.pi * 49) < 1.2


def test_small_objects_count_beside_a_granule_but_not_inside_a_nucleus():
    """The small-object pass (bright field) keeps a compact object that lies outside every accepted
    centre's own disc: a granule 8 px from an accepted granule (own radius 5) counts, where a
    nucleus radius (10 px) for every centre had dropped it; a small maximum inside the nucleus's
    disc (own radius 10) does not."""
    yy, xx = np.mgrid[:120, :200]
    s = np.zeros((120, 200), np.float32)
    s[(xx - 50) ** 2 + (yy - 60) ** 2 <= 100] = 0.6  # a nucleus, radius 10
    s[(xx - 53) ** 2 + (yy - 57) ** 2 <= 4] = 1.0  # a dark spot inside it
    for x in (140, 148):  # two granules of radius 3.5, 8 px apart
        s[(xx - x) ** 2 + (yy - 60) ** 2 <= 12.25] = 1.0
    s = ndimage.gaussian_filter(s, 1.0)
    sigma = 10 / math.sqrt(2)
    xs, ys, vals = np.array([50, 140]), np.array([60, 60]), np.array([0.2, 0.2])
    ax, ay, _ = inst._add_small_objects(s, sigma, 1.25, 5, 0, xs, ys, vals, [10.0, 5.0])
    added = sorted(zip(ax[2:].tolist(), ay[2:].tolist()))
    assert len(added) == 1 and abs(added[0][0] - 148) <= 1 and abs(added[0][1] - 60) <= 1
    ax, _, _ = inst._add_small_objects(s, sigma, 1.25, 5, 0, xs, ys, vals, [10.0, 10.0])
    assert len(ax) == 2  # a nucleus radius for the granule: its neighbour is dropped


def ellipse_mask(h, w, x, y, a, b):
    yy, xx = np.mgrid[:h, :w]
    return ((xx - x) / a) ** 2 + ((yy - y) / b) ** 2 <= 1.0


def test_merge_without_neck_joins_one_bar_and_keeps_touching_disks():
    # a bar (no waist), centres 20 px apart (within reach 3 sigma = 24): one object, the
    # stronger stays
    bar = ellipse_mask(60, 80, 40, 30, 16, 6)
    keep = inst.merge_without_neck([[30, 30], [50, 30]], [0.5, 0.9], bar, sigma=8.0)
    assert keep.tolist() == [False, True]
    # two disks of radius 8 whose centres are 14 px apart meet at a neck (half-width 4 px
    # at the waist against 8 at the centres, hand-computed): both stay
    pair = ellipse_mask(60, 80, 30, 30, 8, 8) | ellipse_mask(60, 80, 44, 30, 8, 8)
    keep = inst.merge_without_neck([[30, 30], [44, 30]], [0.9, 0.5], pair, sigma=8.0)
    assert keep.all()
    # apart in the mask, beyond reach, or a centre off the mask: never merged
    apart = ellipse_mask(60, 80, 20, 30, 6, 6) | ellipse_mask(60, 80, 36, 30, 6, 6)
    assert inst.merge_without_neck([[20, 30], [36, 30]], [1, 1], apart, sigma=8.0).all()
    assert inst.merge_without_neck([[30, 30], [50, 30]], [1, 2], bar, 8.0, reach=2.0).all()
    assert inst.merge_without_neck([[5, 5], [30, 30]], [1, 2], bar, sigma=8.0).all()
    assert inst.merge_without_neck([[30, 30]], [1], bar, sigma=8.0).tolist() == [True]


def test_local_half_maximum_keeps_a_dim_nucleus_beside_a_bright_one():
    h, w = 80, 120
    bright = ellipse_mask(h, w, 50, 40, 9, 9)
    dim = ellipse_mask(h, w, 68, 40, 9, 9) & ~bright
    g = np.full((h, w), 0.05, np.float32)
    g[bright], g[dim] = 0.9, 0.3
    g = ndimage.gaussian_filter(g, 1.0)
    g = g + np.random.default_rng(0).normal(0, 0.01, g.shape).astype(np.float32)
    m = inst.local_half_maximum(g, sigma=9 / math.sqrt(2.0))
    # the dim nucleus keeps most of its extent (a global half of the bright peak, 0.475,
    # would keep none of it), the background none
    assert m[dim].mean() > 0.5 and m[bright].mean() > 0.8
    # (a few noise specks: the background mode is read from a 256-bin histogram)
    assert m[~ndimage.binary_dilation(bright | dim, iterations=3)].mean() < 0.05


def test_log_centres_count_a_dim_nucleus_touching_a_bright_one_and_a_bar_once():
    h, w = 90, 200
    cen = [(40, 45), (57, 45)]
    g = np.full((h, w), 0.05, np.float32)
    for (x, y), level in zip(cen, (0.9, 0.3)):
        g[ellipse_mask(h, w, x, y, 8, 8)] = level
    g[ellipse_mask(h, w, 140, 45, 16, 7)] = 0.6  # one elongated nucleus
    g = ndimage.gaussian_filter(g, 1.0)
    g = g + np.random.default_rng(1).normal(0, 0.01, g.shape).astype(np.float32)
    c = inst.log_centres(g, sigma=8 / math.sqrt(2.0))
    near = lambda x, y: int((np.hypot(c[:, 0] - x, c[:, 1] - y) < 5).sum())  # noqa: E731
    assert near(40, 45) == 1 and near(57, 45) == 1
    assert int((np.abs(c[:, 0] - 140) < 20).sum()) == 1
    assert len(c) == 3


def test_split_by_area_puts_a_centre_in_a_lobe_without_one():
    h, w = 120, 240
    singles = [(20 + 30 * i, 20) for i in range(7)]  # 7 one-centre objects: A = pi 8^2 = 201
    mask = np.zeros((h, w), bool)
    for x, y in singles:
        mask |= ellipse_mask(h, w, x, y, 8, 8)
    # two elongated nuclei side by side (6 x 12 each, 12 px apart): one object of 2.2 A, one
    # centre on the left one -> a centre on the right one (the deepest point a radius away)
    mask |= ellipse_mask(h, w, 34, 70, 6, 12) | ellipse_mask(h, w, 46, 70, 6, 12)
    # one elongated nucleus of 1.3 A, a round object of 4 A (no lobe), an object without a centre
    mask |= ellipse_mask(h, w, 100, 70, 14, 6) | ellipse_mask(h, w, 160, 70, 16, 16)
    mask |= ellipse_mask(h, w, 215, 70, 8, 8) | ellipse_mask(h, w, 227, 70, 8, 8)
    xy = singles + [(34, 70), (100, 70), (160, 70)]
    add = inst.split_by_area(xy, mask, sigma=8 / math.sqrt(2.0))
    assert add.shape == (1, 2)
    assert abs(add[0, 0] - 46) <= 3 and abs(add[0, 1] - 70) <= 3
    # the same single area given, and the scale irrelevant then
    assert np.allclose(inst.split_by_area(xy, mask, 3.0, single_area=math.pi * 64), add)
    assert inst.split_by_area(np.zeros((0, 2)), mask, 5.0).shape == (0, 2)
    # the guard: 1 extra centre for 10 given is allowed at max_added 0.1, refused below it
    a = math.pi * 64
    assert inst.split_by_area(xy, mask, 3.0, single_area=a, max_added=0.1).shape == (1, 2)
    assert inst.split_by_area(xy, mask, 3.0, single_area=a, max_added=0.09).shape == (0, 2)
    # a ragged region of ~36 A holding one centre: far more extra centres than half the given
    big = mask.copy()
    big[90:120, 0:240] = True
    assert inst.split_by_area(xy + [(120, 105)], big, 3.0, single_area=math.pi * 64).shape == (0, 2)
    with pytest.raises(ValueError, match="single_area"):
        inst.split_by_area(xy, mask, 5.0, single_area=0.0)


def test_log_centres_area_split_counts_elongated_nuclei_side_by_side():
    h, w = 200, 260
    g = np.full((h, w), 0.05, np.float32)
    truth = [(30, 30), (80, 30), (130, 30), (180, 30), (230, 30), (30, 170), (80, 170)]
    for x, y in truth:
        g[ellipse_mask(h, w, x, y, 6, 11)] = 0.7
    for x, y in [(40, 100), (120, 100), (200, 100), (160, 170)]:  # pairs without a dip
        for dx, level in ((-6, 0.7), (6, 0.6)):
            g[ellipse_mask(h, w, x + dx, y, 6, 12)] = level
            truth.append((x + dx, y))
    g = ndimage.gaussian_filter(g, 1.5)
    g = g + np.random.default_rng(0).normal(0, 0.01, g.shape).astype(np.float32)
    sigma = inst.estimate_scale(g)["sigma"]
    assert len(inst.log_centres(g, sigma)) == 11  # each pair is one LoG blob
    c = inst.log_centres(g, sigma, area_split=True)
    assert len(c) == len(truth)
    assert all(min(math.hypot(x - tx, y - ty) for tx, ty in truth) <= 4 for x, y, _ in c)
    # separate disks, some cut by the image edge, gain nothing
    d, _ = disks(160, 200, [(x - 15, y) for x, y in CEN], 7, noise=0.03)
    s = inst.nucleus_signal(rgb(d)).signal
    assert len(inst.log_centres(s, inst.estimate_scale(s)["sigma"], area_split=True)) == len(CEN)


def test_watershed_markers_keep_a_dim_nucleus_on_a_bright_ones_slope():
    # two touching nuclei without a dip (a bright one beside a dimmer one on its slope): a
    # point marker on the dim one is flooded by the bright one first; a marker of a nucleus
    # radius gives each its own half
    h, w = 60, 100
    left, right = ellipse_mask(h, w, 44, 30, 6, 12), ellipse_mask(h, w, 56, 30, 6, 12)
    g = np.full((h, w), 0.05, np.float32)
    xx = np.mgrid[:h, :w][1]
    g[right] = (0.7 - 0.02 * (xx - 50))[right]  # falling away from the bright one: no dip
    g[left] = 0.8
    g = ndimage.gaussian_filter(g, 1.5)
    truth = np.where(left, 1, np.where(right, 2, 0))
    cen = np.array([[44, 30, 1.0], [56, 30, 0.5]])
    sigma = 6 / math.sqrt(2.0)
    assert inst.match_instances(inst.watershed_instances(g, cen, sigma), truth)["tp"] == 2
    point = inst.watershed_instances(g, cen, sigma, marker_radius=0.0)
    assert inst.match_instances(point, truth)["tp"] < 2


def test_stands_out_drops_faint_bumps_on_a_glow_keeps_nuclei():
    # bright nuclei on a dark field around a broad glow that carries faint, blurred bumps of the
    # same size (out-of-focus nuclei, as the middle of 20b20ab0): the LoG answers both kinds;
    # only the nuclei rise above their surroundings by half their height
    h, w = 160, 240
    yy, xx = np.mgrid[:h, :w]
    nuclei = [(20 + 25 * i, 20) for i in range(9)] + [(20 + 25 * i, 140) for i in range(9)]
    bumps = [(60 + 25 * i, y) for i in range(5) for y in (65, 95)]
    g = 0.3 * np.exp(-(((xx - 120) / 120.0) ** 2 + ((yy - 80) / 40.0) ** 2))
    for x, y in nuclei:
        g[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = 0.8
    for x, y in bumps:
        g = g + 0.25 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 32.0)
    g = ndimage.gaussian_filter(g.astype(np.float32), 1.0)
    g = g + np.random.default_rng(0).normal(0, 0.005, g.shape).astype(np.float32)
    sigma = 6 / math.sqrt(2.0)
    c = inst.log_centres(g, sigma)
    near = lambda pts, x, y: min(math.hypot(x - px, y - py) for px, py in pts) <= 4  # noqa: E731
    assert sum(near(bumps, x, y) for x, y, _ in c) == len(bumps)  # the LoG counts the bumps
    kept = c[inst.stands_out(g, c, sigma)]
    assert len(kept) == len(nuclei) and all(near(nuclei, x, y) for x, y, _ in kept)
    assert inst.stands_out(g, np.zeros((0, 3)), sigma).shape == (0,)


def test_watershed_instances_cut_nuclei_on_a_glow_at_their_own_half_height():
    # nuclei on a broad glow: cut at half their height above the image's background, their masks
    # would spread over the glow; above the local floor (local_floor, default) they keep their size
    h, w = 120, 200
    yy, xx = np.mgrid[:h, :w]
    cen = [(30 + 35 * i, 60) for i in range(5)]
    g = 0.6 * np.exp(-(((xx - 100) / 150.0) ** 2 + ((yy - 60) / 80.0) ** 2))
    truth = np.zeros((h, w), np.int32)
    for i, (x, y) in enumerate(cen):
        m = (xx - x) ** 2 + (yy - y) ** 2 <= 64
        g[m] += 0.4
        truth[m] = i + 1
    g = ndimage.gaussian_filter(g.astype(np.float32), 1.0)
    seeds = np.array([[x, y, 1.0] for x, y in cen])
    sigma = 8 / math.sqrt(2.0)
    m = inst.match_instances(inst.watershed_instances(g, seeds, sigma), truth)
    assert m["tp"] == 5 and m["mean_iou"] > 0.8
    flat = inst.watershed_instances(g, seeds, sigma, local_floor=False)
    spread = inst.match_instances(flat, truth)
    assert spread["mean_iou"] < m["mean_iou"] - 0.1  # masks spread over the glow


def ramp(h, w, lo=0.3):
    """A left-to-right illumination ramp from 1 to `lo` (an unevenly lit field)."""
    return np.tile(np.linspace(1.0, lo, w, dtype=np.float32), (h, 1))


def test_illumination_field_recovers_a_ramp_on_a_light_field_only():
    g, _ = disks(256, 320, grid_centres(256, 320, 32, 16), 7, fg=0.8, bg=0.1)
    light = 1.0 - g  # dark nuclei on a light field (bright field)
    assert inst.illumination_field(light) is None  # evenly lit: left as it is
    f = inst.illumination_field(light * ramp(256, 320))
    assert f is not None and f.shape == (256, 320) and float(f.max()) == pytest.approx(1.0)
    # the field is the ramp (up to scale), read off the light between the nuclei
    truth = ramp(256, 320)
    np.testing.assert_allclose(f / f[:, :8].mean(), truth / truth[:, :8].mean(), rtol=0.1)
    # a dark field (fluorescence) carries no illumination in its background: not corrected
    assert inst.illumination_field(g * ramp(256, 320)) is None
    # a light field lit within FLAT_FIELD_RATIO is left as it is
    assert inst.illumination_field(light * ramp(256, 320, lo=0.92)) is None


def test_an_unevenly_lit_light_field_is_counted_like_an_even_one():
    cen = grid_centres(256, 320, 32, 16)
    g, lab = disks(256, 320, cen, 7, fg=0.8, bg=0.1)
    bg = np.array([0.95, 0.85, 0.92], np.float32)  # H&E-like: purple nuclei on pink-white
    nuc = np.array([0.35, 0.2, 0.6], np.float32)
    w = (g - 0.1) / 0.7
    col = (bg + (nuc - bg) * w[..., None]).astype(np.float32)
    shaded = col * ramp(256, 320)[..., None]
    plain = inst.nucleus_signal(shaded, flat_field=False)
    ns = inst.nucleus_signal(shaded)
    # without the correction the dim side's background reads as the nuclei' tail
    assert plain.polarity == "bright"
    assert ns.polarity == "dark" and ns.colour and ns.illumination is not None
    flat = np.clip(shaded / ns.illumination[..., None], 0, 1)
    np.testing.assert_allclose(ns.flatten(shaded), flat)
    assert ns.meta()["illumination_min"] == pytest.approx(float(ns.illumination.min()), abs=1e-4)
    even = inst.nucleus_signal(col)
    assert even.illumination is None and even.meta()["illumination_min"] == 1.0
    np.testing.assert_array_equal(even.flatten(col), col)
    sc = inst.estimate_scale(ns.signal)
    _, _, c = inst.classical_centres(shaded, ns, sc["sigma"])
    assert abs(len(c) - len(cen)) <= 1
    # on the dim side too: a centre on every nucleus of the darkest third
    dim = [p for p in cen if p[0] > 2 * 320 / 3]
    found = sum(any(math.hypot(x - px, y - py) <= 4 for x, y, _ in c) for px, py in dim)
    assert found == len(dim)


def test_dim_nuclei_beside_a_few_very_bright_ones_count():
    """Issue 19: a few very bright nuclei (mitoses) lift the 95th percentile of the LoG maxima; the
    dim nuclei, at under a sixth of their contrast, must still count (`LOG_THRESHOLD`)."""
    cen = grid_centres(160, 200, 30, 15)  # 30 disks
    bright = set(range(0, 30, 4))  # 8 of them very bright
    g = np.zeros((160, 200), np.float32)
    for i, c in enumerate(cen):
        d, _ = disks(160, 200, [c], 7, fg=1.0 if i in bright else 0.15, bg=0.0)
        g = np.maximum(g, d)
    g = np.clip(g + np.random.default_rng(0).normal(0, 0.004, g.shape), 0, 1).astype(np.float32)
    ns = inst.nucleus_signal(rgb(g))
    sc = inst.estimate_scale(ns.signal)
    found = inst.log_centres(ns.signal, sc["sigma"], rel_threshold=inst.LOG_THRESHOLD["bright"])
    assert len(found) == len(cen)
    _, _, kept = inst.classical_centres(rgb(g), ns, sc["sigma"])
    assert len(kept) == len(cen)
    # the threshold of before (0.2 x the 95th percentile) drops the dim ones
    assert len(inst.log_centres(ns.signal, sc["sigma"], rel_threshold=0.2)) == len(bright)


def test_a_gray_image_with_noise_in_each_channel_is_not_stained():
    """Issue 19: independent noise in R, G and B (a colour camera) does not make a gray image
    stained; a purple stain does (`COLOUR_ANGLE`)."""
    g, _ = disks(160, 200, CEN, 7)
    noisy = np.clip(
        rgb(1.0 - g) + np.random.default_rng(0).normal(0, 0.03, (160, 200, 3)), 0, 1
    ).astype(np.float32)
    ns = inst.nucleus_signal(noisy)
    assert ns.polarity == "dark" and not ns.colour
    assert inst.stain_angle(ns.stain) < 1.0
    assert inst.stain_angle([1.0, 1.0, 1.0]) == pytest.approx(0.0, abs=1e-6)
    assert inst.stain_angle([1.0, 0.0, 0.0]) == pytest.approx(math.degrees(math.acos(1 / 3**0.5)))
    bg = np.array([0.95, 0.85, 0.92], np.float32)
    nuc = np.array([0.35, 0.2, 0.6], np.float32)
    col = np.where((g > 0.5)[..., None], nuc, bg).astype(np.float32)
    assert inst.nucleus_signal(col).colour

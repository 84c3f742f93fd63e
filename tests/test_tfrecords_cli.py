"""`indep-seg tfrecords folder|masks|patches|inspect` through the real CLI entry point."""

import json
import os

import numpy as np
from PIL import Image

from indep_seg import cli
from indep_seg.data import write_cluster_image, write_synthetic_dataset


def test_masks_then_inspect(tmp_path, capsys):
    paths = write_synthetic_dataset(tmp_path / "syn", num_images=4, size=40)
    rc = cli.main(
        [
            "tfrecords",
            "masks",
            paths["images"],
            paths["masks"],
            "--out",
            str(tmp_path / "r" / "syn"),
            "--boxes",
            paths["boxes_csv"],
            "--num-shards",
            "2",
            "--no-progress",
            "--summary-json",
            str(tmp_path / "summary.json"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "wrote 4 records in 2 shard(s)" in out and "skipped 0" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["records"] == 4 and len(summary["shards"]) == 2 and summary["bytes"] > 0
    rc = cli.main(
        [
            "tfrecords",
            "inspect",
            str(tmp_path / "r"),
            "--png",
            str(tmp_path / "p.png"),
            "--num",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "4 records in 2 file(s); 4 with masks" in out
    assert Image.open(tmp_path / "p.png").size[1] > 100


def test_folder_uses_boxes_csv_inside_the_folder_and_patches(tmp_path, capsys):
    paths = write_synthetic_dataset(tmp_path / "syn", num_images=2, size=40)
    os.replace(paths["boxes_csv"], os.path.join(paths["images"], "boxes.csv"))
    assert (
        cli.main(
            [
                "tfrecords",
                "folder",
                paths["images"],
                "--out",
                str(tmp_path / "f" / "x"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert cli.main(["tfrecords", "inspect", str(tmp_path / "f" / "x-*"), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert report["boxes"] == 2 and report["with_mask"] == 0
    cl = write_cluster_image(tmp_path / "cl", size=64, num_objects=6, radius=4.0)
    rc = cli.main(
        [
            "tfrecords",
            "patches",
            cl["image"],
            "--mask",
            cl["instances"],
            "--window",
            "32",
            "--stride",
            "16",
            "--out",
            str(tmp_path / "pt" / "p"),
            "--no-progress",
        ]
    )
    assert rc == 0 and "wrote 9 records" in capsys.readouterr().out


def test_bad_input_exits_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / "ok.png")
    rc = cli.main(
        [
            "tfrecords",
            "folder",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "o" / "x"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "broken.jpg" in err and "error" in err
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")
    rc = cli.main(
        [
            "tfrecords",
            "folder",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "o" / "x"),
            "--no-progress",
            "--skip-bad",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "wrote 1 records" in out and "broken.jpg" in out
    rc = cli.main(
        ["tfrecords", "folder", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2" / "x")]
    )
    assert rc == 2 and "nothing: not a directory" in capsys.readouterr().err
    rc = cli.main(["tfrecords", "inspect", str(tmp_path / "none-*.tfrecord")])
    assert rc == 2 and "no TFRecord files match" in capsys.readouterr().err


def test_writing_shows_progress_by_default(tmp_path, capsys):
    paths = write_synthetic_dataset(tmp_path / "syn", num_images=4, size=40)
    rc = cli.main(
        [
            "tfrecords",
            "masks",
            paths["images"],
            paths["masks"],
            "--out",
            str(tmp_path / "r" / "syn"),
        ]
    )
    err = capsys.readouterr().err
    assert (
        rc == 0 and "4/4" in err and "masks" in err
    )  # tqdm's bar on stderr: description and count


def test_inspect_preview_has_column_titles(tmp_path, capsys):
    paths = write_synthetic_dataset(tmp_path / "syn", num_images=2, size=40)
    assert (
        cli.main(
            [
                "tfrecords",
                "masks",
                paths["images"],
                paths["masks"],
                "--out",
                str(tmp_path / "r" / "s"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        cli.main(["tfrecords", "inspect", str(tmp_path / "r"), "--png", str(tmp_path / "p.png")])
        == 0
    )
    pic = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    band = pic[:14]
    assert (band[:, 2:150] < 100).any() and (
        band[:, 162:310] < 100
    ).any()  # a title over each column

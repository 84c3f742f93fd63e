"""`indep-seg demo --out DIR`: the README's main job, end to end on the embedded default data.

1. writes the procedural dataset (images, masks, boxes.csv) and a preview PNG;
2. trains `box_seg` on it for a few minutes (boxes only: the masks are never used for training);
3. segments unseen images with their boxes and writes a panel: image | mask | cut-out;
4. evaluates those masks against the ground truth (IoU / DICE);
5. exports a versioned SavedModel (+ ONNX), starts `indep-seg serve` on a free loopback port,
   asks it for the masks of the unseen images over gRPC, checks they match, and stops it.

Every step runs the same subcommand a user would run, so the demo doubles as a smoke test of
the whole path. Everything lands in `DIR` (see the summary printed at the end).

What it is not: its model knows only the embedded procedural shapes. On one's own photos it
gives smeared blobs; the summary ends with the commands that train on one's own photos with
boxes and segment them (`NEXT_STEPS`).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from PIL import Image

from indep_seg.commands import CommandError
from indep_seg.gallery import titled_grid

ABOUT = (
    "this demo's model knows only the embedded procedural shapes (coloured objects on textured "
    "backgrounds); on your own photos it gives smeared blobs: train a model on your photos first"
)

NEXT_STEPS = """\
What next: your own photos, with a box around each object
  1. put the photos in a folder PHOTOS with PHOTOS/boxes.csv, one row per object:
       filename,x0,y0,x1,y1
       cat1.jpg,40,30,210,180
     (filename as in PHOTOS; pixels of the photo, x1/y1 exclusive; several rows per photo allowed)
     or, instead of boxes.csv, a folder MASKS of one mask per photo (same file stem):
     add --masks MASKS
  2. indep-seg train --experiment box_seg --data PHOTOS --model-dir RUN --budget-minutes 30
  3. indep-seg segment --model RUN --boxes PHOTOS/boxes.csv PHOTOS --out OUT
     (without --boxes or --box the whole photo is the box: fine only when the object fills
     the photo)
See the README, section "Your own data" for every --data layout."""


def add_arguments(parser):
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=4.0,
        help="training budget in minutes, both phases (default 4)",
    )
    parser.add_argument("--num-images", type=int, default=400, help="training images to generate")
    parser.add_argument("--num-unseen", type=int, default=8, help="unseen images to segment")
    parser.add_argument("--skip-serving", action="store_true", help="stop after evaluation")


def _cli(*argv) -> int:
    from indep_seg import (
        cli,  # the CLI itself runs each step; imported here: cli imports this module
    )

    print("\n$ indep-seg " + " ".join(str(a) for a in argv), flush=True)
    code = cli.main([str(a) for a in argv])
    if code:
        raise CommandError(f"step 'indep-seg {argv[0]}' failed with exit code {code}")
    return code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PANEL_HEADERS = ("unseen photo", "predicted mask", "cut-out (mask as alpha)")


def _panel(unseen_dir: Path, masks_dir: Path, path: Path, tile: int = 128) -> Path:
    """image | mask | cut-out (on a checkerboard), one row per unseen image, titled columns."""
    names = sorted(p.name for p in (unseen_dir / "images").iterdir())
    rows = []
    yy, xx = np.mgrid[0:tile, 0:tile]
    checker = np.where(((yy // 8) + (xx // 8)) % 2 == 0, 200, 255).astype(np.uint8)[..., None]
    for row, name in enumerate(names):
        image = Image.open(unseen_dir / "images" / name).convert("RGB").resize((tile, tile))
        mask = Image.open(masks_dir / name).convert("L").resize((tile, tile))
        a = np.asarray(mask, np.float32)[..., None] / 255.0
        cut = (np.asarray(image, np.float32) * a + checker * (1 - a)).astype(np.uint8)
        rows.append([np.asarray(image), np.asarray(mask.convert("RGB")), cut])
    sheet = Image.fromarray(titled_grid(rows, PANEL_HEADERS, pad=4))
    tmp = path.with_suffix(".tmp.png")
    sheet.save(tmp)
    os.replace(tmp, path)
    return path


def _segment_iou(masks_dir: Path, truth_dir: Path, images) -> float:
    """Mean IoU over the whole image of the masks `indep-seg segment` wrote (its default
    refinement included: the panel's masks) against the unseen images' true masks (both > 127).
    `unseen_iou` is the network alone, scored by `indep-seg evaluate`'s box-window protocol."""
    from indep_seg.metrics import iou

    ious = []
    for p in images:
        name = Path(p).name
        pred = np.asarray(Image.open(masks_dir / name).convert("L")) > 127
        truth = np.asarray(Image.open(truth_dir / name).convert("L")) > 127
        ious.append(iou(pred, truth))
    return round(float(np.mean(ious)), 4)


def _write_data(args, out: Path, train_dir: Path, unseen_dir: Path) -> None:
    """Step 1: the procedural training and unseen sets and the preview PNG."""
    from indep_seg.data import read_dataset, save_preview, write_synthetic_dataset

    write_synthetic_dataset(train_dir, num_images=args.num_images, seed=0)
    write_synthetic_dataset(unseen_dir, num_images=args.num_unseen, seed=2024)
    save_preview(
        list(read_dataset(str(train_dir)).take(8).as_numpy_iterator()), out / "preview.png"
    )
    print(
        f"wrote {args.num_images} training and {args.num_unseen} unseen images under "
        f"{out / 'data'}; "
        f"preview: {out / 'preview.png'}"
    )


def _train(train_dir: Path, model_dir: Path, minutes: float) -> None:
    """Step 2: `indep-seg train --experiment box_seg` on the training set (boxes only)."""
    _cli(
        "train",
        "--experiment",
        "box_seg",
        "--data",
        train_dir,
        "--model-dir",
        model_dir,
        "--budget-minutes",
        minutes,
    )


def _segment_unseen(model_dir: Path, images, unseen_dir: Path, masks_dir: Path) -> None:
    """Step 3: `indep-seg segment` of the unseen images with their boxes (and cut-outs)."""
    _cli(
        "segment",
        "--model",
        model_dir,
        *images,
        "--out",
        masks_dir,
        "--boxes",
        unseen_dir / "boxes.csv",
        "--cutout",
    )


def _evaluate(model_dir: Path, unseen_dir: Path, out: Path) -> dict:
    """Step 4: `indep-seg evaluate` against the unseen truth; its scores (also evaluation.json)."""
    eval_json = out / "evaluation.json"
    buf = io.StringIO()
    with redirect_stdout(buf):
        _cli(
            "evaluate",
            "--model",
            model_dir,
            "--images",
            unseen_dir / "images",
            "--masks",
            unseen_dir / "masks",
            "--resolution",
            128,
            "--grid",
            out / "evaluation_grid.png",
        )
    text = buf.getvalue()
    print(text, end="")
    start = text.rfind("\n{")
    scores = json.loads(text[start + 1 if start >= 0 else text.find("{") :])
    eval_json.write_text(json.dumps(scores, indent=2))
    return scores


def _export(model_dir: Path, export_base: Path, onnx_path: Path) -> None:
    """Step 5a: `indep-seg export` of a versioned SavedModel and the ONNX file."""
    _cli(
        "export",
        "--model-dir",
        model_dir,
        "--export-base",
        export_base,
        "--onnx",
        onnx_path,
    )


def _start_server(port: int, rest_port: int, export_base: Path) -> subprocess.Popen:
    """Step 5b: `indep-seg serve` of the export as model "demo", in a child process."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indep_seg",
            "serve",
            "--port",
            str(port),
            "--rest_api_port",
            str(rest_port),
            "--model_name",
            "demo",
            "--model_base_path",
            str(export_base.resolve()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_server(server: subprocess.Popen, port: int, timeout_s: float = 120) -> None:
    """Poll the server until the model is AVAILABLE; raise if it exits or times out."""
    from indep_seg.serving.client import SegmentationClient

    deadline = time.time() + timeout_s
    while True:
        try:
            with SegmentationClient(f"127.0.0.1:{port}", model_name="demo", timeout=5) as c:
                if any(s.get("state") == "AVAILABLE" for s in c.status()):
                    break
        except Exception:
            pass
        if server.poll() is not None or time.time() > deadline:
            raise RuntimeError(
                "the model server did not come up:\n" + (server.stdout.read() or "")
            )
        time.sleep(0.5)


def _segment_served(port: int, images, unseen_dir: Path, served_dir: Path) -> None:
    """Step 5c: `indep-seg segment --server` of the unseen images over gRPC."""
    _cli(
        "segment",
        "--server",
        f"127.0.0.1:{port}",
        "--model-name",
        "demo",
        *images,
        "--out",
        served_dir,
        "--boxes",
        unseen_dir / "boxes.csv",
    )


def _max_abs_diff(served_dir: Path, masks_dir: Path, images) -> int:
    """The largest 8-bit difference between the served and the local masks."""
    diffs = [
        np.abs(
            np.asarray(Image.open(served_dir / Path(p).name), np.int16)
            - np.asarray(Image.open(masks_dir / Path(p).name), np.int16)
        ).max()
        for p in images
    ]
    return int(max(diffs))


def _stop_server(server: subprocess.Popen) -> None:
    """Terminate the server; kill it if it has not exited within 20 s."""
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def _export_serve_and_compare(out: Path, model_dir: Path, images, unseen_dir: Path, masks_dir):
    """Step 5: export, serve, query the unseen images, stop; the summary's serving entries."""
    export_base = out / "export"
    _export(model_dir, export_base, out / "model.onnx")
    port, rest_port = _free_port(), _free_port()
    server = _start_server(port, rest_port, export_base)
    try:
        _wait_for_server(server, port)
        served_dir = out / "served_masks"
        _segment_served(port, images, unseen_dir, served_dir)
        served = {
            "served_masks": str(served_dir),
            "server_port": port,
            "served_vs_local_max_abs_diff_8bit": _max_abs_diff(served_dir, masks_dir, images),
        }
    finally:
        _stop_server(server)
    served["onnx"] = str(out / "model.onnx")
    return served


def _write_summary(out: Path, summary: dict, t0: float) -> None:
    """summary.json (with the minutes and the next steps), printed, then the next steps."""
    summary["minutes"] = round((time.time() - t0) / 60, 2)
    summary["next"] = NEXT_STEPS.splitlines()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n" + json.dumps({k: v for k, v in summary.items() if k != "next"}, indent=2))
    print(
        "\nThe demo's model knows only the embedded procedural shapes: on your own photos it gives "
        "smeared blobs.\n" + NEXT_STEPS,
        flush=True,
    )


def run(args) -> int:
    import indep_seg.data  # noqa: F401  (TensorFlow loads before the clock starts, as it always did)

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_dir, unseen_dir = out / "data" / "train", out / "data" / "unseen"
    model_dir = out / "model"
    masks_dir = out / "unseen_masks"

    print(f"indep-seg demo: {ABOUT}.", flush=True)
    _write_data(args, out, train_dir, unseen_dir)
    _train(train_dir, model_dir, args.minutes)
    images = sorted(str(p) for p in (unseen_dir / "images").iterdir())
    _segment_unseen(model_dir, images, unseen_dir, masks_dir)
    panel = _panel(unseen_dir, masks_dir, out / "panel.png")
    scores = _evaluate(model_dir, unseen_dir, out)
    summary = {
        "about": ABOUT,
        "preview": str(out / "preview.png"),
        "panel": str(panel),
        "model_dir": str(model_dir),
        "unseen_iou": scores.get("iou"),
        "unseen_dice": scores.get("dice"),
        "unseen_iou_segment": _segment_iou(masks_dir, unseen_dir / "masks", images),
    }
    if not args.skip_serving:
        summary.update(_export_serve_and_compare(out, model_dir, images, unseen_dir, masks_dir))
    _write_summary(out, summary, t0)
    return 0

"""Study: a student that sees the box's context, trained on the per-image box priors of a
collection.

Data distillation (Dai et al. 2019, appendix) with the per-image GrabCut prior as the label: a UNet
reads the box's context window (RGB and a plane marking the box, `box_prior.PRIOR_CONTEXT`, the same
window as the evaluation protocol) and learns the priors of every photo of a data set (boxes only;
masks only score). Learning across photos averages the per-image mistakes of GrabCut ("Simple Does
It", Khoreva et al. 2017, trains on GrabCut labels the same way).

Settings are chosen on the tuning half (`--half tune`, the default); `--half test` reports.

    taskset -c 0 python benchmarks/study_context_student.py --data horse --minutes 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from box_seg_eval import Evaluator, load_dataset, stems  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def context_data(items, cache: Path | None):
    """Context crops `[N,128,128,3]` uint8, box planes and priors `[N,128,128]`, boxes `[N, 4]`."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return z["crops"], z["planes"], z["priors"], z["boxes"]
    from indep_seg.box_prior import box_mask, box_prior, context_crop

    crops, planes, priors, boxes = [], [], [], []
    t = time.time()
    for _, image, box in items:
        crop8, cbox, _, _ = context_crop(image, box)
        crops.append(crop8)
        boxes.append(cbox)
        planes.append(box_mask(crop8.shape[:2], cbox).astype(np.uint8))
        priors.append(box_prior(crop8, cbox).astype(np.uint8))
    print(f"{len(items)} priors in {time.time() - t:.0f} s", flush=True)
    out = np.stack(crops), np.stack(planes), np.stack(priors), np.asarray(boxes, np.float32)
    if cache is not None:
        np.savez(cache, crops=out[0], planes=out[1], priors=out[2], boxes=out[3])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="horse", choices=["horse", "ecssd"])
    ap.add_argument("--half", default="tune", choices=["tune", "test"])
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--unet", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=float, default=5.0, help="minutes")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    from indep_seg.box_prior import refine_with_grabcut
    from indep_seg.networks.unet import UNET_PRESETS, UNet

    items, gts = load_dataset(args.data, "all")
    names = [n for n, _, _ in items]
    crops, planes, priors, cboxes = context_data(items, Path(f"/tmp/context_{args.data}.npz"))
    keep = set(stems(args.data, args.half))
    idx = [i for i, n in enumerate(names) if Path(n).stem in keep]
    ev = Evaluator([items[i] for i in idx], [gts[i] for i in idx])
    R = args.resolution

    def net_input(c8, pl):
        x = np.concatenate([c8.astype(np.float32) / 255.0, pl[..., None].astype(np.float32)], -1)
        return tf.image.resize(x, (R, R), antialias=True).numpy() if R != 128 else x

    X = net_input(crops, planes)
    Y = tf.image.resize(priors[..., None].astype(np.float32), (R, R), antialias=True).numpy()
    kw = dict(UNET_PRESETS[args.unet])
    kw.update(resolution=R, in_channels=4)
    net = UNet(name="context_student", **kw)
    opt = keras.optimizers.Adam(args.lr, beta_1=0.9)

    @tf.function
    def step(x, y):
        flip = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5
        x = tf.where(flip, tf.reverse(x, [2]), x)
        y = tf.where(flip, tf.reverse(y, [2]), y)
        with tf.GradientTape() as tape:
            p = net(x, training=True) * x[..., 3:4]  # the mask lies in the box
            loss = tf.reduce_mean(keras.losses.binary_crossentropy(y, p))
        g = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(g, net.trainable_variables))
        return loss

    def predict():
        out = []
        for i in idx:
            p = net(X[i : i + 1], training=False).numpy()[0] * X[i, ..., 3:4]
            out.append(tf.image.resize(p, (128, 128)).numpy()[..., 0] if R != 128 else p[..., 0])
        return np.stack(out)

    def evaluate(tag, steps):
        pred = predict()
        rec = {
            "steps": steps,
            "minutes": round((time.time() - t0) / 60, 2),
            "student": ev.scores(pred)["iou"],
            "prior": ev.scores(priors[idx])["iou"],
        }
        for blend in (0.0, 0.5):
            ref = []
            for j, i in enumerate(idx):
                ref.append(refine_with_grabcut(crops[i], pred[j], cboxes[i], prior_blend=blend))
            rec[f"student_refined_blend{blend}"] = ev.scores(np.stack(ref))["iou"]
        print(json.dumps(rec), flush=True)
        return rec

    rng = np.random.default_rng(0)
    t0 = time.time()
    n, steps, log = len(X), 0, []
    next_eval = args.eval_every
    while (time.time() - t0) / 60 < args.minutes:
        b = rng.choice(n, args.batch, replace=False)
        loss = float(step(tf.constant(X[b]), tf.constant(Y[b])))
        steps += 1
        if steps % 100 == 0:
            print(
                f"step {steps} loss {loss:.4f} {(time.time() - t0) / steps:.3f} s/step", flush=True
            )
        if (time.time() - t0) / 60 >= next_eval:
            log.append(evaluate("mid", steps))
            next_eval += args.eval_every
    log.append(evaluate("end", steps))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"study_context_student_{args.data}_{args.half}{args.tag}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "log": log,
            },
            indent=1,
        )
    )
    print(out)


if __name__ == "__main__":
    main()

"""Export -> serve -> query -> stop, in one call (the README's main command uses it).

`export_serve_query(model_dir, images, out_dir)` exports the segmenter of a training run
as a new version under `out_dir/export/`, starts the model server on free loopback ports,
asks it (gRPC, through `serving.client`) for the masks of `images`, writes
`out_dir/served_masks/<stem>.png`, stops the server and returns a summary dict.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["export_serve_query"]


def export_serve_query(model_dir, images, out_dir, model_name: str = "segmenter", boxes=None) -> dict:
    from indep_seg.segmenter import Segmenter
    from serving.client import SegmentationClient
    from serving.export import export_segmenter
    from serving.imageio import list_images, read_image, write_png
    from serving.server import ModelServer

    out_dir = Path(out_dir)
    seg = Segmenter.load(model_dir)
    version_dir = export_segmenter(seg, out_dir / "export")
    files = list_images(images)
    if boxes is not None and len(boxes) != len(files):
        raise ValueError(f"boxes: expected one box (or None) per image ({len(files)}), got {len(boxes)}")
    server = ModelServer.from_base_path(model_name, out_dir / "export", port=0, rest_api_port=0,
                                        file_system_poll_wait_seconds=0).start()
    written = []
    try:
        with SegmentationClient(f"127.0.0.1:{server.port}", model_name=model_name) as client:
            for i, f in enumerate(files):
                image = read_image(f)
                mask = client.segment(image, box=None if boxes is None else boxes[i])
                written.append(str(write_png(out_dir / "served_masks" / f"{f.stem}.png",
                                             np.uint8(np.clip(np.round(mask * 255), 0, 255)))))
    finally:
        server.stop()
    return {"export": str(version_dir), "grpc_port": server.port, "rest_api_port": server.rest_api_port,
            "masks": written}

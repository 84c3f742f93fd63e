"""A small client for the project's model server (and the official tensorflow_model_server):
send images, get masks, never build a `TensorProto` by hand.

Example:
    >>> c = SegmentationClient("127.0.0.1:8500", model_name="horse")      # doctest: +SKIP
    >>> mask = c.segment(image)                       # [H, W] float in [0, 1]
    >>> mask = c.segment(image, box=(10, 20, 200, 180))
    >>> masks = c.segment_bytes([open("a.jpg", "rb").read()])
    >>> c = SegmentationClient("http://127.0.0.1:8501", model_name="horse")  # REST

gRPC, `tensorflow_serving.apis` and TensorFlow are imported on the first gRPC use, inside the
methods: a REST client (`http://...`) starts without them (seconds saved in a script that only
talks to a server).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np

__all__ = ["SegmentationClient", "ClientError"]


class ClientError(RuntimeError):
    """A server error: `code` is the gRPC status name (or HTTP status for REST), `message` its
    text."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _as_batch(images):
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images: expected [H, W, 3] or [N, H, W, 3], got shape {arr.shape}")
    return arr


class SegmentationClient:
    """gRPC (`HOST:PORT`) or REST (`http://HOST:PORT`) client of a served segmenter.

    Args:
        target: `HOST:PORT` for gRPC, or an `http://` URL for REST.
        model_name: the served model's name.
        version: a version number, or None for the latest.
        version_label: a version label (instead of `version`).
        timeout: seconds per request.
        max_message_size: gRPC message cap of the channel, bytes.
    """

    def __init__(
        self,
        target: str,
        model_name: str = "default",
        version: int | None = None,
        version_label: str | None = None,
        timeout: float = 60.0,
        max_message_size: int = 64 * 1024 * 1024,
    ):
        if not isinstance(target, str) or not target:
            raise ValueError(f"target: expected HOST:PORT or http://HOST:PORT, got {target!r}")
        self.target = target
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.timeout = timeout
        self.rest = target.startswith(("http://", "https://"))
        if not self.rest:
            import grpc
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(
                target,
                options=[
                    ("grpc.max_receive_message_length", max_message_size),
                    ("grpc.max_send_message_length", max_message_size),
                ],
            )
            self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # ------------------------------------------------------------------ low level
    def _spec(self, spec, signature):
        spec.name = self.model_name
        spec.signature_name = signature
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.version_label:
            spec.version_label = self.version_label

    def _rest_url(self, suffix=""):
        url = f"{self.target.rstrip('/')}/v1/models/{self.model_name}"
        if self.version is not None:
            url += f"/versions/{int(self.version)}"
        elif self.version_label:
            url += f"/labels/{self.version_label}"
        return url + suffix

    def _rest(self, url, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", "")
            except Exception:
                msg = e.reason
            raise ClientError(e.code, msg) from None

    def predict(self, inputs: dict, signature: str = "serving_default") -> dict:
        """Raw Predict: `{alias: ndarray}` -> `{alias: ndarray}`."""
        if self.rest:
            cols = {}
            for k, v in inputs.items():
                v = np.asarray(v)
                cols[k] = (
                    [{"b64": base64.b64encode(x).decode()} for x in v.ravel()]
                    if v.dtype.kind in ("S", "O")
                    else v.tolist()
                )
            out = self._rest(
                self._rest_url(":predict"), {"signature_name": signature, "inputs": cols}
            )["outputs"]
            if not isinstance(out, dict):
                out = {"mask": out}
            return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        req = predict_pb2.PredictRequest()
        self._spec(req.model_spec, signature)
        for k, v in inputs.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        try:
            resp = self._predict.Predict(req, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ClientError(e.code().name, e.details()) from None
        from indep_seg.serving.tensors import to_ndarray

        return {k: to_ndarray(v) for k, v in resp.outputs.items()}

    # ------------------------------------------------------------------ high level
    def segment(self, images, box=None):
        """Masks for one `[H, W, 3]` image (-> `[H, W]`) or a same-size batch (-> `[N, H, W]`).

        `images` are uint8 or float in [0, 1]; `box` is one `x0, y0, x1, y1` or one per image.
        """
        single = np.asarray(images).ndim == 3
        batch = _as_batch(images)
        if box is None:
            out = self.predict({"image": batch}, "serving_default")["mask"]
        else:
            boxes = np.asarray(box, dtype=np.float32).reshape(-1, 4)
            if len(boxes) == 1 and len(batch) > 1:
                boxes = np.repeat(boxes, len(batch), axis=0)
            out = self.predict({"image": batch, "box": boxes}, "segment_in_box")["mask"]
        out = out[..., 0]
        return out[0] if single else out

    def segment_bytes(self, encoded: list[bytes]):
        """Masks `[N, H, W]` for encoded JPEG / PNG images of one size."""
        arr = np.array(list(encoded), dtype=object)
        return self.predict({"image_bytes": arr}, "segment_bytes")["mask"][..., 0]

    def status(self) -> list[dict]:
        """`[{"version": 1, "state": "AVAILABLE"}, ...]`."""
        if self.rest:
            doc = self._rest(self._rest_url())
            return [
                {"version": int(s["version"]), "state": s["state"]}
                for s in doc["model_version_status"]
            ]
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2

        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = self.model_name
        if self.version is not None:
            req.model_spec.version.value = int(self.version)
        try:
            resp = self._models.GetModelStatus(req, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ClientError(e.code().name, e.details()) from None
        return [
            {
                "version": s.version,
                "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
            }
            for s in resp.model_version_status
        ]

    def close(self):
        if not self.rest:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

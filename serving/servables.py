"""Loaded model versions and the manager that keeps them in step with the base paths.

`ModelManager` plays the part of TF Serving's ServerCore: for every configured model it
polls `base_path` for integer version folders, loads the versions its version policy
wants (`latest` (default, 1 version), `all`, `specific`), swaps them in atomically and
drops the ones no longer wanted. Requests hold a reference to the `Servable` they run on,
so a version that is being replaced finishes every request in flight. Only folders that
resolve inside the configured base path are ever loaded (a symlinked version pointing
elsewhere is refused and logged).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.util import deprecation  # silence(): no public equivalent

from indep_seg.serving.config import validate_model_server_config
from indep_seg.serving.errors import (
    ServingError,
    clip,
    invalid_argument,
    not_found_latest,
    not_found_specific,
)
from indep_seg.serving.limits import (
    DEFAULT_MAX_IMAGE_PIXELS,
    RequestLimits,
    check_encoded_images,
)
from indep_seg.serving.tensors import dtype_name

log = logging.getLogger("indep_seg.serving")

__all__ = ["Servable", "SignatureInfo", "ModelManager", "VersionState"]

_VERSION_RE = re.compile(r"^[0-9]+$")


@dataclass
class SignatureInfo:
    name: str
    fn: object  # callable(**{alias: ndarray}) -> {alias: ndarray}
    inputs: dict  # alias -> tf.TensorSpec
    outputs: dict  # alias -> tf.TensorSpec


def _tensor_spec(info) -> tf.TensorSpec:
    """`tf.TensorSpec` of a SignatureDef's `TensorInfo` (None for unknown dimensions)."""
    shape = (
        None
        if info.tensor_shape.unknown_rank
        else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
    )
    return tf.TensorSpec(shape, tf.as_dtype(info.dtype))


class _SessionSignature:
    """One signature of a SavedModel run as a session callable, as TF Serving runs it
    (`Session::Run` on the `serve` meta graph): NumPy in, NumPy out, no per-call graph
    building. It measured 0.15-0.3 ms faster per call than the TF2 signature function."""

    def __init__(self, session, signature_def):
        self.input_aliases = sorted(signature_def.inputs)
        self.output_aliases = sorted(signature_def.outputs)
        self._call = session.make_callable(
            [signature_def.outputs[a].name for a in self.output_aliases],
            [signature_def.inputs[a].name for a in self.input_aliases],
        )

    def __call__(self, **inputs):
        values = self._call(*[inputs[a] for a in self.input_aliases])
        return dict(zip(self.output_aliases, values))


def _read_signature_defs(path: Path):
    """The `SignatureDef` map of the `serve` meta graph, straight from saved_model.pb."""
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return mg.signature_def
    return sm.meta_graphs[0].signature_def if sm.meta_graphs else {}


class Servable:
    """One loaded version of one model."""

    def __init__(self, name: str, version: int, path: Path):
        self.name = name
        self.version = int(version)
        self.path = Path(path)
        self.signature_defs = _read_signature_defs(self.path)
        # The `serve` meta graph in its own graph and session, as tensorflow_model_server loads it.
        self.graph = tf.Graph()
        # deprecation.silence(): the TF1 loader's "use tf.saved_model.load instead" notice, meant
        # for
        # training code, would be printed by every server start.
        with self.graph.as_default(), deprecation.silence():
            # soft placement: a graph traced on one machine may name a device another lacks
            self.session = tf.compat.v1.Session(
                graph=self.graph, config=tf.compat.v1.ConfigProto(allow_soft_placement=True)
            )
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        self.signatures = {}
        for key, sd in meta.signature_def.items():
            if key.startswith("__"):  # __saved_model_init_op: run by the loader, not a signature
                continue
            self.signatures[key] = SignatureInfo(
                key,
                _SessionSignature(self.session, sd),
                {a: _tensor_spec(i) for a, i in sd.inputs.items()},
                {a: _tensor_spec(i) for a, i in sd.outputs.items()},
            )

    def signature(self, key: str) -> SignatureInfo:
        key = key or "serving_default"
        sig = self.signatures.get(key)
        if sig is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{clip(key)}" not found.',
            )
        return sig

    def run(self, sig: SignatureInfo, inputs: dict) -> dict:
        """Runs a signature on NumPy inputs; TF runtime errors become INVALID_ARGUMENT."""
        try:
            return sig.fn(**inputs)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, _first_line(e.message)) from None
        except tf.errors.ResourceExhaustedError as e:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, _first_line(e.message)) from None


def _first_line(message: str) -> str:
    """The human part of a TF runtime error (no graph context, no node names).

    `Graph execution error: ... assertion failed: [box: expected ...] [Condition ...]`
    becomes `box: expected ...`; decode errors keep TF's sentence.
    """
    lines = []
    for line in message.strip().splitlines():
        s = line.strip()
        if (
            not s
            or s.startswith("[[")
            or s.startswith("Graph execution error")
            or s.startswith("Detected at node")
            or s.startswith("<stack traces")
        ):
            continue
        lines.append(s)
    text = " ".join(lines) or message.strip().splitlines()[0]
    text = re.sub(r"\s*\[\[\{\{.*$", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]$", "", text)
    m = re.match(r"assertion failed: \[([^\]]*)\]", text)
    if m:
        return m.group(1)
    return text.strip()


@dataclass
class VersionState:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: int = 0  # google.rpc code (0 OK)
    error_message: str = ""


class _Model:
    def __init__(self, config):
        self.config = config
        self.available: dict[int, Servable] = {}
        self.states: dict[int, VersionState] = {}
        self.failed: dict[int, tuple] = {}


def _stamp(path: Path):
    try:
        st = (path / "saved_model.pb").stat()
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return None


def check_encoded_image_sizes(alias: str, arr, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """Rejects encoded images (a DT_STRING batch) whose header cannot be read or declares more
    than `max_pixels` pixels, before anything is decoded
    (`indep_seg.serving.limits.check_encoded_images`)."""
    check_encoded_images(
        alias,
        np.asarray(arr).reshape(-1),
        RequestLimits(max_image_pixels=max_pixels, max_request_pixels=2**62),
    )


def _check_aliases(sig: SignatureInfo, inputs: dict, model_name: str) -> None:
    """The request names exactly the signature's inputs (TF Serving's messages)."""
    expected, sent = set(sig.inputs), set(inputs)
    for alias in sorted(sent - expected):
        raise invalid_argument(
            f"input tensor alias not found in signature: {clip(alias)}. Inputs expected to be in "
            f"the set {{{','.join(sorted(expected))}}}."
        )
    missing = sorted(expected - sent)
    if missing:
        raise invalid_argument(
            f"Request inputs do not match required inputs for model `{model_name}`. "
            f"Send extra: {{}}. Missing but required: {{{','.join(missing)}}}."
        )


def _check_dtype(alias: str, arr, want) -> None:
    """`arr` has the signature's dtype (any string kind for DT_STRING)."""
    if want == tf.string:
        if arr.dtype.kind not in ("S", "O", "U"):
            raise invalid_argument(
                f"{alias}: expects a DT_STRING tensor but {_np_dtype_name(arr)} is provided"
            )
    elif arr.dtype != want.as_numpy_dtype:
        raise invalid_argument(
            f"{alias}: expects a {_tf_name(want)} tensor but {_np_dtype_name(arr)} is provided"
        )


def _check_shape(alias: str, arr, shape) -> None:
    """`arr` has the signature's rank and fixed dimensions, a batch and no zero-size dimension."""
    if shape.rank is not None:
        if arr.ndim != shape.rank:
            raise invalid_argument(
                f"{alias}: expected a tensor of rank {shape.rank} with shape "
                f"{_shape_str(shape)}, got shape {list(arr.shape)}"
            )
        for i, d in enumerate(shape.as_list()):
            if d is not None and arr.shape[i] != d:
                raise invalid_argument(
                    f"{alias}: expected shape {_shape_str(shape)}, got {list(arr.shape)} "
                    f"(dimension {i} must be {d})"
                )
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise invalid_argument(
            f"{alias}: empty batch (shape {list(arr.shape)}); send at least one example"
        )
    if any(s == 0 for s in arr.shape):
        raise invalid_argument(f"{alias}: shape {list(arr.shape)} has a zero-size dimension")


def _check_boxes(arr) -> None:
    """Every `[x0, y0, x1, y1]` row of a float `box` input has x1 > x0 and y1 > y0."""
    bad = np.nonzero(~((arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])))[0]
    if bad.size:
        raise invalid_argument(
            f"box: box {int(bad[0])} = {arr[bad[0]].tolist()} is empty (expected "
            "x0, y0, x1, y1 with x1 > x0 and y1 > y0)"
        )


def validate_spec_inputs(
    sig: SignatureInfo,
    inputs: dict,
    model_name: str,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    limits: RequestLimits | None = None,
) -> dict:
    """Checks request inputs against a signature (names, dtype, rank, fixed dims, batch, the
    number of strings, and the headers and declared pixel counts of encoded images,
    `indep_seg.serving.limits.check_encoded_images`), before anything runs.

    Returns the inputs converted to NumPy of the signature's dtype where the conversion
    is exact (e.g. float64 JSON numbers to float32); raises INVALID_ARGUMENT otherwise.
    """
    if limits is None:
        limits = RequestLimits(
            max_image_pixels=max_image_pixels, max_request_pixels=max_image_pixels
        )
    _check_aliases(sig, inputs, model_name)
    expected = set(sig.inputs)
    strings = sum(inputs[a].size for a in expected if sig.inputs[a].dtype == tf.string)
    if strings > limits.max_string_elements:
        raise ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request holds {strings} strings, more than this server's limit of "
            f"{limits.max_string_elements} per request",
        )
    out, batch, pixels = {}, None, [0]
    for alias in sorted(expected):
        spec, arr = sig.inputs[alias], inputs[alias]
        _check_dtype(alias, arr, spec.dtype)
        _check_shape(alias, arr, spec.shape)
        if batch is None:
            batch = (alias, arr.shape[0])
        elif arr.shape[0] != batch[1]:
            raise invalid_argument(
                f"Input to predict must have equal 0th-dimension size: {batch[0]} has "
                f"{batch[1]}, {alias} has {arr.shape[0]}"
            )
        if alias == "box" and arr.ndim == 2 and arr.shape[1] == 4 and arr.dtype.kind == "f":
            _check_boxes(arr)
        if spec.dtype == tf.string:
            check_encoded_images(alias, arr.reshape(-1), limits, pixels)
        if spec.dtype == tf.float32 and arr.dtype == np.float32 and not np.isfinite(arr).all():
            raise invalid_argument(f"{alias}: contains NaN or Inf values")
        out[alias] = arr
    return out


def _shape_str(shape) -> str:
    return "[" + ",".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def _tf_name(dtype) -> str:
    return dtype_name(dtype)


def _np_dtype_name(arr) -> str:
    try:
        return _tf_name(arr.dtype)
    except TypeError:
        return str(arr.dtype)


class ModelManager:
    """The set of served models and versions; thread-safe.

    Args:
        config: a `ModelServerConfig` (see `indep_seg.serving.config`).
        base_path_prefix: if set, every model's base path must resolve (symlinks followed) inside
            this folder, in every config given and at every poll (`--model_base_path_prefix`);
            otherwise a config is refused with PERMISSION_DENIED.
    """

    def __init__(self, config=None, base_path_prefix=None):
        self.base_path_prefix = Path(base_path_prefix).resolve() if base_path_prefix else None
        self.generation = (
            0  # +1 at each version loaded or unloaded (read by the server's malloc trimmer)
        )
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()  # one poll / reload at a time
        self._models: dict[str, _Model] = {}
        self._config = None
        if config is not None:
            self.reload_config(config)

    # ----------------------------------------------------------------- config
    @property
    def config(self):
        return self._config

    def reload_config(self, config):
        """Replaces the model set (TF Serving's HandleReloadConfigRequest) and loads it now."""
        validate_model_server_config(config, "model_server_config")
        for mc in config.model_config_list.config:
            if not self._allowed(mc.base_path):
                raise ServingError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"model {clip(mc.name)}: base_path {clip(mc.base_path)} is not inside "
                    f"{self.base_path_prefix} (--model_base_path_prefix)",
                )
        with self._load_lock:
            with self._lock:
                old_labels = {n: dict(m.config.version_labels) for n, m in self._models.items()}
                new = {}
                for mc in config.model_config_list.config:
                    old = self._models.get(mc.name)
                    if old is not None and old.config.base_path == mc.base_path:
                        old.config = mc
                        new[mc.name] = old
                    else:
                        new[mc.name] = _Model(mc)
                self._models = new
                self._config = config
            self._poll_locked()
            self._check_labels(old_labels)

    def _allowed(self, base_path) -> bool:
        if self.base_path_prefix is None:
            return True
        try:
            real = Path(base_path).resolve()
        except (OSError, RuntimeError):
            return False
        return real == self.base_path_prefix or self.base_path_prefix in real.parents

    def _check_labels(self, old_labels):
        """TF Serving assigns a version label only to a version that is available for inference
        (ServerCore::UpdateModelVersionLabelMap): otherwise the reload fails with
        FAILED_PRECONDITION and the labels stay as they were (the models themselves are loaded)."""
        with self._lock:
            bad = [
                (name, label, v)
                for name, m in sorted(self._models.items())
                for label, v in sorted(m.config.version_labels.items())
                if v not in m.available
            ]
            if not bad:
                return
            for name, m in self._models.items():
                m.config.version_labels.clear()
                m.config.version_labels.update(old_labels.get(name, {}))
        name, label, v = bad[0]
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"Request to assign label to version {v} of model {name}, which is not currently "
            f"available for inference (label {label!r})",
        )

    # ----------------------------------------------------------------- polling
    def poll(self):
        """One pass over every base path: load wanted versions, unload the others."""
        with self._load_lock:
            self._poll_locked()

    def _poll_locked(self):
        with self._lock:
            models = list(self._models.items())
        for name, model in models:
            try:
                self._poll_model(name, model)
            except Exception as e:  # keep serving the others
                log.warning("model %s: polling %s failed: %s", name, model.config.base_path, e)

    def _candidate_versions(self, mc) -> dict[int, Path]:
        base = Path(mc.base_path)
        try:
            base_real = base.resolve(strict=True)
        except (OSError, RuntimeError):
            log.warning("model %s: base path %s does not exist (yet)", mc.name, base)
            return {}
        if not self._allowed(base_real):
            log.warning(
                "model %s: base path %s resolves to %s, outside --model_base_path_prefix %s; "
                "not loading from it",
                mc.name,
                base,
                base_real,
                self.base_path_prefix,
            )
            return {}
        out = {}
        for child in base_real.iterdir():
            if not _VERSION_RE.match(child.name) or not child.is_dir():
                continue
            real = child.resolve()
            if real.parent != base_real and base_real not in real.parents:
                log.warning(
                    "model %s: version folder %s resolves outside the base path (%s); "
                    "not loading it",
                    mc.name,
                    child,
                    real,
                )
                continue
            if not (real / "saved_model.pb").is_file():
                continue
            out[int(child.name)] = real
        return out

    @staticmethod
    def _wanted(mc, versions: list[int]) -> list[int]:
        policy = mc.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        if kind == "all":
            return sorted(versions)
        if kind == "specific":
            return sorted(v for v in versions if v in set(policy.specific.versions))
        n = policy.latest.num_versions or 1
        return sorted(versions)[-n:]

    def _poll_model(self, name, model):
        mc = model.config
        while True:
            found = self._candidate_versions(mc)
            # A version that failed to load is skipped (so `latest` falls back to the newest
            # loadable one) until its saved_model.pb changes.
            for v in list(found):
                stamp = model.failed.get(v)
                if stamp is not None:
                    if stamp == _stamp(found[v]):
                        del found[v]
                    else:
                        del model.failed[v]
            wanted = self._wanted(mc, list(found))
            failed_now = False
            for v in wanted:
                if v in model.available:
                    continue
                with self._lock:
                    model.states[v] = VersionState(v, "LOADING")
                try:
                    servable = Servable(name, v, found[v])
                except Exception as e:
                    first_line = str(e).splitlines()[0] if str(e) else ""
                    msg = f"load failed: {type(e).__name__}: {first_line}"
                    log.warning("model %s version %d: %s", name, v, msg)
                    with self._lock:
                        model.states[v] = VersionState(v, "END", 13, msg)  # INTERNAL
                        model.failed[v] = _stamp(found[v])
                    failed_now = True
                    continue
                with self._lock:
                    model.available[v] = servable
                    model.states[v] = VersionState(v, "AVAILABLE")
                    self.generation += 1
                log.info("model %s: version %d available (%s)", name, v, found[v])
            if not failed_now:
                break
        # Unload the versions no longer wanted (new ones are already serving): requests in
        # flight keep their reference to the old servable and finish on it.
        with self._lock:
            for v in list(model.available):
                if v not in wanted:
                    del model.available[v]
                    model.states[v] = VersionState(v, "END")
                    self.generation += 1
                    log.info("model %s: version %d unloaded", name, v)

    # ----------------------------------------------------------------- lookup
    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request's ModelSpec, or TF Serving's error."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:  # "" too: TF Serving answers it as an unknown label
                if model is None:
                    raise not_found_latest(name)
                if label not in model.config.version_labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Unrecognized servable version label: {clip(label)}",
                    )
                version = int(model.config.version_labels[label])
            if version is None:
                if model is None or not model.available:
                    raise not_found_latest(name)
                return model.available[max(model.available)]
            if model is None or version not in model.available:
                raise not_found_specific(name, version)
            return model.available[version]

    def status(self, name: str, version: int | None = None) -> list[VersionState]:
        with self._lock:
            model = self._models.get(name)
            if version is not None:
                if model is None or version not in model.states:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Could not find version {version} of model {clip(name)}",
                    )
                return [model.states[version]]
            if model is None or not model.states:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {clip(name)}"
                )
            return [model.states[v] for v in sorted(model.states)]


class Poller:
    """Calls `manager.poll()` every `interval` seconds on a daemon thread (0 disables)."""

    def __init__(self, manager: ModelManager, interval: float, extra=None):
        self.manager = manager
        self.interval = float(interval)
        self.extra = extra
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                if self.extra is not None:
                    self.extra()
                self.manager.poll()
            except Exception as e:  # pragma: no cover - logged, never fatal
                log.warning("polling failed: %s", e)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Polls `predicate()` until true or `timeout` seconds pass (for tests and scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())

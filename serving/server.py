"""A TF-Serving-compatible model server: gRPC PredictionService / ModelService / Health,
and (serving/rest.py) TF Serving's REST API, over the versioned SavedModels that
`indep-seg export` writes.

The official `tensorflow_model_server` binary cannot be installed on these machines, so
this server speaks the same wire API (the `tensorflow_serving.apis` protos and service
names), with TF Serving's status codes and messages, version policies and labels, hot
loading by polling, several models from a `ModelServerConfig` file, and server-side
batching. Clients use the unmodified `PredictionServiceStub` / `ModelServiceStub`.

Example:
    >>> server = ModelServer.from_base_path("horse", "exports/horse", port=0,
    ...                                     rest_api_port=0).start()   # doctest: +SKIP
    >>> server.port, server.rest_api_port                              # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import any_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from indep_seg.serving.batching import BatchScheduler
from indep_seg.serving.config import (
    BatchingOptions,
    ConfigError,
    model_server_config_from_flags,
    parse_model_server_config,
    read_model_server_config,
)
from indep_seg.serving.errors import ServingError, clip
from indep_seg.serving.limits import (
    DEFAULT_MAX_STRING_ELEMENTS,
    RequestLimits,
    declared_string_bytes,
    declared_tensor_size,
)
from indep_seg.serving.rest import make_rest_server
from indep_seg.serving.servables import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ModelManager,
    Poller,
    Servable,
    validate_spec_inputs,
)
from indep_seg.serving.tensors import tensor_proto_bytes, to_ndarray

log = logging.getLogger("indep_seg.serving")

__all__ = ["ServingCore", "ModelServer", "DEFAULT_MAX_MESSAGE_SIZE", "lean_malloc"]

_MALLOC = {"done": False, "trim": None}


def lean_malloc():
    """Keeps glibc's malloc from holding memory the server no longer uses (docs/serving.md,
    "Resident memory"): at most 2 malloc arenas (glibc's default is 8 per core, and each of the
    gRPC / REST / TensorFlow threads that allocates at the same time as another gets its own, whose
    freed pages are rarely given back), unless MALLOC_ARENA_MAX is set; returns `malloc_trim`
    (called after model loads and after bursts of requests), or None where there is no glibc.
    INDEP_SEG_SERVING_MALLOC=default leaves malloc as it is (for comparisons)."""
    if _MALLOC["done"]:
        return _MALLOC["trim"]
    _MALLOC["done"] = True
    if os.environ.get("INDEP_SEG_SERVING_MALLOC") == "default":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        if not os.environ.get("MALLOC_ARENA_MAX"):
            libc.mallopt(-8, 2)  # M_ARENA_MAX
        trim = libc.malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        _MALLOC["trim"] = trim
    except (OSError, AttributeError):  # not glibc
        pass
    return _MALLOC["trim"]


def trim_malloc():
    trim = _MALLOC["trim"]
    if trim is not None:
        trim(0)


#: Default cap on one request or response (bytes), gRPC and REST.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024

_STATE_ENUM = {
    "START": get_model_status_pb2.ModelVersionStatus.START,
    "LOADING": get_model_status_pb2.ModelVersionStatus.LOADING,
    "AVAILABLE": get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    "UNLOADING": get_model_status_pb2.ModelVersionStatus.UNLOADING,
    "END": get_model_status_pb2.ModelVersionStatus.END,
}


class ServingCore:
    """Request handling shared by the gRPC and REST front ends."""

    def __init__(
        self,
        manager: ModelManager,
        batcher: BatchScheduler | None = None,
        tensor_content: bool = False,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        limits: RequestLimits | None = None,
    ):
        self.manager = manager
        self.batcher = batcher
        self.tensor_content = tensor_content
        if limits is None:
            limits = RequestLimits(
                max_image_pixels=int(max_image_pixels), max_request_pixels=int(max_image_pixels)
            )
        self.limits = limits
        self.max_image_pixels = limits.max_image_pixels
        self.requests = 0  # Predicts run (read by the malloc trimmer)

    def check_tensor_protos(self, protos: dict):
        """Refuses a request whose `TensorProto`s declare, from their shapes alone, more than the
        request budget (`limits.max_tensor_bytes` in all, `limits.max_string_elements` strings,
        strings of more than `limits.max_tensor_bytes` bytes), before any array is built."""
        total_bytes = 0
        strings = 0
        string_bytes = 0
        for alias, proto in protos.items():
            try:
                elements, nbytes = declared_tensor_size(proto)
            except ValueError as e:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {clip(alias)}: {e}"
                ) from None
            total_bytes += nbytes
            if total_bytes > self.limits.max_tensor_bytes:
                raise ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{clip(alias)}: the input tensors of this request declare "
                    f"{total_bytes:,}+ bytes (shape {[d.size for d in proto.tensor_shape.dim]}), "
                    f"more than this server's budget of {self.limits.max_tensor_bytes:,} per "
                    "request",
                )
            if proto.dtype == types_pb2.DT_STRING:
                strings += max(elements, len(proto.string_val))
                if strings > self.limits.max_string_elements:
                    raise ServingError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{clip(alias)}: the request holds {strings}+ strings, more than this "
                        f"server's limit of {self.limits.max_string_elements} per request",
                    )
                string_bytes += declared_string_bytes(proto, elements)
                if string_bytes > self.limits.max_tensor_bytes:
                    raise ServingError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{clip(alias)}: the strings of this request declare {string_bytes:,}+ "
                        f"bytes, more than this server's budget of "
                        f"{self.limits.max_tensor_bytes:,} per request",
                    )

    def resolve(self, name, version=None, label=None, signature_name=""):
        if not name:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec: model_spec.name is empty"
            )
        servable = self.manager.get(name, version, label)
        return servable, servable.signature(signature_name)

    def predict(self, servable: Servable, sig, inputs: dict, output_filter=()) -> dict:
        self.requests += 1
        inputs = validate_spec_inputs(sig, inputs, servable.name, limits=self.limits)
        for alias in output_filter:
            if alias not in sig.outputs:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {clip(alias)} Outputs expected "
                    "to "
                    f"be in the set {{{','.join(sorted(sig.outputs))}}}.",
                )
        if self.batcher is not None:
            outputs = self.batcher.run(servable, sig, inputs)
        else:
            outputs = servable.run(sig, inputs)
        if output_filter:
            outputs = {k: v for k, v in outputs.items() if k in set(output_filter)}
        return outputs

    def signature_def_map(self, servable: Servable):
        sdm = get_model_metadata_pb2.SignatureDefMap()
        for key, sd in servable.signature_defs.items():
            sdm.signature_def[key].CopyFrom(sd)
        return sdm


def _model_spec(request_spec):
    version = request_spec.version.value if request_spec.HasField("version") else None
    label = (
        request_spec.version_label
        if request_spec.WhichOneof("version_choice") == "version_label"
        else None
    )
    return request_spec.name, version, label


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    def Predict(self, request, context):
        try:
            name, version, label = _model_spec(request.model_spec)
            servable, sig = self.core.resolve(
                name, version, label, request.model_spec.signature_name
            )
            self.core.check_tensor_protos(request.inputs)
            inputs = {}
            for alias, proto in request.inputs.items():
                try:
                    inputs[alias] = to_ndarray(proto, self.core.limits.max_tensor_bytes)
                except Exception:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {clip(alias)}"
                    ) from None
            outputs = self.core.predict(servable, sig, inputs, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig.name
            for alias, value in outputs.items():
                # parsed straight into the map entry: a CopyFrom of a 128x128 mask costs 0.1 ms
                response.outputs[alias].MergeFromString(
                    tensor_proto_bytes(value, self.core.tensor_content)
                )
            return response
        except ServingError as e:
            log.debug("Predict: %s %s", e.code.name, e.message)
            context.abort(e.code, e.message)

    def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for f in fields:
                if f != "signature_def":
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Metadata field {clip(f)} is not supported",
                    )
            name, version, label = _model_spec(request.model_spec)
            if not name:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            servable = self.core.manager.get(name, version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            packed = any_pb2.Any()
            packed.Pack(self.core.signature_def_map(servable))
            response.metadata["signature_def"].CopyFrom(packed)
            return response
        except ServingError as e:
            context.abort(e.code, e.message)

    def _unimplemented(self, what, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{what} is not supported by this server: the served models are image -> mask "
            "segmenters with Predict signatures (serving_default, segment_in_box, "
            "segment_bytes); use Predict",
        )

    def Classify(self, request, context):
        self._unimplemented("Classify", context)

    def Regress(self, request, context):
        self._unimplemented("Regress", context)

    def MultiInference(self, request, context):
        self._unimplemented("MultiInference", context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore, server: "ModelServer"):
        self.core = core
        self.server = server

    def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            name, version, label = _model_spec(request.model_spec)
            if label is not None:
                version = self.core.manager.get(name, None, label).version
            response = get_model_status_pb2.GetModelStatusResponse()
            for st in self.core.manager.status(name, version):
                vs = response.model_version_status.add()
                vs.version = st.version
                vs.state = _STATE_ENUM[st.state]
                vs.status.error_code = st.error_code
                vs.status.error_message = st.error_message
            return response
        except ServingError as e:
            context.abort(e.code, e.message)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        # As model_service_impl.cc: only a config whose oneof is model_config_list (an empty list
        # included, which unloads every model) is applied; an empty ModelServerConfig or a
        # custom_model_config is refused and nothing changes.
        if request.config.WhichOneof("config") != "model_config_list":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "ServerConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported",
            )
        try:
            self.server.reload_config(request.config)
        except ConfigError as e:
            e = ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            context.abort(e.code, e.message)
        except ServingError as e:
            context.abort(e.code, e.message)
        return response


class ModelServer:
    """gRPC (+ optional REST) server over a `ModelServerConfig`.

    Args:
        config: a `ModelServerConfig` proto.
        host: interface to listen on (127.0.0.1 unless told otherwise).
        port: gRPC port (0: a free port, read back from `.port`).
        rest_api_port: REST port (None: no REST server; 0: a free port).
        batching: `BatchingOptions` to enable server-side batching, or None.
        file_system_poll_wait_seconds: base-path polling interval (0: only at start / reload).
        max_message_size: cap in bytes on a request or response (gRPC and REST).
        tensor_content: answer with `tensor_content` instead of typed fields (`float_val`).
        grpc_max_threads: gRPC worker threads (concurrent requests).
        model_config_file: path re-read every `model_config_file_poll_wait_seconds` (> 0).
        max_image_pixels: cap on the pixels an encoded image (`segment_bytes`) may declare.
        max_request_pixels: cap on the pixels all encoded images of one request declare together
            (default `max_image_pixels`).
        max_string_elements: cap on the strings (encoded images) of one request.
        max_tensor_bytes: cap on the bytes the input tensors of one request declare by their shapes
            (default `max_message_size`: a TensorProto repeats its last value up to its shape, so
            without it a tiny message could claim any size).
        model_base_path_prefix: reloads (and the start config) may only name base paths inside this
            folder; None (default) allows any, as TF Serving does. The environment variable
            INDEP_SEG_MODEL_BASE_PATH_PREFIX sets it when the argument is not given.
        rest_read_timeout: seconds a REST client has to send one whole request (head and body) once
            it has started; slower ones get 408 and are disconnected (slowloris).
        rest_idle_timeout: seconds a REST keep-alive connection may wait for its next request.
        rest_max_connections: open REST connections at most; more are answered 503 and closed.
    """

    def __init__(
        self,
        config,
        host: str = "127.0.0.1",
        port: int = 8500,
        rest_api_port: int | None = None,
        batching: BatchingOptions | None = None,
        file_system_poll_wait_seconds: float = 1.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        tensor_content: bool = False,
        grpc_max_threads: int = 32,
        model_config_file=None,
        model_config_file_poll_wait_seconds: float = 0.0,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_request_pixels: int | None = None,
        max_string_elements: int = DEFAULT_MAX_STRING_ELEMENTS,
        max_tensor_bytes: int | None = None,
        model_base_path_prefix=None,
        rest_read_timeout: float = 30.0,
        rest_idle_timeout: float = 60.0,
        rest_max_connections: int = 64,
    ):
        lean_malloc()
        self.host = host
        self.requested_port = int(port)
        self.requested_rest_port = rest_api_port
        self.max_message_size = int(max_message_size)
        self.grpc_max_threads = int(grpc_max_threads)
        self.rest_options = dict(
            read_timeout=float(rest_read_timeout),
            idle_timeout=float(rest_idle_timeout),
            max_connections=int(rest_max_connections),
        )
        if model_base_path_prefix is None:
            model_base_path_prefix = os.environ.get("INDEP_SEG_MODEL_BASE_PATH_PREFIX") or None
        self.manager = ModelManager(base_path_prefix=model_base_path_prefix)
        self.manager.reload_config(config)
        self.batcher = BatchScheduler(batching) if batching is not None else None
        limits = RequestLimits(
            max_image_pixels=int(max_image_pixels),
            max_request_pixels=int(
                max_request_pixels if max_request_pixels is not None else max_image_pixels
            ),
            max_tensor_bytes=int(
                max_tensor_bytes if max_tensor_bytes is not None else max_message_size
            ),
            max_string_elements=int(max_string_elements),
        )
        self.core = ServingCore(self.manager, self.batcher, tensor_content, limits=limits)
        self.model_config_file = Path(model_config_file) if model_config_file else None
        self._config_text = self.model_config_file.read_text() if self.model_config_file else None
        self._poller = Poller(self.manager, file_system_poll_wait_seconds)
        self._config_poller = None
        if self.model_config_file and model_config_file_poll_wait_seconds > 0:
            self._config_poller = _ConfigFilePoller(self, model_config_file_poll_wait_seconds)
        self._grpc = None
        self._rest = None
        self._rest_thread = None
        self.health = health.HealthServicer()
        self.port = None
        self.rest_api_port = None

    @classmethod
    def from_base_path(cls, model_name: str, model_base_path, **kwargs) -> "ModelServer":
        return cls(model_server_config_from_flags(model_name, str(model_base_path)), **kwargs)

    @classmethod
    def from_config_file(cls, path, **kwargs) -> "ModelServer":
        return cls(read_model_server_config(path), model_config_file=path, **kwargs)

    def reload_config(self, config):
        try:
            self.manager.reload_config(config)
        finally:
            trim_malloc()  # a load's temporary graphs, an unloaded version
        self._set_health()

    def _set_health(self):
        status = health_pb2.HealthCheckResponse.SERVING
        self.health.set("", status)
        self.health.set("tensorflow.serving.PredictionService", status)
        self.health.set("tensorflow.serving.ModelService", status)
        for name in self.manager.model_names():
            self.health.set(name, status)

    def start(self) -> "ModelServer":
        options = [
            ("grpc.max_receive_message_length", self.max_message_size),
            ("grpc.max_send_message_length", self.max_message_size),
            ("grpc.so_reuseport", 0),
        ]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.grpc_max_threads, thread_name_prefix="grpc"
            ),
            options=options,
            maximum_concurrent_rpcs=None,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core), self._grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core, self), self._grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.port = self._grpc.add_insecure_port(f"{host}:{self.requested_port}")
        if self.port == 0:
            raise OSError(
                f"--port {self.requested_port}: cannot listen on {self.host}:{self.requested_port}"
            )
        self._grpc.start()
        if self.requested_rest_port is not None:
            self._rest = make_rest_server(
                self.core,
                self.host,
                self.requested_rest_port,
                self.max_message_size,
                **self.rest_options,
            )
            self.rest_api_port = self._rest.server_address[1]
            self._rest_thread = threading.Thread(
                target=self._rest.serve_forever, name="rest", daemon=True
            )
            self._rest_thread.start()
        self._set_health()
        trim_malloc()
        self._poller.start()
        self._trimmer = _Trimmer(self.core)
        self._trimmer.start()
        if self._config_poller is not None:
            self._config_poller.start()
        log.info(
            "serving %s on gRPC %s:%s%s",
            ", ".join(self.manager.model_names()),
            self.host,
            self.port,
            f", REST {self.host}:{self.rest_api_port}" if self._rest else "",
        )
        return self

    def stop(self, grace: float | None = 1.0):
        self.health.enter_graceful_shutdown()
        self._poller.stop()
        if getattr(self, "_trimmer", None) is not None:
            self._trimmer.stop()
        if self._config_poller is not None:
            self._config_poller.stop()
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self.batcher is not None:
            self.batcher.stop()

    def wait(self):
        if self._grpc is not None:
            self._grpc.wait_for_termination()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _Trimmer(threading.Thread):
    """Gives freed heap back to the system (`malloc_trim`) once requests have stopped for a
    moment: a burst of large requests otherwise leaves its peak resident for good."""

    def __init__(self, core: ServingCore, interval: float = 2.0):
        super().__init__(name="malloc-trim", daemon=True)
        self.core = core
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self):
        if _MALLOC["trim"] is None:
            return

        def work():
            return self.core.requests, self.core.manager.generation

        seen = trimmed = work()
        while not self._stop_event.wait(self.interval):
            now = work()
            if (
                now == seen and now != trimmed
            ):  # quiet for one interval after some work or a (un)load
                trim_malloc()
                trimmed = now
            seen = now

    def stop(self):
        self._stop_event.set()
        self.join(timeout=5)


class _ConfigFilePoller(threading.Thread):
    """Re-reads `--model_config_file`; a malformed file is logged and the old config kept."""

    def __init__(self, server: ModelServer, interval: float):
        super().__init__(name="config-poller", daemon=True)
        self.server = server
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            try:
                text = self.server.model_config_file.read_text()
            except OSError as e:
                log.warning(
                    "--model_config_file %s: cannot read it (%s); keeping the current config",
                    self.server.model_config_file,
                    e,
                )
                continue
            if text == self.server._config_text:
                continue

            try:
                config = parse_model_server_config(text, str(self.server.model_config_file))
            except ConfigError as e:
                log.warning("%s; keeping the current config", e)
                self.server._config_text = text
                continue
            self.server._config_text = text
            try:
                self.server.reload_config(config)
            except ServingError as e:
                log.warning(
                    "%s: %s; the previous version labels stay",
                    self.server.model_config_file,
                    e.message,
                )
            log.info("reloaded %s", self.server.model_config_file)

    def stop(self):
        self._stop_event.set()
        self.join(timeout=5)

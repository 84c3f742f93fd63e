"""Text-format configuration files of tensorflow_model_server.

- `--model_config_file`: a `tensorflow.serving.ModelServerConfig` (the proto shipped in
  `tensorflow_serving.config.model_server_config_pb2`), e.g.::

      model_config_list {
        config { name: "horse" base_path: "/models/horse" model_platform: "tensorflow"
                 model_version_policy { specific { versions: 1 versions: 2 } }
                 version_labels { key: "stable" value: 1 } }
      }

- `--batching_parameters_file`: a `tensorflow.serving.BatchingParameters`. Its proto
  (`session_bundle_config.proto`) is not part of the tensorflow-serving-api wheel, so
  the message is declared here with the same package, field names, numbers and types;
  TF Serving's own files parse unchanged, e.g.::

      max_batch_size { value: 32 }
      batch_timeout_micros { value: 1000 }
      num_batch_threads { value: 2 }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,  # noqa: F401  (registers google/protobuf/wrappers.proto)
)
from tensorflow_serving.config import model_server_config_pb2

__all__ = [
    "ConfigError",
    "parse_model_server_config",
    "model_server_config_from_flags",
    "BatchingOptions",
    "parse_batching_parameters",
    "BatchingParametersProto",
]


class ConfigError(ValueError):
    """A configuration file that cannot be used: the message names the file and the problem."""


def parse_model_server_config(text: str, source: str = "<model config>"):
    """Parses and validates a text-format `ModelServerConfig`."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ConfigError(f"{source}: not a valid text-format ModelServerConfig: {e}") from None
    validate_model_server_config(config, source)
    return config


def validate_model_server_config(config, source: str = "<model config>"):
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported; use model_config_list")
    names = set()
    for i, mc in enumerate(config.model_config_list.config):
        where = f"{source}: model_config_list.config[{i}]"
        if not mc.name:
            raise ConfigError(f"{where}: 'name' is empty")
        if mc.name in names:
            raise ConfigError(f"{where}: model name {mc.name!r} appears twice")
        names.add(mc.name)
        if not mc.base_path:
            raise ConfigError(f"{where} ({mc.name}): 'base_path' is empty")
        if mc.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"{where} ({mc.name}): model_platform {mc.model_platform!r} is not "
                "supported (only 'tensorflow')"
            )
        policy = mc.model_version_policy
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise ConfigError(f"{where} ({mc.name}): latest.num_versions must be >= 0")
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ConfigError(f"{where} ({mc.name}): specific policy lists no versions")
        for label, version in mc.version_labels.items():
            if version <= 0:
                raise ConfigError(
                    f"{where} ({mc.name}): version label {label!r} -> {version}: "
                    "expected a positive version"
                )
    return config


def read_model_server_config(path) -> object:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--model_config_file {path}: cannot read it ({e.strerror})") from None
    return parse_model_server_config(text, str(path))


def model_server_config_from_flags(model_name: str, model_base_path: str):
    """The one-model config that `--model_name` / `--model_base_path` stand for."""
    config = model_server_config_pb2.ModelServerConfig()
    mc = config.model_config_list.config.add()
    mc.name = model_name
    mc.base_path = str(model_base_path)
    mc.model_platform = "tensorflow"
    return config


# ---------------------------------------------------------------- BatchingParameters


def _batching_parameters_class():
    fdp = descriptor_pb2.FileDescriptorProto(
        name="indep_seg/serving/session_bundle_config_subset.proto",
        package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    msg = fdp.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    wrapped = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("max_execution_batch_size", 10, ".google.protobuf.Int64Value"),
    ]
    for name, number, type_name in wrapped:
        msg.field.add(
            name=name,
            number=number,
            type=F.TYPE_MESSAGE,
            type_name=type_name,
            label=F.LABEL_OPTIONAL,
        )
    msg.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    msg.field.add(
        name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL
    )
    msg.field.add(
        name="enable_large_batch_splitting",
        number=9,
        type=F.TYPE_MESSAGE,
        type_name=".google.protobuf.BoolValue",
        label=F.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


BatchingParametersProto = _batching_parameters_class()


@dataclass
class BatchingOptions:
    """Server-side batching, with TF Serving's `BatchingParameters` meanings.

    Defaults as TF Serving's `--enable_batching` without a parameters file, except
    `num_batch_threads` (TF uses the core count; 2 here keeps a small machine responsive)."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2
    allowed_batch_sizes: list = field(default_factory=list)
    pad_variable_length_inputs: bool = False

    def validate(self, source="batching parameters"):
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ConfigError(
                f"{source}: batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}"
            )
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if sorted(sizes) != sizes or len(set(sizes)) != len(sizes) or sizes[0] < 1:
                raise ConfigError(
                    f"{source}: allowed_batch_sizes must be increasing positive integers, "
                    f"got {sizes}"
                )
            if sizes[-1] != self.max_batch_size:
                raise ConfigError(
                    f"{source}: the last entry of allowed_batch_sizes ({sizes[-1]}) must "
                    f"equal max_batch_size ({self.max_batch_size})"
                )
        return self


def parse_batching_parameters(text: str, source: str = "<batching parameters>") -> BatchingOptions:
    proto = BatchingParametersProto()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        raise ConfigError(f"{source}: not a valid text-format BatchingParameters: {e}") from None
    opts = BatchingOptions()
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
    ):
        if proto.HasField(name):
            setattr(opts, name, int(getattr(proto, name).value))
    if proto.HasField("max_execution_batch_size"):
        opts.max_batch_size = max(opts.max_batch_size, int(proto.max_execution_batch_size.value))
    opts.allowed_batch_sizes = [int(s) for s in proto.allowed_batch_sizes]
    opts.pad_variable_length_inputs = bool(proto.pad_variable_length_inputs)
    return opts.validate(source)


def read_batching_parameters(path) -> BatchingOptions:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(
            f"--batching_parameters_file {path}: cannot read it ({e.strerror})"
        ) from None
    return parse_batching_parameters(text, str(path))

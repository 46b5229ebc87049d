"""The files in serve/ parse as the protobuf messages TensorFlow Serving reads them into."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,  # noqa: F401 - puts wrappers.proto in the default pool
)

from nmt.serving import read_model_config

SERVE = Path(__file__).resolve().parent.parent / "serve"


def upstream_messages() -> dict[str, type]:
    """BatchingParameters and MonitoringConfig, field for field as in TF Serving's
    session_bundle_config.proto and monitoring_config.proto (the tensorflow-serving-api wheel
    ships only the model-server protos)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
        wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="serving_configs.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = proto.message_type.add(name="BatchingParameters")
    for number, (name, kind) in enumerate([("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
                                           ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
                                           ("thread_pool_name", "StringValue")], start=1):
        batching.field.add(name=name, number=number, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                           type_name=f".google.protobuf.{kind}")
    batching.field.add(name="allowed_batch_sizes", number=6, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                         type_name=".tensorflow.serving.PrometheusConfig")
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
            for name in ("BatchingParameters", "MonitoringConfig")}


def test_models_config_is_a_model_server_config() -> None:
    from tensorflow_serving.config import model_server_config_pb2

    message = text_format.Parse((SERVE / "models.config").read_text(encoding="utf-8"),
                                model_server_config_pb2.ModelServerConfig())
    names = [c.name for c in message.model_config_list.config]
    assert names == ["en-ja", "lm-en"]
    for config in message.model_config_list.config:
        assert config.model_platform == "tensorflow"
        assert config.model_version_policy.latest.num_versions == 1
        # TF Serving refuses relative base paths; /serve is where docker-compose.yml mounts serve/.
        assert config.base_path.startswith("/serve/models/")
    # nmt serve reads the very same file, /serve mapped to the file's folder like the volume.
    entries = read_model_config(SERVE / "models.config")
    assert [(e.name, e.base_path, e.policy) for e in entries] == [
        ("en-ja", SERVE / "models/en-ja", "latest"), ("lm-en", SERVE / "models/lm-en", "latest")]


def test_batching_and_monitoring_files_parse() -> None:
    messages = upstream_messages()
    batching = text_format.Parse((SERVE / "batching_parameters.txt").read_text(encoding="utf-8"),
                                 messages["BatchingParameters"]())
    assert batching.max_batch_size.value == 32 and batching.batch_timeout_micros.value == 5000
    assert batching.pad_variable_length_inputs
    monitoring = text_format.Parse((SERVE / "monitoring.config").read_text(encoding="utf-8"),
                                   messages["MonitoringConfig"]())
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path.startswith("/monitoring/")
    with pytest.raises(text_format.ParseError):  # the parser is strict: a typo does not pass
        text_format.Parse("max_batch_sise { value: 1 }", messages["BatchingParameters"]())


def test_docker_compose_serves_the_same_files_with_matching_versions() -> None:
    compose = yaml.safe_load((SERVE / "docker-compose.yml").read_text(encoding="utf-8"))
    service = compose["services"]["tensorflow-serving"]
    image, tag = service["image"].split(":")
    assert image == "tensorflow/serving"
    # The server's TensorFlow is the package's: the ranges pyproject.toml declares and the versions
    # constraints.txt pins (tensorflow-serving-api too: its protos read models.config).
    minor = ".".join(tag.split(".")[:2])
    pyproject = (SERVE.parent / "pyproject.toml").read_text(encoding="utf-8")
    constraints = (SERVE.parent / "constraints.txt").read_text(encoding="utf-8").splitlines()
    for package in ("tensorflow", "tensorflow-text", "tensorflow-serving-api"):
        assert f'"{package}>={minor},' in pyproject
        assert any(line.startswith(f"{package}=={minor}.") for line in constraints), package
    flags = " ".join(service["command"])
    for name in ("models.config", "batching_parameters.txt", "monitoring.config"):
        assert f"/serve/{name}" in flags
    assert service["volumes"] == ["./:/serve:ro"]
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])  # this machine only


def test_mounts_map_server_paths_like_a_docker_volume(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "a" base_path: "/srv/models/a" } '
                      'config { name: "b" base_path: "rel/b" } }', encoding="utf-8")
    entries = read_model_config(config, {"/srv": str(tmp_path / "here")})
    assert [e.base_path for e in entries] == [tmp_path / "here" / "models" / "a", tmp_path / "rel" / "b"]

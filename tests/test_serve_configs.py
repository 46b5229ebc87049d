"""The files in serve/ parse as the protobuf messages TensorFlow Serving reads them into."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format

from nmt.errors import NmtError
from nmt.serving import Limits, read_model_config
from nmt.serving.config import read_batching_parameters, read_monitoring_config, upstream_messages

SERVE = Path(__file__).resolve().parent.parent / "serve"


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
    # What nmt-model-server takes from them: the batch size and wait, the metrics path.
    limits = read_batching_parameters(SERVE / "batching_parameters.txt", Limits(batching=False))
    assert (limits.batching, limits.max_batch_size, limits.max_wait_ms) == (True, 32, 5.0)
    monitoring = read_monitoring_config(SERVE / "monitoring.config")
    assert monitoring.enabled and monitoring.path == "/monitoring/prometheus/metrics"


def test_a_typo_in_a_batching_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 }\nbatch_timeout_micro { value: 1 }\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"batching.txt: not a BatchingParameters text proto: 2:1 .*batch_timeout_micro"):
        read_batching_parameters(path, Limits())


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


def test_versions_are_integer_folder_names_selected_by_policy_and_labels_read(tmp_path: Path) -> None:
    from nmt.serving.config import versions_to_serve

    for name in ("00000123", "7", "0009", "notaversion", "１２"):  # the last: full-width digits, not a version
        (tmp_path / "m" / name).mkdir(parents=True)
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "m" '
                      'model_version_policy { specific { versions: 9 versions: 123 versions: 5 } } '
                      'version_labels { key: "stable" value: 9 } } }', encoding="utf-8")
    (entry,) = read_model_config(config)
    assert entry.labels == {"stable": 9}
    assert versions_to_serve(entry) == {9: tmp_path / "m" / "0009", 123: tmp_path / "m" / "00000123"}
    entry.policy, entry.versions = "latest", [2]
    assert list(versions_to_serve(entry)) == [9, 123]
    entry.policy = "all"
    assert list(versions_to_serve(entry)) == [7, 9, 123]
    config.write_text('model_config_list { config { name: "a" base_path: "a" } config { name: "a" base_path: "b" } }',
                      encoding="utf-8")
    with pytest.raises(NmtError, match="model name\\(s\\) given twice: a"):
        read_model_config(config)

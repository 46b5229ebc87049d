"""`nmt-model-server` and `nmt serve --grpc-port` as a drop-in TensorFlow Serving: SavedModels nmt did
not write (TF Serving's own half_plus_two and half_plus_three from tests/data/tfserving, and built
here where those have no such thing: a TF1 linear graph with a classify signature, a TF2 module of
many dtypes, binary strings), both APIs against real servers with real clients (HTTP and TF Serving's own gRPC
stubs), TF Serving's documented REST answers, version folders appearing while clients call,
version labels, a model config reloaded, and the metrics read by a Prometheus parser."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import saved_models
import tensorflow as tf
import yaml
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from conftest import call, free_ports, wait_until, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "tests" / "data" / "tfserving"  # TF Serving's own test models
POLL_S = 1


def start_model_server(args: list[str], rest_port: int, cwd: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A real `nmt-model-server` process; returns it and its REST base URL once it answers."""
    log = open(Path(cwd or ".") / f"server-{rest_port}.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed by stop
    process = subprocess.Popen([sys.executable, "-m", "nmt.cli.model_server", "--host", "127.0.0.1", *args],
                               stderr=log, stdout=log, text=True, cwd=cwd)
    process.log = log  # type: ignore[attr-defined]

    def log_text() -> str:
        log.seek(0)
        return log.read()

    return process, wait_until_serving(process, rest_port, log_text)


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    process.wait(timeout=60)
    process.log.seek(0)  # type: ignore[attr-defined]
    text = process.log.read()  # type: ignore[attr-defined]
    process.log.close()  # type: ignore[attr-defined]
    return text


def example(**features: float) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        name: tf.train.Feature(float_list=tf.train.FloatList(value=[value])) for name, value in features.items()}))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """nmt-model-server over TF Serving's own half_plus_three (tests/data/tfserving, version folder
    00000123), a linear model with a classify signature, a "switch" model whose version 1 is TF
    Serving's half_plus_two, a TF2 model of many dtypes, a binary-string model with a version label;
    gRPC and REST, batching and monitoring files, version folders polled every second."""
    root = tmp_path_factory.mktemp("dropin")
    shutil.copytree(TESTDATA / "saved_model_half_plus_three", root / "half_plus_three")
    saved_models.linear(root / "linear" / "1")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", root / "switch" / "1")
    saved_models.mixed(root / "mixed" / "1")
    saved_models.binary(root / "binary" / "7")
    shutil.copytree(root / "binary" / "7", root / "binary" / "8")
    (root / "models.config").write_text("""model_config_list {
  config { name: "half_plus_three" base_path: "half_plus_three" model_platform: "tensorflow" }
  config { name: "linear" base_path: "linear" }
  config { name: "switch" base_path: "switch" }
  config { name: "mixed" base_path: "mixed" }
  config {
    name: "binary" base_path: "binary"
    model_version_policy { specific { versions: 7 versions: 8 } }
    version_labels { key: "stable" value: 7 }
    version_labels { key: "canary" value: 8 }
  }
}
""", encoding="utf-8")
    (root / "batching.txt").write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
                                       "num_batch_threads { value: 2 }\npad_variable_length_inputs: true\n")
    (root / "monitoring.config").write_text('prometheus_config { enable: true path: "/metrics/prom" }\n')
    grpc_port, rest_port = free_ports(2)
    process, base = start_model_server(
        [f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--model_config_file={root / 'models.config'}",
         f"--file_system_poll_wait_seconds={POLL_S}", "--enable_batching=true",
         f"--batching_parameters_file={root / 'batching.txt'}",
         f"--monitoring_config_file={root / 'monitoring.config'}"],
        rest_port, cwd=root)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    yield {"base": base, "root": root, "channel": channel,
           "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "models": model_service_pb2_grpc.ModelServiceStub(channel)}
    channel.close()
    stop(process)


# --- REST, as TF Serving's documentation shows it ------------------------------------------------


def test_the_rest_examples_of_tf_servings_documentation(served) -> None:
    """api_rest.md's half_plus_three session, request for request and answer for answer."""
    base = served["base"]
    assert call(f"{base}/v1/models/half_plus_three") == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert call(f"{base}/v1/models/half_plus_three:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [3.5, 4.0, 5.5]})
    assert call(f"{base}/v1/models/half_plus_three:regress", {
        "signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}) == (
        200, {"results": [3.5, 4.0]})
    assert call(f"{base}/v1/models/half:predict", {"instances": [1.0, 5.0]}) == (
        404, {"error": "Servable not found for request: Latest(half)"})


def test_a_version_folder_with_leading_zeros_is_its_integer(served) -> None:
    base = served["base"]
    assert call(f"{base}/v1/models/half_plus_three/versions/123:predict", {"inputs": {"x": [0.0]}}) == (
        200, {"outputs": [3.0]})
    assert call(f"{base}/v1/models/half_plus_three/versions/00000123")[0] == 200
    code, body = call(f"{base}/v1/models/half_plus_three/versions/124:predict", {"instances": [1.0]})
    assert code == 404 and body["error"] == "Servable not found for request: Specific(half_plus_three, 124)"
    code, body = call(f"{base}/v1/models/half_plus_three/versions/123/metadata")
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert code == 200 and body["model_spec"]["version"] == "123"
    assert {k: v["method_name"] for k, v in defs.items()} == {
        "serving_default": "tensorflow/serving/predict", "tensorflow/serving/regress": "tensorflow/serving/regress"}


def test_classify_and_regress_with_context(served) -> None:
    base = served["base"]
    code, body = call(f"{base}/v1/models/linear:classify", {
        "signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}, {"x": -8.0}]})
    assert code == 200 and body == {"results": [[["low", -3.5], ["high", 3.5]], [["low", 1.0], ["high", -1.0]]]}
    # The context's features go with every example.
    code, body = call(f"{base}/v1/models/half_plus_three:regress", {
        "signature_name": "tensorflow/serving/regress", "context": {"x": 4.0}, "examples": [{}, {}]})
    assert (code, body) == (200, {"results": [5.0, 5.0]})
    # A signature of another method is refused, as TF Serving refuses it.
    code, body = call(f"{base}/v1/models/linear:classify", {
        "signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]})
    assert code == 400 and "Expected classify signature method_name to be tensorflow/serving/classify" in body["error"]
    code, body = call(f"{base}/v1/models/half_plus_three:regress", {"examples": [{"x": 1.0}]})
    assert code == 400 and "Was: tensorflow/serving/predict" in body["error"]
    code, body = call(f"{base}/v1/models/half_plus_three:regress", {
        "signature_name": "tensorflow/serving/regress", "context": {"x": 1.0}, "examples": [{"x": 2.0}]})
    assert code == 400 and "also in \"context\"" in body["error"]
    code, body = call(f"{base}/v1/models/half_plus_three:explain", {"instances": [1.0]})
    assert code == 404 and "expected :predict, :classify or :regress" in body["error"]


def test_every_dtype_of_the_json_mapping_in_both_formats(served) -> None:
    base = served["base"]
    row = {"tag": "héllo", "signal": [1, 2, 3.5], "count": 2, "flag": True, "small": 254, "half": 1.5}
    code, body = call(f"{base}/v1/models/mixed:predict", {"instances": [row]})
    assert code == 200 and body["predictions"] == [{"tag_length": 5, "total": 13.0, "flipped": False,
                                                    "small_plus_one": 255, "half_doubled": 3.0, "upper": "HéLLO"}]
    # NaN and Infinity are float values (TF Serving's JSON conformance), in requests and answers.
    raw = (b'{"inputs": {"tag": ["a", "b"], "signal": [[NaN, 0, 1], [1, 1, 1]], "count": [1, 3], '
           b'"flag": [false, true], "small": [0, 1], "half": [Infinity, -2]}}')
    request = urllib.request.Request(f"{base}/v1/models/mixed:predict", data=raw)
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()
    assert '"total":[NaN,9.0]' in text and '"half_doubled":[Infinity,-4.0]' in text
    outputs = json.loads(text)["outputs"]
    assert outputs["flipped"] == [True, False] and outputs["small_plus_one"] == [1, 2]
    for bad, message in [({"small": 256}, "input small: integers out of the uint8 range"),
                         ({"half": 1e6}, "input half: numbers outside the float16 range"),
                         ({"count": 1.5}, "input count: expected integers (int64)"),
                         ({"flag": 1}, "input flag: expected true or false"),
                         ({"tag": 5}, "input tag: expected strings")]:
        code, body = call(f"{base}/v1/models/mixed:predict", {"instances": [{**row, **bad}]})
        assert code == 400 and body["error"].startswith(message), body


def test_binary_strings_go_in_and_out_as_base64(served) -> None:
    base = served["base"]
    data = bytes(range(256))  # not UTF-8
    code, body = call(f"{base}/v1/models/binary:predict",
                      {"instances": [{"b64": base64.b64encode(data).decode()}, "text"]})
    assert code == 200
    first, second = body["predictions"]
    assert first["size"] == 256 and base64.b64decode(first["reversed_bytes"]["b64"]) == data[::-1]
    assert base64.b64decode(second["reversed_bytes"]["b64"]) == b"txet"  # *_bytes outputs are always b64
    code, body = call(f"{base}/v1/models/binary:predict", {"instances": [{"b64": "not base64!"}]})
    assert code == 400 and "\"b64\" must be base64" in body["error"]


def test_version_labels_and_the_specific_policy(served) -> None:
    base = served["base"]
    status = call(f"{base}/v1/models/binary")[1]["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("8", "AVAILABLE"), ("7", "AVAILABLE")]
    assert call(f"{base}/v1/models/binary/labels/stable")[1]["model_version_status"][0]["version"] == "7"
    assert call(f"{base}/v1/models/binary/labels/canary/metadata")[1]["model_spec"]["version"] == "8"
    assert call(f"{base}/v1/models/binary/labels/canary:predict", {"instances": ["ab"]})[1] == {
        "predictions": [{"size": 2, "reversed_bytes": {"b64": base64.b64encode(b"ba").decode()}}]}
    code, body = call(f"{base}/v1/models/binary/labels/nightly:predict", {"instances": ["ab"]})
    assert code == 404 and body["error"] == "Unrecognized servable version label: nightly"


# --- gRPC, with tensorflow-serving-api's stubs -----------------------------------------------------


def test_grpc_predict_classify_regress_and_multi_inference(served) -> None:
    stub = served["predict"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_three"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0, 5.0], dtype=tf.float32))
    response = stub.Predict(request, 30)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [3.5, 4.0, 5.5])
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (123, "serving_default")

    mixed = predict_pb2.PredictRequest()
    mixed.model_spec.name = "mixed"
    for name, value, dtype in [("tag", [b"ab"], tf.string), ("signal", [[1.0, 2.0, 3.0]], tf.float64),
                               ("count", [2], tf.int64), ("flag", [True], tf.bool), ("small", [7], tf.uint8),
                               ("half", [0.5], tf.float16)]:
        mixed.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    mixed.output_filter.extend(["total", "upper"])
    outputs = stub.Predict(mixed, 30).outputs
    assert sorted(outputs) == ["total", "upper"] and tf.make_ndarray(outputs["total"]).tolist() == [12.0]
    assert tf.make_ndarray(outputs["upper"]).tolist() == [b"AB"]

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "linear", "tensorflow/serving/classify"
    classify.input.example_list.examples.extend([example(x=2.0), example(x=-6.0)])
    result = stub.Classify(classify, 30).result
    assert [[(c.label, c.score) for c in row.classes] for row in result.classifications] == [
        [("low", -4.0), ("high", 4.0)], [("low", 0.0), ("high", 0.0)]]

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "half_plus_three", "tensorflow/serving/regress"
    regress.input.example_list_with_context.context.CopyFrom(example(x=10.0))
    regress.input.example_list_with_context.examples.extend([tf.train.Example(), tf.train.Example()])
    assert [r.value for r in stub.Regress(regress, 30).result.regressions] == [8.0, 8.0]

    multi = inference_pb2.MultiInferenceRequest()
    multi.input.example_list.examples.append(example(x=4.0))
    for method in ("classify", "regress"):
        task = multi.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name, task.model_spec.signature_name = "linear", f"tensorflow/serving/{method}"
    results = stub.MultiInference(multi, 30).results
    assert [c.score for c in results[0].classification_result.classifications[0].classes] == [-5.0, 5.0]
    assert results[1].regression_result.regressions[0].value == 5.0


def test_grpc_metadata_and_model_status(served) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_three"
    response = served["predict"].GetModelMetadata(request, 30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert signature_map.signature_def["serving_default"].inputs["x"].dtype == tf.float32.as_datatype_enum
    assert signature_map.signature_def["tensorflow/serving/regress"].method_name == "tensorflow/serving/regress"
    assert sorted(signature_map.signature_def) == ["serving_default", "tensorflow/serving/regress"]

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "binary"
    status.model_spec.version_label = "stable"
    versions = served["models"].GetModelStatus(status, 30).model_version_status
    assert [(v.version, v.state, v.status.error_code) for v in versions] == [
        (7, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]


@pytest.mark.parametrize("change, code, message", [
    (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    (lambda r: r.model_spec.version.__setattr__("value", 99), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(half_plus_three, 99)"),
    (lambda r: setattr(r.model_spec, "signature_name", "bogus"), grpc.StatusCode.INVALID_ARGUMENT,
     "Serving signature name: \"bogus\" not found"),
    (lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(["a"])), grpc.StatusCode.INVALID_ARGUMENT,
     "input x: expects float32 but string is provided"),
    (lambda r: r.inputs["z"].CopyFrom(tf.make_tensor_proto([1.0])), grpc.StatusCode.INVALID_ARGUMENT,
     "Sent extra: {z}"),
    (lambda r: r.output_filter.append("w"), grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found"),
])
def test_grpc_errors_are_tf_servings_status_codes(served, change, code: grpc.StatusCode, message: str) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_three"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    change(request)
    with pytest.raises(grpc.RpcError) as raised:
        served["predict"].Predict(request, 30)
    assert raised.value.code() == code and message in raised.value.details()


def test_grpc_reload_config_serves_the_new_model_set(served) -> None:
    root, base = served["root"], served["base"]
    saved_models.linear(root / "reloaded" / "3", a=2.0, b=0.0)
    original = (root / "models.config").read_text(encoding="utf-8")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(original, model_server_config_pb2.ModelServerConfig())
    added = config.model_config_list.config.add(name="reloaded", base_path=str(root / "reloaded"))
    assert added.name == "reloaded"
    reload = model_management_pb2.ReloadConfigRequest(config=config)
    assert served["models"].HandleReloadConfigRequest(reload, 120).status.error_code == 0
    assert call(f"{base}/v1/models/reloaded:predict", {"instances": [1.5]}) == (200, {"predictions": [3.0]})
    back = model_management_pb2.ReloadConfigRequest(
        config=text_format.Parse(original, model_server_config_pb2.ModelServerConfig()))
    assert served["models"].HandleReloadConfigRequest(back, 120).status.error_code == 0
    assert call(f"{base}/v1/models/reloaded:predict", {"instances": [1.5]})[0] == 404


# --- versions appear while clients call; metrics --------------------------------------------------


def test_a_new_version_is_served_without_a_restart_or_a_failed_request(served) -> None:
    root, base, stub = served["root"], served["base"], served["predict"]
    failures: list[str] = []
    seen: set[float] = set()
    done = threading.Event()

    def rest_client() -> None:
        while not done.is_set():
            try:
                code, body = call(f"{base}/v1/models/switch:predict", {"instances": [1.0]})
                if code != 200:
                    failures.append(f"REST {code} {body}")
                else:
                    seen.add(body["predictions"][0])
            except Exception as error:  # noqa: BLE001 - every failure counts
                failures.append(f"REST {error!r}")

    def grpc_client() -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "switch"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
        while not done.is_set():
            try:
                seen.add(float(tf.make_ndarray(stub.Predict(request, 30).outputs["y"])[0]))
            except grpc.RpcError as error:
                failures.append(f"gRPC {error.code()} {error.details()}")

    clients = [threading.Thread(target=rest_client), threading.Thread(target=grpc_client)]
    for client in clients:
        client.start()
    try:
        time.sleep(1)
        # A new version is written aside and renamed into place, as `nmt export` writes one: TF
        # Serving's half_plus_three after its half_plus_two.
        shutil.copytree(TESTDATA / "saved_model_half_plus_three" / "00000123", root / "switch" / ".v2-partial")
        os.rename(root / "switch" / ".v2-partial", root / "switch" / "2")
        dropped = time.monotonic()
        while 3.5 not in seen and time.monotonic() - dropped < 120:
            time.sleep(0.1)
        switched_after = time.monotonic() - dropped
        time.sleep(1)
    finally:
        done.set()
        for client in clients:
            client.join(timeout=60)
    assert failures == []
    assert seen == {2.5, 3.5}, (seen, switched_after)
    # The policy serves the newest version only: the old one is unloaded once the new one answers.
    status = call(f"{base}/v1/models/switch")[1]["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]


def test_metrics_are_prometheus_text_with_tf_servings_names(served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    base = served["base"]
    for _ in range(3):
        call(f"{base}/v1/models/half_plus_three:predict", {"instances": [1.0]})
    call(f"{base}/v1/models/half_plus_three:predict", {"instances": ["not a number"]})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_three"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    served["predict"].Predict(request, 30)
    with urllib.request.urlopen(f"{base}/metrics/prom", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    counts = {(s.labels["model_name"], s.labels["status"]): s.value
              for s in families[":tensorflow:serving:request_count"].samples}
    assert counts[("half_plus_three", "OK")] >= 4 and counts[("half_plus_three", "INVALID_ARGUMENT")] >= 1
    latency = families[":tensorflow:serving:request_latency"]
    assert latency.type == "histogram"
    totals = {(s.labels["API"], s.labels["entrypoint"]): s.value for s in latency.samples
              if s.name.endswith("_count") and s.labels["model_name"] == "half_plus_three"}
    assert totals[("Predict", "REST")] >= 4 and totals[("Predict", "GRPC")] >= 1


# --- the command line: no model at start, config polling, docker-compose's flags ------------------


@pytest.mark.slow
def test_a_server_with_no_model_yet_serves_and_picks_up_models_and_configs(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "later" base_path: "later" } }', encoding="utf-8")
    grpc_port, rest_port = free_ports(2)
    process, base = start_model_server(
        [f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--model_config_file={config}",
         "--file_system_poll_wait_seconds=1", "--model_config_file_poll_wait_seconds=1"], rest_port, cwd=tmp_path)
    try:
        code, body = call(f"{base}/v1/models/later")
        assert code == 404 and "no version found under" in body["error"]
        assert "later" in call(f"{base}/healthz")[1]["failed"]
        saved_models.linear(tmp_path / "later" / ".tmp", a=3.0, b=0.0)
        os.rename(tmp_path / "later" / ".tmp", tmp_path / "later" / "5")
        later = f"{base}/v1/models/later:predict"
        assert wait_until(lambda: call(later, {"instances": [1.0]}) == (200, {"predictions": [3.0]}),
                          timeout_s=120, every_s=0.2)
        saved_models.linear(tmp_path / "second" / "1")
        config.write_text('model_config_list { config { name: "later" base_path: "later" } '
                          'config { name: "second" base_path: "second" } }', encoding="utf-8")
        assert wait_until(lambda: call(f"{base}/v1/models/second:predict", {"instances": [1.0]})[0] == 200,
                          timeout_s=120, every_s=0.2)
    finally:
        log = stop(process)
    assert "model later version 5 loaded" in log


@pytest.mark.slow
def test_docker_composes_flags_run_as_nmt_model_server(tmp_path: Path) -> None:
    """serve/docker-compose.yml's command, flag for flag (only the two port numbers swapped for free
    ones), with serve/ mounted at /serve as its volume does."""
    serve = tmp_path / "serve"
    shutil.copytree(ROOT / "serve", serve, ignore=shutil.ignore_patterns("models"))
    for name in ("en-ja", "lm-en"):  # any SavedModel stands in for the exports: TF Serving's half_plus_two
        shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", serve / "models" / name / "1")
    command = yaml.safe_load((ROOT / "serve" / "docker-compose.yml").read_text(encoding="utf-8"))[
        "services"]["tensorflow-serving"]["command"]
    grpc_port, rest_port = free_ports(2)
    flags = [re.sub(r"^--port=8500$", f"--port={grpc_port}", re.sub(r"^--rest_api_port=8501$",
                                                                      f"--rest_api_port={rest_port}", flag))
             for flag in command]
    assert flags != command and len(flags) == len(command)
    process, base = start_model_server(["--mount", f"/serve={serve}", *flags], rest_port, cwd=tmp_path)
    try:
        assert call(f"{base}/v1/models/lm-en:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})
        with urllib.request.urlopen(f"{base}/monitoring/prometheus/metrics", timeout=30) as response:
            assert ":tensorflow:serving:request_count" in response.read().decode()
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "en-ja"
        versions = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, 30).model_version_status
        assert [v.version for v in versions] == [1]
        channel.close()
    finally:
        stop(process)


@pytest.mark.parametrize("args, message", [
    (["--model_base_path=x", "--model_config_file=y"], "give either --model_config_file or --model_base_path"),
    (["--model_base_path=x", "--port=0"], "--port and --rest_api_port are both 0"),
    (["--model_base_path=x", "--rest_api_port=8500"], "gRPC and REST need their own ports"),
    (["--model_base_path=x", "--batching_parameters_file=b"], "--batching_parameters_file needs --enable_batching"),
    (["--model_base_path=x", "--enable_batching=maybe"], "expected true or false"),
    (["--model_config_file=missing.config", "--rest_api_port=1"], "model config not found: missing.config"),
])
def test_bad_flags_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "nmt.cli.model_server", *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.slow
def test_a_grpc_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "nmt.cli.model_server", "--host=127.0.0.1", f"--port={port}",
                               "--model_base_path=nothing-yet"], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"nmt-model-server: error: cannot listen for gRPC on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


# --- nmt serve --grpc-port: the README's snippet against an nmt export ----------------------------


@pytest.mark.slow
def test_the_readmes_grpc_snippet_runs_as_written(server) -> None:
    """The README's Python block after "gRPC", against `nmt serve --grpc-port` (its port put in)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"gRPC \(port 8500[^\n]*\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert "localhost:8500" in snippet
    port = server.grpc_address.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-c", snippet.replace("localhost:8500", f"localhost:{port}")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = ast.literal_eval(done.stdout.strip().splitlines()[-1])  # numpy prints [b'...'] for bytes
    code, rest = call(f"{server}/v1/models/en-ja:predict", {"signature_name": "translate",
                                                            "instances": ["Good morning."]})
    assert code == 200 and [t.decode("utf-8") for t in printed] == [rest["predictions"][0]["translations"]]


def test_a_version_that_fails_to_load_is_reported_and_retried_once_its_files_change(tmp_path: Path) -> None:
    from nmt.serving import Limits, ModelRegistry
    from nmt.serving.config import ModelEntry
    from nmt.serving.registry import Servable

    attempts: list[int] = []

    def load(name: str, version: int, path: Path, limits: Limits) -> Servable:
        attempts.append(version)
        return Servable(name, version, path, limits)

    broken = tmp_path / "m" / "3"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"half a file")
    registry = ModelRegistry([ModelEntry("m", tmp_path / "m", "latest", [1])], Limits(), load=load)
    assert registry.status("m") == [{"version": "3", "state": "END", "status": {
        "error_code": "UNKNOWN", "error_message": registry.ended["m"][3].error}}]
    assert registry.failures["m"].startswith("version 3: ") and "m" not in registry.models
    registry.sync()
    assert attempts == [3]  # unchanged files are not loaded again at every poll
    shutil.rmtree(broken)
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", broken)  # the copy completes
    registry.sync()
    assert attempts == [3, 3] and registry.resolve("m").version == 3 and "m" not in registry.failures
    assert registry.status("m")[0]["state"] == "AVAILABLE"


@pytest.mark.slow
def test_a_request_over_the_timeout_is_deadline_exceeded_on_both_apis(tmp_path: Path) -> None:
    """A model call that waits on a gate the test holds shut: 504 over REST after the 3 s allowed,
    however fast or slow the machine; over gRPC DEADLINE_EXCEEDED at the client's own deadline (5 s,
    not the REST timeout); an open gate answers."""
    saved_models.gated(tmp_path / "gated" / "1")
    (tmp_path / "open").touch()
    shut = tmp_path / "shut"  # created only once the timeouts were seen
    grpc_port, rest_port = free_ports(2)
    process, base = start_model_server(
        [f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--model_name=gated",
         f"--model_base_path={tmp_path / 'gated'}", "--rest_api_timeout_in_ms=3000"], rest_port, cwd=tmp_path)
    try:
        assert call(f"{base}/v1/models/gated:predict", {"instances": [str(tmp_path / "open")]}) == (
            200, {"predictions": [0]})
        code, body = call(f"{base}/v1/models/gated:predict", {"instances": [str(shut)]})
        assert code == 504 and body["error"].startswith("Deadline Exceeded: the request took over 3000 ms")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "gated"
        request.inputs["gate"].CopyFrom(tf.make_tensor_proto([str(shut).encode()]))
        started = time.monotonic()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, pytest.raises(grpc.RpcError) as raised:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 5)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started >= 4.9  # the client's deadline, not the REST timeout
    finally:
        shut.touch()  # the calls still running finish (their answers are dropped)
        stop(process)

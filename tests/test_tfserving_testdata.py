"""TF Serving's own test models (tests/data/tfserving, copied from tensorflow/serving) served by
`nmt-model-server` as TF Serving serves them: its README's exchange and api_rest.md's Example
section replayed from the documents themselves, the stateful counter model over REST and gRPC,
GetModelMetadata equal to TF Serving's JSON, and a model that does not load beside ones that do."""

from __future__ import annotations

import json
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
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import call, free_ports
from test_tfserving_dropin import start_model_server, stop

TESTDATA = Path(__file__).resolve().parent / "data" / "tfserving"
HALF_PLUS_TWO_VARIANTS = ["saved_model_half_plus_two_mkl", "saved_model_half_plus_two_cpu_with_saved_model_config",
                          "saved_model_half_plus_two_cpu_with_empty_saved_model_config",
                          "saved_model_half_plus_two_mlmd", "saved_model_half_plus_two_gpu",
                          "saved_model_half_plus_two_gpu_trt", "saved_model_half_plus_two_tf2_cpu"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tfserving")
    models = {"half_plus_two": "saved_model_half_plus_two_cpu", "default": "saved_model_half_plus_two_cpu",
              "saved_model_half_plus_three": "saved_model_half_plus_three", "counter": "saved_model_counter",
              "bad_half_plus_two": "bad_half_plus_two", **{name: name for name in HALF_PLUS_TWO_VARIANTS}}
    configs = [f'  config {{ name: "{name}" base_path: "{TESTDATA / folder}" model_platform: "tensorflow" }}'
               for name, folder in models.items()]
    configs.append(f'  config {{ name: "saved_model_half_plus_two_2_versions" '
                   f'base_path: "{TESTDATA / "saved_model_half_plus_two_2_versions"}" '
                   "model_version_policy { specific { versions: 123 } } }")
    (root / "models.config").write_text("model_config_list {\n" + "\n".join(configs) + "\n}\n", encoding="utf-8")
    grpc_port, rest_port = free_ports(2)
    process, base = start_model_server([f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                                        f"--model_config_file={root / 'models.config'}"], rest_port, cwd=root)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    yield {"base": base, "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel)}
    channel.close()
    stop(process)


def raw_post(url: str, data: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def curl_calls(markdown: str) -> list[tuple[str, bytes | None, str]]:
    """Each `curl` command of a document (its body, URL path) and the text that follows it."""
    text = markdown.replace("\\\n", " ")
    found = []
    for match in re.finditer(r"curl\s+(?:-i\s+)?(?:-d\s+'([^']*)'\s+)?(?:-X POST\s+)?http://localhost:8501(\S*)[ \t]*\n"
                             r"((?:(?!```).*\n)*)", text):
        body, path, after = match.groups()
        found.append((path, body.encode() if body is not None else None, after))
    return found


@pytest.mark.slow
def test_tf_servings_readme_exchange_byte_for_byte(served) -> None:
    """README.md's quick start: half_plus_two_cpu, rank-1 instances to a [-1, 1] signature."""
    document = (TESTDATA / "docs" / "README_example.md").read_text(encoding="utf-8")
    [(path, body, after)] = curl_calls(document)
    assert body == b'{"instances": [1.0, 2.0, 5.0]}' and path == "/v1/models/half_plus_two:predict"
    expected = json.loads(re.search(r"# Returns => (.*)", after).group(1))
    status, kind, answer = raw_post(served["base"] + path, body)
    assert (status, kind, json.loads(answer)) == (200, "application/json", expected)
    assert expected == {"predictions": [2.5, 3.0, 4.5]}


def test_api_rest_examples_whole_section(served) -> None:
    """api_rest.md's Example on saved_model_half_plus_three: status, predict, regress, the 404."""
    document = (TESTDATA / "docs" / "api_rest_example.md").read_text(encoding="utf-8")
    calls = curl_calls(document)
    assert len(calls) == 4
    for path, body, after in calls:
        if body is None:
            code, answer = call(served["base"] + path)
            assert (code, answer) == (200, json.loads(after))
            continue
        status, kind, answer = raw_post(served["base"] + path, body)
        if after.startswith("HTTP/1.1"):
            head, _, expected = after.partition("\n\n")
            assert status == int(head.split()[1]) == 404 and "Content-Type: application/json" in head
            assert kind == "application/json"
            assert json.loads(answer) == json.loads(expected.strip().removesuffix("$").strip())
        else:
            assert (status, json.loads(answer)) == (200, json.loads(after))


@pytest.mark.parametrize("name", HALF_PLUS_TWO_VARIANTS + ["saved_model_half_plus_two_2_versions"])
def test_every_half_plus_two_answers_the_readme_request(served, name: str) -> None:
    assert call(f"{served['base']}/v1/models/{name}:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [2.5, 3.0, 4.5]})


@pytest.mark.slow
def test_the_graph_judges_shapes_and_its_error_is_a_400(served) -> None:
    base = served["base"]
    assert call(f"{base}/v1/models/half_plus_two:predict", {"instances": [[[1.0]]]}) == (
        200, {"predictions": [[[2.5]]]})
    code, body = call(f"{base}/v1/models/saved_model_half_plus_three:regress",
                      {"signature_name": "tensorflow/serving/regress", "examples": [{"y": 1.0}]})
    assert code == 400 and body["error"] == ("Name: <unknown>, Feature: x (data type: float) is required but "
                                             "could not be found.")
    code, body = call(f"{base}/v1/models/half_plus_two:predict", {"instances": ["one"]})
    assert code == 400 and body["error"].startswith("input x: expected float32 values")


def test_the_counter_keeps_its_state_over_grpc_and_rest(served) -> None:
    """predict_impl_test.cc's counter calls: signatures without inputs, a scalar input, ref variables."""
    stub = served["stub"]

    def grpc_call(signature: str, **inputs: float) -> float:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "counter", signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(np.float32(value)))
        response = stub.Predict(request, timeout=30)
        assert response.model_spec.version.value == 123 and response.outputs["output"].tensor_shape.dim == []
        return float(tf.make_ndarray(response.outputs["output"]))

    def rest_call(signature: str, inputs: dict) -> float:
        code, body = call(f"{served['base']}/v1/models/counter:predict",
                          {"signature_name": signature, "inputs": inputs})
        assert code == 200, body
        return body["outputs"]

    assert grpc_call("reset_counter") == 0.0
    assert grpc_call("incr_counter") == 1.0
    assert grpc_call("incr_counter_by", delta=2.0) == 3.0
    assert grpc_call("get_counter") == 3.0
    assert rest_call("get_counter", {}) == 3.0  # the same session: REST sees gRPC's increments
    assert rest_call("incr_counter_by", {"delta": 2.0}) == 5.0
    assert rest_call("reset_counter", {}) == 0.0
    assert grpc_call("get_counter") == 0.0


def sorted_json(value):
    if isinstance(value, dict):
        return {k: sorted_json(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return sorted((sorted_json(v) for v in value), key=json.dumps)
    return value


def test_model_metadata_equals_tf_servings_json(served) -> None:
    """http_rest_api_handler_test.cc and tensorflow_model_server_test.py's comparisons."""
    base = served["base"]
    for model, expected_file in [
            ("saved_model_half_plus_two_2_versions", "saved_model_half_plus_two_2_versions_metadata.json"),
            ("default", "half_plus_two_model_metadata.json")]:
        code, body = call(f"{base}/v1/models/{model}/metadata")
        expected = json.loads((TESTDATA / expected_file).read_text(encoding="utf-8"))
        assert code == 200 and sorted_json(body) == sorted_json(expected), model
    # The TF2 JSON is of TF Serving's 2-version TF2 export, not of tf2_cpu: its graph's tensor names
    # differ (StatefulPartitionedCall_N), and it lists __saved_model_init_op, which is not served here.
    code, body = call(f"{base}/v1/models/saved_model_half_plus_two_tf2_cpu/metadata")
    expected = json.loads((TESTDATA / "saved_model_half_plus_two_tf2_2_versions_metadata.json").read_text())

    def declared(metadata: dict) -> dict:
        defs = metadata["signature_def"]["signature_def"]
        return {key: {part: {alias: {k: v for k, v in info.items() if k != "name"}
                             for alias, info in value.get(part, {}).items()} for part in ("inputs", "outputs")}
                | {"method_name": value["method_name"]} for key, value in defs.items() if not key.startswith("__")}

    assert code == 200 and sorted_json(declared(body["metadata"])) == sorted_json(declared(expected["metadata"]))


def test_a_model_that_does_not_load_is_reported_and_the_others_serve(served) -> None:
    base = served["base"]
    code, body = call(f"{base}/v1/models/bad_half_plus_two")
    [status] = body["model_version_status"]
    assert code == 200 and status["version"] == "123" and status["state"] == "END"
    assert status["status"]["error_code"] == "UNKNOWN" and "SavedModel file does not exist" in \
        status["status"]["error_message"]
    code, body = call(f"{base}/v1/models/bad_half_plus_two:predict", {"instances": [1.0]})
    assert code == 404 and body["error"].startswith("Servable not found for request: Latest(bad_half_plus_two)")
    assert call(f"{base}/v1/models/half_plus_two:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})


def test_tf_servings_config_files(tmp_path: Path) -> None:
    """good_model_config.txt with its ${...} paths filled in, bad_model_config.txt refused by name,
    batching_config.txt and monitoring_config.txt accepted."""
    from nmt.errors import NmtError
    from nmt.serving.config import Limits, read_batching_parameters, read_model_config, read_monitoring_config

    text = (TESTDATA / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(TESTDATA / "saved_model_half_plus_two_cpu"))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(TESTDATA / "saved_model_half_plus_three"))
    (tmp_path / "good.config").write_text(text)
    entries = read_model_config(tmp_path / "good.config")
    assert [(e.name, e.base_path.name) for e in entries] == [
        ("half_plus_two", "saved_model_half_plus_two_cpu"), ("half_plus_three", "saved_model_half_plus_three")]
    with pytest.raises(NmtError, match=r"bad_model_config\.txt: not a ModelServerConfig text proto"):
        read_model_config(TESTDATA / "bad_model_config.txt")
    limits = read_batching_parameters(TESTDATA / "batching_config.txt", Limits())
    assert (limits.batching, limits.max_batch_size, limits.max_wait_ms) == (True, 128, 0.0)
    monitoring = read_monitoring_config(TESTDATA / "monitoring_config.txt")
    assert (monitoring.enabled, monitoring.path) == (True, "/monitoring/prometheus/metrics")


def test_a_broken_new_version_leaves_the_old_one_serving(tmp_path: Path) -> None:
    """A garbage 2/, an empty 3/ and a version past int64 next to a good 1/: 1 keeps serving."""
    from nmt.serving.config import Limits, ModelEntry
    from nmt.serving.registry import ModelRegistry

    base = tmp_path / "m"
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", base / "1")
    registry = ModelRegistry([ModelEntry("m", base, "latest", [1])], Limits())
    assert list(registry.models["m"]) == [1]
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"garbage")
    registry.sync()
    assert list(registry.models["m"]) == [1]
    (base / "3").mkdir()
    shutil.copytree(base / "1", base / "99999999999999999999")
    registry.sync()
    states = {s["version"]: (s["state"], s["status"]["error_code"]) for s in registry.status("m")}
    assert states == {"1": ("AVAILABLE", "OK"), "2": ("END", "UNKNOWN"), "3": ("END", "UNKNOWN")}
    shutil.rmtree(base / "3")
    shutil.rmtree(base / "2")
    shutil.copytree(base / "1", base / "4")
    registry.sync()
    assert list(registry.models["m"]) == [4]


def test_warmup_requests_are_replayed_on_load_and_a_bad_one_fails_it(tmp_path: Path) -> None:
    """assets.extra/tf_serving_warmup_requests, as TF Serving writes and reads it (PredictionLogs)."""
    from tensorflow_serving.apis import prediction_log_pb2, regression_pb2

    from nmt.serving.config import Limits
    from nmt.serving.registry import Servable
    from nmt.signatures import WARMUP_FILE

    version = tmp_path / "1"
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", version)
    predict = predict_pb2.PredictRequest()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32)))
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    (version / WARMUP_FILE).parent.mkdir()
    with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=predict)).SerializeToString())
        writer.write(prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=regress)).SerializeToString())
    assert Servable("m", 1, version, Limits()).warmup_requests == 2
    bad = predict_pb2.PredictRequest()
    bad.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1], np.int32)))
    with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=bad)).SerializeToString())
    with pytest.raises(ValueError, match=r"warm-up record 1 \(predict_log\) failed: InvalidArgumentError"):
        Servable("m", 1, version, Limits())


@pytest.mark.slow
def test_version_folders_that_come_and_go_never_fail_a_request(tmp_path: Path) -> None:
    """A REST and a gRPC client loop against `nmt-model-server --file_system_poll_wait_seconds 1`
    while a garbage 2/, an empty 3/, a half-copied 4/ (then completed), a 5/ holding a symlink loop
    and the whole base path disappearing and coming back pass by: zero failed requests, and the
    status names each bad version's error."""
    base = tmp_path / "m"
    good = TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"
    shutil.copytree(good, base / "1")
    grpc_port, rest_port = free_ports(2)
    process, url = start_model_server([f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--model_name=m",
                                       f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"],
                                      rest_port, cwd=tmp_path)
    results = {"rest": [0, 0], "grpc": [0, 0]}  # [ok, failed]
    failures: list[str] = []
    halt = threading.Event()

    def rest_loop() -> None:
        while not halt.is_set():
            code, body = call(f"{url}/v1/models/m:predict", {"instances": [1.0, 2.0]})
            ok = code == 200 and body == {"predictions": [2.5, 3.0]}
            results["rest"][0 if ok else 1] += 1
            if not ok:
                failures.append(f"REST {code} {body}")

    def grpc_loop() -> None:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
        while not halt.is_set():
            try:
                ok = tf.make_ndarray(stub.Predict(request, timeout=30).outputs["y"]).tolist() == [2.5]
            except grpc.RpcError as error:
                ok = False
                failures.append(f"gRPC {error.code()} {error.details()}")
            results["grpc"][0 if ok else 1] += 1

    def states() -> dict[str, tuple[str, str]]:
        code, body = call(f"{url}/v1/models/m")
        return {s["version"]: (s["state"], s["status"]["error_message"]) for s in body["model_version_status"]}

    def wait_for(check, what: str) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = states()
            if check(seen):
                return seen
            time.sleep(0.2)
        pytest.fail(f"status never showed {what}: {states()}")

    clients = [threading.Thread(target=rest_loop), threading.Thread(target=grpc_loop)]
    for client in clients:
        client.start()
    try:
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_bytes(b"garbage")
        seen = wait_for(lambda s: s.get("2", ("", ""))[1], "version 2's error")
        assert seen["1"][0] == "AVAILABLE" and seen["2"][0] == "END" and "saved_model.pb" in seen["2"][1]
        shutil.rmtree(base / "2")
        (base / "3").mkdir()
        seen = wait_for(lambda s: s.get("3", ("", ""))[1], "version 3's error")
        assert seen["1"][0] == "AVAILABLE" and "SavedModel" in seen["3"][1]
        shutil.rmtree(base / "3")
        (base / "4").mkdir()  # copied file by file: first the graph, then (a poll later) the rest
        shutil.copy(good / "saved_model.pb", base / "4")
        seen = wait_for(lambda s: s.get("4", ("", ""))[1], "the half-copied version 4's error")
        assert seen["1"][0] == "AVAILABLE"
        shutil.copytree(good / "variables", base / "4" / "variables")
        shutil.copytree(good / "assets", base / "4" / "assets")
        seen = wait_for(lambda s: s.get("4", ("", ""))[0] == "AVAILABLE" and s.get("1", ("", ""))[0] == "END",
                        "version 4 served and 1 unloaded")
        (base / "5").mkdir()
        (base / "5" / "loop").symlink_to(base / "5" / "loop")
        seen = wait_for(lambda s: s.get("5", ("", ""))[1], "version 5's error")
        assert seen["4"][0] == "AVAILABLE"
        shutil.rmtree(base / "5")
        base.rename(tmp_path / "away")
        time.sleep(3)  # three polls without the base path
        assert states()["4"][0] == "AVAILABLE"
        (tmp_path / "away").rename(base)
        time.sleep(2)
    finally:
        halt.set()
        for client in clients:
            client.join(timeout=60)
        log = stop(process)
    assert failures == [], failures[:5]
    assert results["rest"][0] > 20 and results["grpc"][0] > 20, results
    assert f"Could not find base path {base} for servable m" in log


@pytest.mark.slow
def test_a_config_edited_to_garbage_or_naming_a_model_twice_keeps_the_last_good_one(tmp_path: Path) -> None:
    """--model_config_file_poll_wait_seconds 1: a garbage config, then one naming a model twice,
    leave the served models as they were (logged); a good edit is served. At start, the same
    duplicate is a one-line error naming the file."""
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", tmp_path / "m")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", tmp_path / "n")
    config = tmp_path / "models.config"
    one = 'config { name: "m" base_path: "m" model_platform: "tensorflow" }'
    twice = f"model_config_list {{ {one} {one} }}"
    config.write_text(twice, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "nmt.cli.model_server", "--port=0", "--rest_api_port=1",
                           f"--model_config_file={config}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (f"nmt-model-server: error: {config}: model name(s) given twice: m")
    config.write_text(f"model_config_list {{ {one} }}", encoding="utf-8")
    grpc_port, rest_port = free_ports(2)
    process, url = start_model_server([f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                                       f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"],
                                      rest_port, cwd=tmp_path)
    request = {"instances": [1.0]}
    try:
        for text in ("model_config_list { config { name: ", twice):
            config.write_text(text, encoding="utf-8")
            time.sleep(2.5)  # two polls
            assert call(f"{url}/v1/models/m:predict", request) == (200, {"predictions": [2.5]})
            assert call(f"{url}/v1/models/n:predict", request)[0] == 404
        both = one + " " + one.replace('name: "m" base_path: "m"', 'name: "n" base_path: "n"')
        config.write_text(f"model_config_list {{ {both} }}", encoding="utf-8")
        deadline = time.monotonic() + 60
        while call(f"{url}/v1/models/n:predict", request)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert call(f"{url}/v1/models/n:predict", request) == (200, {"predictions": [2.5]})
    finally:
        log = stop(process)
    assert "model config polling: " in log and "not a ModelServerConfig text proto" in log
    assert "model name(s) given twice: m; still serving the last good one" in log


def test_a_missing_specific_version_or_label_target_is_named(tmp_path: Path) -> None:
    """`specific { versions: 42 }` with 1 and 5 on disk names 42 and what exists; a version label
    for a version that is not served is refused with TF Serving's message."""
    from nmt.errors import NmtError
    from nmt.serving.config import Limits, ModelEntry
    from nmt.serving.errors import RequestError
    from nmt.serving.registry import ModelRegistry

    base = tmp_path / "m"
    for version in (1, 5):
        shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", base / str(version))
    registry = ModelRegistry([ModelEntry("m", base, "specific", [42])], Limits())
    assert registry.failures["m"] == f"version(s) 42 not found under {base} (found: 1, 5)"
    with pytest.raises(RequestError) as failure:
        registry.resolve("m")
    assert failure.value.status == 404 and "version(s) 42 not found" in failure.value.message
    with pytest.raises(NmtError, match=r"^Request to assign label 'stable' to version 42 of model m, which is not "
                                       r"currently available for inference$"):
        ModelRegistry([ModelEntry("m", base, "all", [], {"stable": 42})], Limits())
    assert ModelRegistry([ModelEntry("m", base, "all", [], {"stable": 5})], Limits()).resolve(
        "m", label="stable").version == 5

"""Every entry point goes through one call core (nmt/serving/calls.py): REST predict, classify and
regress, gRPC Predict, Classify, Regress and MultiInference, and the task endpoints /v1/translate,
/v1/next-word, /v1/generate and /v1/inspect each honour the request deadline with a deliberately
model call held
back by a gate the test keeps shut, are counted in the Prometheus metrics under their API, and refuse over-limit input
with the same message. The server is the one the CLI starts (nmt.serving.start), on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

import nmt

from conftest import call, wait_until

TESTDATA = Path(__file__).resolve().parent / "data" / "tfserving"
TIMEOUT_MS = 300  # the gated server's request deadline
MAX_ROWS = 2
METRICS = "/monitoring/prometheus/metrics"


def start_server(root: Path, timeout_ms: float, gate: threading.Event | None = None):
    """`nmt serve`'s server over the exports in ``root`` (en-ja, lm) and TF Serving's
    half_plus_two (cpu); with a ``gate``, each model call waits until the test opens it."""
    from nmt.serving import Limits, ModelRegistry, ServerSettings, read_model_config, start
    from nmt.serving.config import Monitoring
    from nmt.serving.registry import Servable

    def load(name: str, version: int, path: Path, limits: Limits) -> Servable:
        servable = Servable(name, version, path, limits)
        run = servable.model.run

        def gated_run(signature: str, inputs: dict) -> dict:
            if gate is not None:
                gate.wait()
            return run(signature, inputs)

        servable.model.run = gated_run  # the batchers, made on first use, call this
        return servable

    settings = ServerSettings(functools.partial(read_model_config, root / "models.config"),
                              limits=Limits(max_request_rows=MAX_ROWS, request_timeout_s=timeout_ms / 1000),
                              rest_port=0, grpc_port=0, monitoring=Monitoring(True, METRICS))
    return start(settings, ModelRegistry(settings.read_entries(), settings.limits, load=load))


def export_models(root: Path, tiny_run: Path, cycle_run: Path) -> Path:
    """``root`` with exports of tiny_run (en-ja) and cycle_run (lm), TF Serving's half_plus_two
    (cpu), and their models.config."""
    import shutil

    from nmt.export import export

    export(tiny_run, root / "en-ja")
    export(cycle_run, root / "lm")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", root / "half_plus_two")
    (root / "models.config").write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{name}" model_platform: "tensorflow" }}\n'
        for name in ("en-ja", "lm", "half_plus_two")) + "}\n", encoding="utf-8")
    return root


@contextlib.contextmanager
def serving(root: Path, timeout_ms: float, gate: threading.Event | None = None):
    """start_server's server, its REST base URL and a PredictionService stub; stopped after (the
    gate opened first, so that calls still waiting end)."""
    server = start_server(root, timeout_ms, gate)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}")
    try:
        yield server, f"http://127.0.0.1:{server.ports['rest']}", prediction_service_pb2_grpc.PredictionServiceStub(
            channel)
    finally:
        if gate is not None:
            gate.set()
        channel.close()
        server.stop()


@pytest.fixture(scope="module")
def models(tiny_run: Path, cycle_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_models(tmp_path_factory.mktemp("calls"), tiny_run, cycle_run)


@pytest.fixture(scope="module")
def slow(models: Path):
    """A server whose every model call waits on a gate that stays shut: each request outlives its deadline."""
    with serving(models, TIMEOUT_MS, threading.Event()) as server:
        yield server


@pytest.fixture(scope="module")
def quick(models: Path):
    with serving(models, 60_000) as server:
        yield server


def examples_input(target, rows: int) -> None:
    for i in range(rows):
        target.example_list.examples.add().features.feature["x"].float_list.value.append(float(i))


def rest_calls(texts: list[str]) -> list[tuple[str, str, str, dict]]:
    """(API label in the metrics, model, path, body) of each REST entry point, asked about ``texts``."""
    numbers = [{"x": float(i)} for i in range(len(texts))]
    return [
        ("Predict", "lm", "/v1/models/lm:predict", {"instances": texts}),
        ("Classify", "half_plus_two", "/v1/models/half_plus_two:classify",
         {"signature_name": "classify_x_to_y", "examples": numbers}),
        ("Regress", "half_plus_two", "/v1/models/half_plus_two:regress",
         {"signature_name": "regress_x_to_y", "examples": numbers}),
        ("translate", "en-ja", "/v1/translate", {"text": texts}),
        ("next-word", "lm", "/v1/next-word", {"text": texts}),
        ("generate", "lm", "/v1/generate", {"text": texts, "max_tokens": 2}),
        ("inspect", "lm", "/v1/inspect", {"text": texts}),
    ]


def grpc_calls(stub, rows: int, timeout_s: float = 30) -> list[tuple[str, object]]:
    """(API label, a callable making the call) of each gRPC entry point, with ``rows`` rows and the
    client deadline ``timeout_s``."""
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "lm"
    predict.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"north east"] * rows, dtype=object)))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "half_plus_two", "classify_x_to_y"
    examples_input(classify.input, rows)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
    examples_input(regress.input, rows)
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = "half_plus_two", signature
        task.method_name = f"tensorflow/serving/{method}"
    examples_input(multi.input, rows)
    return [("Predict", lambda: stub.Predict(predict, timeout=timeout_s)),
            ("Classify", lambda: stub.Classify(classify, timeout=timeout_s)),
            ("Regress", lambda: stub.Regress(regress, timeout=timeout_s)),
            ("MultiInference", lambda: stub.MultiInference(multi, timeout=timeout_s))]


def metric_lines(base: str) -> list[str]:
    with urllib.request.urlopen(base + METRICS, timeout=30) as response:
        return response.read().decode().splitlines()


def count_of(lines: list[str], model: str, api: str, entrypoint: str) -> int:
    prefix = f':tensorflow:serving:request_latency_count{{model_name="{model}",API="{api}",entrypoint="{entrypoint}"}}'
    return sum(int(line.split()[-1]) for line in lines if line.startswith(prefix))


@pytest.mark.slow
def test_every_entry_point_honours_the_deadline_and_is_counted(slow) -> None:
    """REST and the task endpoints end at the request timeout; gRPC at the client's own deadline
    (1 s here), as TF Serving does: its --rest_api_timeout_in_ms is for REST only."""
    server, base, stub = slow
    message = f"Deadline Exceeded: the request took over {TIMEOUT_MS} ms"
    for _, _, path, body in rest_calls(["north east"]):
        assert call(base + path, body) == (504, {"error": message}), path
    for api, make_call in grpc_calls(stub, 1, timeout_s=1.0):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            make_call()
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, api
        assert failure.value.details() != message and time.monotonic() - started >= 0.95, api  # not at 300 ms

    def grpc_counted() -> bool:
        lines = metric_lines(base)
        return all(count_of(lines, "lm" if api == "Predict" else "half_plus_two", api, "GRPC") == 1
                   for api in ("Predict", "Classify", "Regress", "MultiInference"))

    assert wait_until(grpc_counted, timeout_s=30)  # a call the client gave up on is counted once the server ends it
    lines = metric_lines(base)
    for api, model, _, _ in rest_calls([]):
        assert count_of(lines, model, api, "REST") == 1, api
    timed_out = {line.split()[0]: int(line.split()[-1]) for line in lines
                 if line.startswith(":tensorflow:serving:request_count") and "DEADLINE_EXCEEDED" in line}
    assert timed_out == {':tensorflow:serving:request_count{model_name="en-ja",status="DEADLINE_EXCEEDED"}': 1,
                         ':tensorflow:serving:request_count{model_name="lm",status="DEADLINE_EXCEEDED"}': 5,
                         ':tensorflow:serving:request_count{model_name="half_plus_two",status="DEADLINE_EXCEEDED"}': 5}


@pytest.mark.slow
def test_a_grpc_call_outlives_the_rest_timeout_within_its_own_deadline(models: Path) -> None:
    """The model held for longer than the REST timeout: REST answers 504, a gRPC Predict with a 60 s
    deadline waits and gets its answer once the model is let go."""
    from concurrent.futures import ThreadPoolExecutor

    gate = threading.Event()
    with serving(models, TIMEOUT_MS, gate) as (server, base, stub), ThreadPoolExecutor(max_workers=1) as pool:
        (_, predict), = [c for c in grpc_calls(stub, 1, timeout_s=60) if c[0] == "Predict"]
        answer = pool.submit(predict)
        assert call(base + "/v1/models/lm:predict", {"instances": ["north east"]})[0] == 504
        assert not answer.done()
        gate.set()
        outputs = answer.result(timeout=60).outputs
        assert tf.make_ndarray(outputs["words"]).shape == (1, 5)


def test_every_entry_point_refuses_over_limit_input_the_same_way(quick) -> None:
    server, base, stub = quick
    message = f"batch of {MAX_ROWS + 1} is over the limit of {MAX_ROWS} per request"
    before = metric_lines(base)
    for _, _, path, body in rest_calls(["north east"] * (MAX_ROWS + 1)):
        assert call(base + path, body) == (400, {"error": message}), path
    for api, make_call in grpc_calls(stub, MAX_ROWS + 1):
        with pytest.raises(grpc.RpcError) as failure:
            make_call()
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and failure.value.details() == message, api
    # ... and within the limit, every entry point answers, and is counted OK.
    for _, _, path, body in rest_calls(["north east"] * MAX_ROWS):
        code, answer = call(base + path, body)
        assert code == 200, (path, answer)
    for _, make_call in grpc_calls(stub, MAX_ROWS):
        make_call()
    after = metric_lines(base)
    for model, status, added in (("lm", "INVALID_ARGUMENT", 5), ("half_plus_two", "INVALID_ARGUMENT", 5),
                                 ("en-ja", "INVALID_ARGUMENT", 1), ("lm", "OK", 5), ("half_plus_two", "OK", 5),
                                 ("en-ja", "OK", 1)):
        line = f':tensorflow:serving:request_count{{model_name="{model}",status="{status}"}}'
        counts = [sum(int(x.split()[-1]) for x in lines if x.startswith(line + " ")) for lines in (before, after)]
        assert counts[1] - counts[0] == added, (model, status)


@pytest.mark.slow
def test_calls_that_arrive_while_the_model_is_busy_share_one_batch(models: Path, cycle_run: Path) -> None:
    """While one call holds the model (its gate shut), ten more arrive and wait; once it is
    opened they run as one batch: 2 model calls for 11 requests, each with its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    gate = threading.Event()
    with serving(models, 60_000, gate) as (server, base, _):
        prompts = ["north", "north east", "north east south", "up", "up down", "north", "up", "north east",
                   "up down", "north east south", "north"]
        with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
            first = pool.submit(call, f"{base}/v1/next-word", {"text": prompts[0], "k": 1})
            batchers = lambda: server.registry.models["lm"][1].batchers  # noqa: E731
            assert wait_until(lambda: "next_words" in batchers() and batchers()["next_words"].in_flight == 1)
            rest = [pool.submit(call, f"{base}/v1/next-word", {"text": p, "k": 1}) for p in prompts[1:]]
            assert wait_until(lambda: len(batchers()["next_words"].pending) == len(rest))
            gate.set()
            answers = [first.result(), *(f.result() for f in rest)]
        assert [code for code, _ in answers] == [200] * len(prompts)
        expected = [words[0][0] for words in nmt.load(cycle_run).next_words(prompts, k=1)]
        assert [body["next_words"][0][0]["word"] for _, body in answers] == expected
        assert batchers()["next_words"].stats == {"batches": 2, "rows": len(prompts)}


def test_names_of_no_listed_model_add_no_metric_series(quick) -> None:
    """Requests for models the config does not list are counted under model_name="" (NOT_FOUND), so
    a client cannot grow the metrics without bound by inventing names."""
    server, base, stub = quick
    before = metric_lines(base)
    for i in range(20):
        assert call(f"{base}/v1/models/invented-{i}:predict", {"instances": [1.0]})[0] == 404
        request = predict_pb2.PredictRequest()
        request.model_spec.name = f"made-up-{i}"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0]))
        with pytest.raises(grpc.RpcError) as failure:
            stub.Predict(request, timeout=30)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    lines = metric_lines(base)
    assert not any("invented-" in line or "made-up-" in line for line in lines)
    unnamed = ':tensorflow:serving:request_count{model_name="",status="NOT_FOUND"}'
    count = {line.split()[0]: int(line.split()[-1]) for line in lines if line.startswith(unnamed)}
    already = {line.split()[0]: int(line.split()[-1]) for line in before if line.startswith(unnamed)}
    assert count[unnamed] - already.get(unnamed, 0) == 40


@pytest.mark.parametrize("error, status, code", [
    (tf.errors.InvalidArgumentError, 400, "INVALID_ARGUMENT"),
    (tf.errors.FailedPreconditionError, 400, "FAILED_PRECONDITION"),
    (tf.errors.OutOfRangeError, 400, "OUT_OF_RANGE"),
    (tf.errors.NotFoundError, 404, "NOT_FOUND"),
    (tf.errors.InternalError, 500, "INTERNAL"),
])
def test_a_graph_error_keeps_its_own_grpc_code(error, status, code: str) -> None:
    """REST answers a graph error with its HTTP status; gRPC and the metrics keep TensorFlow's own
    code (FAILED_PRECONDITION is not INVALID_ARGUMENT, though both are a 400)."""
    import asyncio

    from nmt.serving import Limits, ModelRegistry
    from nmt.serving.calls import Calls
    from nmt.serving.errors import RequestError, graph_error
    from nmt.serving.metrics import Metrics

    calls = Calls(ModelRegistry([], Limits()), Metrics())

    async def failing_call() -> None:
        async with calls.counted("Predict", "GRPC", "m"):
            raise graph_error(error(None, None, "Graph execution error:\n\nthe model says no"))

    with pytest.raises(RequestError) as raised:
        asyncio.run(failing_call())
    assert (raised.value.status, raised.value.grpc_code, raised.value.message) == (status, code, "the model says no")
    assert f':tensorflow:serving:request_count{{model_name="",status="{code}"}} 1' in calls.metrics.render()

"""Each flag of `nmt serve` and `nmt-model-server` that no other test uses, shown by its effect:
the command line is parsed as the CLI parses it (nmt.cli.serve.serve_settings), and the server it
describes is started as the CLI starts it (nmt.serving.start), on 127.0.0.1, with model calls held
behind a gate the test opens, so what batching does is counted, not timed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import call, wait_until
from test_serving_calls import TESTDATA, export_models


def gated_registry(settings, gate: threading.Event):
    from nmt.serving import ModelRegistry
    from nmt.serving.registry import Servable

    def load(name: str, version: int, path: Path, limits) -> Servable:
        servable = Servable(name, version, path, limits)
        run = servable.model.run

        def gated_run(signature: str, inputs: dict) -> dict:
            gate.wait()
            return run(signature, inputs)

        servable.model.run = gated_run
        return servable

    return ModelRegistry(settings.read_entries(), settings.limits, load=load)


@pytest.fixture(scope="module")
def models(tiny_run: Path, cycle_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exports of test_serving_calls, and lm.config: the language model alone, for the tests that only
    call it (a server loads every model of its config before it answers)."""
    root = export_models(tmp_path_factory.mktemp("flags"), tiny_run, cycle_run)
    (root / "lm.config").write_text(
        'model_config_list {\n  config { name: "lm" base_path: "lm" model_platform: "tensorflow" }\n}\n',
        encoding="utf-8")
    return root


def settings_of(*flags: str):
    from nmt.cli import build_parser
    from nmt.cli.serve import serve_settings

    return serve_settings(build_parser().parse_args(["serve", *flags, "--port", "0"]))


def batches_of(models: Path, *flags: str, requests: int = 5) -> dict[str, int]:
    """``requests`` next-word calls, one holding the model (gate shut) while the rest arrive; the
    next_words batcher's counts once all are answered."""
    from nmt.serving import start

    gate = threading.Event()
    settings = settings_of("--config", str(models / "lm.config"), *flags)
    server = start(settings, gated_registry(settings, gate))
    base = f"http://127.0.0.1:{server.ports['rest']}"
    batchers = server.registry.models["lm"][1].batchers
    try:
        with ThreadPoolExecutor(max_workers=requests) as pool:
            first = pool.submit(call, f"{base}/v1/next-word", {"text": "north", "k": 1})
            assert wait_until(lambda: "next_words" in batchers and batchers["next_words"].stats["batches"] == 1)
            rest = [pool.submit(call, f"{base}/v1/next-word", {"text": "north east", "k": 1})
                    for _ in range(requests - 1)]
            # Every call has reached the batcher: counted in a batch handed to the model, or waiting.
            next_words = batchers["next_words"]
            assert wait_until(lambda: next_words.stats["rows"] + len(next_words.pending) == requests)
            gate.set()
            assert all(f.result()[0] == 200 for f in [first, *rest])
        return dict(batchers["next_words"].stats)
    finally:
        gate.set()
        server.stop()


@pytest.mark.slow
def test_max_batch_size_no_batching_and_the_default(models: Path) -> None:
    # One call alone (it found the model idle), then the four that waited: one batch by default,
    # batches of at most 2 rows with --max-batch-size 2, every call alone with --no-batching.
    assert batches_of(models) == {"batches": 2, "rows": 5}
    assert batches_of(models, "--max-batch-size", "2") == {"batches": 3, "rows": 5}
    assert batches_of(models, "--no-batching") == {"batches": 5, "rows": 5}


@pytest.mark.slow
def test_max_wait_ms_lets_a_lone_call_wait_for_company(models: Path) -> None:
    """With the model idle, a call waits --max-wait-ms for others: two calls 0.2 s apart share one
    batch when it is 10 s, and run as two when it is 0. Batches of 2 rows: the second call fills the
    batch, which then runs at once, so the test never waits the 10 s out."""
    from nmt.serving import start

    def batches(wait_ms: str) -> int:
        settings = settings_of("--config", str(models / "lm.config"), "--max-wait-ms", wait_ms,
                               "--max-batch-size", "2")
        server = start(settings)
        base = f"http://127.0.0.1:{server.ports['rest']}"
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                first = pool.submit(call, f"{base}/v1/next-word", {"text": "north", "k": 1})
                time.sleep(0.2)
                second = pool.submit(call, f"{base}/v1/next-word", {"text": "north east", "k": 1})
                assert first.result()[0] == second.result()[0] == 200
            return server.registry.models["lm"][1].batchers["next_words"].stats["batches"]
        finally:
            server.stop()

    assert batches("10000") == 1
    assert batches("0") == 2


@pytest.mark.slow
def test_request_timeout_ms_and_metrics_path(models: Path) -> None:
    from nmt.serving import start

    gate = threading.Event()
    settings = settings_of("--config", str(models / "lm.config"), "--request-timeout-ms", "250",
                           "--metrics-path", "/my/metrics")
    server = start(settings, gated_registry(settings, gate))
    base = f"http://127.0.0.1:{server.ports['rest']}"
    try:
        assert call(f"{base}/v1/next-word", {"text": "north"}) == (
            504, {"error": "Deadline Exceeded: the request took over 250 ms"})
        with urllib.request.urlopen(f"{base}/my/metrics", timeout=30) as response:
            text = response.read().decode()
        assert ':tensorflow:serving:request_count{model_name="lm",status="DEADLINE_EXCEEDED"} 1' in text
    finally:
        gate.set()
        server.stop()
    # Without --metrics-path there are none.
    server = start(settings_of("--config", str(models / "models.config")))
    try:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{server.ports['rest']}/monitoring/prometheus/metrics")
        assert missing.value.code == 404
    finally:
        server.stop()


@pytest.mark.slow
def test_poll_seconds_and_config_poll_seconds(tmp_path: Path) -> None:
    """--poll-seconds 1 serves a version folder that appears; --config-poll-seconds 1 a model the
    config file gains. Without them neither happens."""
    from nmt.serving import start

    half_plus_two = TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"
    half_plus_three = TESTDATA / "saved_model_half_plus_three" / "00000123"
    shutil.copytree(half_plus_two, tmp_path / "m" / "1")
    shutil.copytree(half_plus_three, tmp_path / "n" / "1")
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "m" } }', encoding="utf-8")
    request = {"instances": [1.0]}
    for polling in (False, True):
        flags = ["--poll-seconds", "1", "--config-poll-seconds", "1"] if polling else []
        server = start(settings_of("--config", str(config), *flags))
        base = f"http://127.0.0.1:{server.ports['rest']}"
        try:
            assert call(f"{base}/v1/models/m:predict", request) == (200, {"predictions": [2.5]})
            shutil.copytree(half_plus_three, tmp_path / "m" / ".v2")
            (tmp_path / "m" / ".v2").rename(tmp_path / "m" / "2")
            config.write_text('model_config_list { config { name: "m" base_path: "m" } '
                              'config { name: "n" base_path: "n" } }', encoding="utf-8")
            if polling:
                assert wait_until(lambda b=base: call(f"{b}/v1/models/m:predict", request)[1] == {"predictions": [3.5]})
                assert wait_until(lambda b=base: call(f"{b}/v1/models/n:predict", request)[0] == 200)
            else:
                time.sleep(2.5)  # what two polls would have taken
                assert call(f"{base}/v1/models/m:predict", request) == (200, {"predictions": [2.5]})
                assert call(f"{base}/v1/models/n:predict", request)[0] == 404
        finally:
            server.stop()
            shutil.rmtree(tmp_path / "m" / "2")
            config.write_text('model_config_list { config { name: "m" base_path: "m" } }', encoding="utf-8")


@pytest.mark.slow
def test_model_servers_tensorflow_thread_flags_set_tensorflows_pools(tmp_path: Path) -> None:
    """--tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism reach TensorFlow's
    threading configuration before anything runs (the server itself replaced by a print)."""
    code = ("import sys, tensorflow as tf\n"
            "import nmt.cli.model_server as server\n"
            "server.run_server = lambda settings: print(tf.config.threading.get_intra_op_parallelism_threads(),\n"
            "    tf.config.threading.get_inter_op_parallelism_threads()) or 0\n"
            "sys.exit(server.main(sys.argv[1:]))\n")
    base = tmp_path / "m"
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", base)
    done = subprocess.run([sys.executable, "-c", code, f"--model_base_path={base}", "--rest_api_port=1",
                           "--tensorflow_intra_op_parallelism=3", "--tensorflow_inter_op_parallelism=2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "2"]


def test_batching_fields_that_are_ignored_are_said_once_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from nmt.serving import Limits
    from nmt.serving.config import read_batching_parameters

    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
                    "num_batch_threads { value: 4 }\npad_variable_length_inputs: false\n", encoding="utf-8")
    caplog.set_level("WARNING", logger="nmt.serving.config")
    limits = read_batching_parameters(path, Limits())
    assert (limits.max_batch_size, limits.max_wait_ms) == (8, 1.0)
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 2 and any("num_batch_threads" in m for m in ignored) and \
        any("pad_variable_length_inputs" in m for m in ignored), ignored
    assert all(str(path) in m for m in ignored)



@pytest.mark.slow
def test_a_reload_request_maps_base_paths_as_mount_says(models: Path, tmp_path: Path) -> None:
    """`nmt serve --mount /models=DIR`: the config file's /models/... base paths and those of a gRPC
    HandleReloadConfigRequest are both found in DIR."""
    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    from nmt.serving import start

    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "lm" base_path: "/models/lm" '
                      'model_platform: "tensorflow" } }\n', encoding="utf-8")
    server = start(settings_of("--config", str(config), "--mount", f"/models={models}", "--grpc-port", "0"))
    try:
        base = f"http://127.0.0.1:{server.ports['rest']}"
        assert call(f"{base}/v1/models/lm")[0] == 200
        request = model_management_pb2.ReloadConfigRequest()
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = "half", "/models/half_plus_two", "tensorflow"
        with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            answer = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=120)
        assert answer.status.error_code == 0, answer.status.error_message
        assert call(f"{base}/v1/models/half:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
    finally:
        server.stop()

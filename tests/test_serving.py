"""A real `nmt serve` process on 127.0.0.1, answered over HTTP: TF Serving's REST API, the friendly
endpoints, every kind of bad input, and concurrent requests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import nmt
from nmt.export import export

from conftest import CYCLE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: bytes | dict | None = None, method: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(tiny_run: Path, cycle_run: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve")
    export(tiny_run, root / "models" / "en-ja")
    export(cycle_run, root / "models" / "lm")
    broken = root / "models" / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    (root / "models.config").write_text(
        "model_config_list {\n"
        '  config { name: "en-ja" base_path: "models/en-ja" model_platform: "tensorflow" }\n'
        '  config { name: "lm" base_path: "models/lm" model_platform: "tensorflow" }\n'
        '  config { name: "broken" base_path: "models/broken" model_platform: "tensorflow" }\n'
        "}\n",
        encoding="utf-8",
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt.cli", "serve", "--config", str(root / "models.config"), "--port", str(port),
         "--max-request-rows", "8", "--max-body-bytes", "20000"],
        stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nmt serve exited: {process.stderr.read()[-3000:]}")
        try:
            if call(f"{base}/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("nmt serve did not answer within 300 s")
    yield base
    process.terminate()
    stderr = process.communicate(timeout=60)[1]
    assert "warning: model broken not served" in stderr


def test_health_and_model_status(server: str) -> None:
    code, body = call(f"{server}/healthz")
    assert code == 200 and body["models"] == {"en-ja": [1], "lm": [1]} and "broken" in body["failed"]
    code, body = call(f"{server}/v1/models/lm")
    assert code == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(f"{server}/v1/models/lm/versions/1")[1] == body
    code, body = call(f"{server}/v1/models/en-ja/metadata")
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert code == 200 and set(signatures) == {"serving_default", "translate", "translate_greedy", "translate_ids"}
    # TF Serving's shape: the SignatureDef protos as JSON.
    assert signatures["translate"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert signatures["translate"]["inputs"]["text"]["tensorShape"]["dim"] == [{"size": "-1"}]
    assert set(signatures["translate"]["outputs"]) == {"translations", "scores"}


def test_predict_in_both_formats_matches_the_package(server: str, cycle_run: Path, tiny_run: Path) -> None:
    lm = nmt.load(cycle_run)
    code, body = call(f"{server}/v1/models/lm:predict", {"instances": ["north east", "up"]})
    assert code == 200
    expected = lm.next_words(["north east", "up"], k=5)
    assert [row["words"][: len(e)] for row, e in zip(body["predictions"], expected)] == [[w for w, _ in e] for e in expected]
    np.testing.assert_allclose(body["predictions"][0]["probabilities"][: len(expected[0])],
                               [p for _, p in expected[0]], rtol=1e-4)
    code, body = call(f"{server}/v1/models/lm/versions/1:predict",
                      {"signature_name": "next_words", "inputs": {"text": ["north east south"], "k": [2]}})
    assert code == 200 and body["outputs"]["words"][0][0] == "west" and len(body["outputs"]["words"][0]) == 2
    code, body = call(f"{server}/v1/models/lm:predict",
                      {"signature_name": "next_words", "instances": [{"text": "north east south west up down", "k": 1}]})
    assert code == 200 and body["predictions"][0]["words"] == ["left"]
    translator = nmt.load(tiny_run)
    code, body = call(f"{server}/v1/models/en-ja:predict", {"instances": ["Good morning.", "Thank you."]})
    assert code == 200
    hypotheses = [h[0] for h in translator.translate(["Good morning.", "Thank you."])]
    assert [p["translations"] for p in body["predictions"]] == [h.text for h in hypotheses]
    np.testing.assert_allclose([p["scores"] for p in body["predictions"]], [h.score for h in hypotheses], rtol=1e-4)


def test_friendly_endpoints(server: str, cycle_run: Path, tiny_run: Path) -> None:
    code, body = call(f"{server}/v1/next-word", {"text": "north east south", "k": 3})
    assert code == 200 and body["next_words"][0][0]["word"] == "west" and len(body["next_words"][0]) <= 3
    request = {"text": ["north", "up down"], "max_tokens": 9, "temperature": 0.7, "seed": 11}
    code, first = call(f"{server}/v1/generate", request)
    assert code == 200 and call(f"{server}/v1/generate", request)[1] == first
    assert first["text"] == nmt.load(cycle_run).generate(["north", "up down"], max_tokens=9, temperature=0.7, seed=11)
    code, body = call(f"{server}/v1/translate", {"text": "Good morning.", "beam": 1})
    greedy = nmt.load(tiny_run).translate(["Good morning."], beam_size=1)[0][0]
    assert code == 200 and body["translations"] == [greedy.text] and body["beam"] == 1
    code, body = call(f"{server}/v1/translate", {"text": ["Good morning."], "beam": 7})
    assert code == 400 and "beam 7 is not exported" in body["error"]
    with urllib.request.urlopen(f"{server}/docs", timeout=60) as response:
        assert response.status == 200 and "swagger" in response.read().decode().lower()
    with urllib.request.urlopen(f"{server}/openapi.json", timeout=60) as response:
        schema = json.loads(response.read())
    assert "/v1/next-word" in schema["paths"] and "requestBody" in schema["paths"]["/v1/translate"]["post"]


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/models/lm:predict", b"{not json", 400, "JSON Parse error"),
        ("/v1/models/lm:predict", {"instances": []}, 400, "is empty"),
        ("/v1/models/lm:predict", {"instances": [5]}, 400, "input text: expected strings"),
        ("/v1/models/lm:predict", {"instances": ["a"] * 9}, 400, "batch of 9 is over the limit of 8"),
        ("/v1/models/lm:predict", {"instances": ["a" * 2001]}, 400, "over the limit of 2000 characters"),
        ("/v1/models/lm:predict", {"instances": ["a"], "inputs": ["a"]}, 400, "exactly one of"),
        ("/v1/models/lm:predict", {"signature_name": "nope", "instances": ["a"]}, 400, "not found in signature def"),
        ("/v1/models/nope:predict", {"instances": ["a"]}, 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/lm/versions/9:predict", {"instances": ["a"]}, 404, "Specific(lm, 9)"),
        ("/v1/models/broken:predict", {"instances": ["a"]}, 404, "Latest(broken)"),
        ("/v1/models/lm:predict", b'{"instances": ["\xff"]}', 400, "not valid UTF-8"),
        ("/v1/models/lm:predict", b'{"instances": ["' + b"a" * 30000 + b'"]}', 413, "over the limit of 20000"),
        ("/v1/next-word", {"text": 5}, 400, "invalid request: text"),
        ("/v1/next-word", {"text": "north", "k": 0}, 400, "k must be between 1 and"),
        ("/v1/next-word", {"text": []}, 400, "is empty"),
        ("/v1/generate", {"text": "north", "top_p": 0}, 400, "top_p must be in (0, 1]"),
        ("/v1/translate", {"text": "hi", "model": "lm"}, 400, "model lm is not a translation model"),
        ("/v1/translate", b"[1, 2", 400, "JSON Parse error"),
    ],
)
def test_bad_input_gets_a_tf_serving_shaped_error(server: str, path: str, body, status: int, message: str) -> None:
    code, answer = call(f"{server}{path}", body)
    assert code == status and list(answer) == ["error"] and message in answer["error"]
    assert call(f"{server}/healthz")[0] == 200  # and the server still answers


def batching_stats(server: str, signature: str) -> dict:
    return call(f"{server}/healthz")[1]["batching"].get(signature, {"batches": 0, "rows": 0})


def test_fifty_concurrent_requests_all_get_their_own_answer(server: str) -> None:
    prompts = [" ".join(CYCLE[: 1 + i % 7]) for i in range(50)]  # the answer is the next word of the cycle
    before = batching_stats(server, "lm/1/next_words")

    def ask(prompt: str) -> tuple[str, str, int]:
        k = 1 + len(prompt) % 3
        code, body = call(f"{server}/v1/next-word", {"text": prompt, "k": k})
        assert code == 200, body
        return prompt, body["next_words"][0][0]["word"], len(body["next_words"][0])

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(ask, prompts))
    for prompt, word, count in answers:
        assert word == CYCLE[len(prompt.split())]
        assert count <= 1 + len(prompt) % 3  # each its own k, whatever it was batched with
    after = batching_stats(server, "lm/1/next_words")
    assert after["rows"] - before["rows"] == 50
    assert after["batches"] - before["batches"] < 50  # requests really were merged into batches


def test_concurrent_generate_with_different_settings(server: str, cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    requests = [{"text": "north", "max_tokens": 4 + i % 5, "temperature": [0.0, 0.8, 1.5][i % 3],
                 "top_k": i % 4, "top_p": [1.0, 0.9][i % 2], "seed": i} for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda r: call(f"{server}/v1/generate", r), requests))
    for request, (code, body) in zip(requests, answers):
        assert code == 200, body
        expected = lm.generate("north", max_tokens=request["max_tokens"], temperature=request["temperature"],
                               top_k=request["top_k"], top_p=request["top_p"], seed=request["seed"])
        assert body["text"] == expected

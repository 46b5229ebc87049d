"""A real `nmt serve` process on 127.0.0.1, answered over HTTP: TF Serving's REST API, the friendly
endpoints, every kind of bad input, and concurrent requests."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import nmt

from conftest import CYCLE, call


def test_health_and_model_status(server: str) -> None:
    code, body = call(f"{server}/healthz")
    assert code == 200 and body["models"] == {"en-ja": [1], "lm": [1], "keyboard": [1]} and "broken" in body["failed"]
    assert body["tasks"] == {"en-ja": "translation", "lm": "lm", "keyboard": "lm"}
    code, body = call(f"{server}/v1/models/lm")
    assert code == 200, body
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(f"{server}/v1/models/lm/versions/1")[1] == body
    code, body = call(f"{server}/v1/models/en-ja/metadata")
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert code == 200 and set(signatures) == {"serving_default", "translate", "translate_greedy", "translate_ids",
                                                "translate_attention", "inspect", "score", "translate_constrained"}
    # TF Serving's shape: the SignatureDef protos as JSON.
    assert signatures["translate"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert signatures["translate"]["inputs"]["text"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert set(signatures["translate"]["outputs"]) == {"translations", "scores"}


def test_predict_in_both_formats_matches_the_package(server: str, cycle_run: Path, tiny_run: Path) -> None:
    lm = nmt.load(cycle_run)
    code, body = call(f"{server}/v1/models/lm:predict", {"instances": ["north east", "up"]})
    assert code == 200, body
    expected = lm.next_words(["north east", "up"], k=5)
    words = [row["words"][: len(e)] for row, e in zip(body["predictions"], expected)]
    assert words == [[w for w, _ in e] for e in expected]
    np.testing.assert_allclose(body["predictions"][0]["probabilities"][: len(expected[0])],
                               [p for _, p in expected[0]], rtol=1e-4)
    code, body = call(f"{server}/v1/models/lm/versions/1:predict",
                      {"signature_name": "next_words", "inputs": {"text": ["north east south"], "k": [2]}})
    assert code == 200 and body["outputs"]["words"][0][0] == "west" and len(body["outputs"]["words"][0]) == 2
    instance = {"text": "north east south west up down", "k": 1}
    code, body = call(f"{server}/v1/models/lm:predict", {"signature_name": "next_words", "instances": [instance]})
    assert code == 200 and body["predictions"][0]["words"] == ["left"]
    translator = nmt.load(tiny_run)
    code, body = call(f"{server}/v1/models/en-ja:predict", {"instances": ["Good morning.", "Thank you."]})
    assert code == 200, body
    hypotheses = [h[0] for h in translator.translate(["Good morning.", "Thank you."])]
    assert [p["translations"] for p in body["predictions"]] == [h.text for h in hypotheses]
    np.testing.assert_allclose([p["scores"] for p in body["predictions"]], [h.score for h in hypotheses], rtol=1e-4)


def test_friendly_endpoints(server: str, cycle_run: Path, tiny_run: Path) -> None:
    code, body = call(f"{server}/v1/next-word", {"text": "north east south", "k": 3})
    assert code == 200 and body["next_words"][0][0]["word"] == "west" and len(body["next_words"][0]) == 3
    request = {"text": ["north", "up down"], "max_tokens": 9, "temperature": 0.7, "seed": 11}
    code, first = call(f"{server}/v1/generate", request)
    assert code == 200 and call(f"{server}/v1/generate", request)[1] == first
    assert first["text"] == nmt.load(cycle_run).generate(["north", "up down"], max_tokens=9, temperature=0.7, seed=11)
    code, body = call(f"{server}/v1/translate", {"text": "Good morning.", "beam": 1})
    greedy = nmt.load(tiny_run).translate(["Good morning."], beam_size=1)[0][0]
    assert code == 200 and body["translations"] == [greedy.text] and body["beam"] == 1
    code, body = call(f"{server}/v1/translate", {"text": ["Good morning."], "beam": 7})
    assert code == 400 and "translation is exported for beam" in body["error"] and "not 7;" in body["error"]
    with urllib.request.urlopen(f"{server}/docs", timeout=60) as response:
        assert response.status == 200 and "swagger" in response.read().decode().lower()
    with urllib.request.urlopen(f"{server}/openapi.json", timeout=60) as response:
        schema = json.loads(response.read())
    assert "/v1/next-word" in schema["paths"] and "requestBody" in schema["paths"]["/v1/translate"]["post"]


def test_attention_maps_and_hidden_states_over_http(server: str, cycle_run: Path, tiny_run: Path) -> None:
    translator = nmt.load(tiny_run)
    texts = ["Good morning.", "Where is the station?"]
    code, body = call(f"{server}/v1/translate", {"text": texts, "attention": True})
    assert code == 200 and body["beam"] == translator.config.decode.beam_size
    for text, translation, attention in zip(texts, body["translations"], body["attention"]):
        best = translator.translate([text], with_attention=True)[0][0]
        assert translation == best.text
        assert attention["source_tokens"] == best.source_tokens
        assert attention["target_tokens"] == [*best.tokens, "</s>"]
        weights = np.array(attention["weights"])
        assert weights.shape == (len(best.tokens) + 1, len(best.source_tokens))
        np.testing.assert_allclose(weights, best.attention, atol=1e-4)  # rounded to 4 decimals
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)
    code, body = call(f"{server}/v1/translate", {"text": "Good morning.", "beam": 1, "attention": True})
    assert code == 400 and "attention maps are exported for beam" in body["error"] and "not 1;" in body["error"]

    code, body = call(f"{server}/v1/inspect", {"text": ["north east", ""]})  # the language model by default
    assert code == 200 and body["model"] == "lm" and body["task"] == "lm" and body["units"] == 32
    trace = nmt.load(cycle_run).inspect.hidden_states("north east", k=5)
    first = body["results"][0]
    assert first["tokens"] == trace.tokens
    np.testing.assert_allclose(first["states"], trace.states, atol=1e-4)
    np.testing.assert_allclose(first["norms"], trace.norms, atol=1e-3)
    np.testing.assert_allclose(first["changes"], trace.changes, atol=1e-3)
    predicted = [[p["token"] for p in step] for step in first["predictions"]]
    assert predicted == [[w for w, _ in s] for s in trace.predictions]
    assert first["predictions"][-1][0]["token"] == "▁south"
    assert len(body["results"][1]["tokens"]) == 1  # an empty text: the start symbol only
    code, body = call(f"{server}/v1/inspect", {"text": "Good morning.", "model": "en-ja"})
    encoder = translator.inspect.hidden_states("Good morning.")
    assert code == 200 and body["task"] == "translation" and "predictions" not in body["results"][0]
    assert body["results"][0]["tokens"] == encoder.tokens
    np.testing.assert_allclose(body["results"][0]["states"], encoder.states, atol=1e-4)


def test_gradients_over_http_equal_the_package(server: str, cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    texts = ["north east south", "", "up down left"]
    code, body = call(f"{server}/v1/inspect", {"text": texts, "gradients": True})
    assert code == 200, body
    for text, result in zip(texts, body["results"]):
        expected = lm.inspect.gradients(text)
        gradients = result["gradients"]
        assert result["tokens"] == expected.tokens and gradients["next_token"] == expected.target
        np.testing.assert_allclose(gradients["norms"], expected.norms, rtol=1e-5, atol=1e-10)
        np.testing.assert_allclose(gradients["log_probability"], expected.log_probability, rtol=1e-5)
        assert gradients["distances"] == expected.distances.tolist()
    assert body["results"][0]["gradients"]["next_token"] == "▁west"
    code, body = call(f"{server}/v1/inspect", {"text": "north"})
    assert code == 200 and "gradients" not in body["results"][0]


def serve_in_thread(models_config: Path):
    """`nmt serve`'s server on a free port of 127.0.0.1, started in this process as the CLI starts it
    (nmt.serving.start); returns (base URL, stop)."""
    import functools

    from nmt.serving import ServerSettings, read_model_config, start

    server = start(ServerSettings(functools.partial(read_model_config, models_config), rest_port=0))
    return f"http://127.0.0.1:{server.ports['rest']}", server.stop


@pytest.mark.slow
def test_an_export_from_before_gradients_still_serves(cycle_run: Path, tmp_path: Path, monkeypatch) -> None:
    """An export written before the gradients signature existed (its record and its graph without
    one): inspect and next words work; asking for gradients is a clear 400."""
    import keras

    from nmt import signatures
    from nmt.export import export

    add_endpoint = keras.export.ExportArchive.add_endpoint
    monkeypatch.setattr(keras.export.ExportArchive, "add_endpoint",
                        lambda self, name, *args, **kwargs: None if name == signatures.GRADIENTS
                        else add_endpoint(self, name, *args, **kwargs))
    for_language_model = signatures.ServingRecord.for_language_model.__func__

    def old_record(cls, *args):
        record = for_language_model(cls, *args)
        roles = {k: v for k, v in record.signatures.items() if k != signatures.GRADIENTS}
        return signatures.ServingRecord(record.task, roles, max_prompt_tokens=record.max_prompt_tokens,
                                        max_k=record.max_k, running_text=record.running_text)

    monkeypatch.setattr(signatures.ServingRecord, "for_language_model", classmethod(old_record))
    export(cycle_run, tmp_path / "lm")
    monkeypatch.undo()
    record = json.loads((tmp_path / "lm" / "1" / signatures.RECORD_FILE).read_text())
    assert signatures.GRADIENTS not in record["signatures"]
    (tmp_path / "models.config").write_text('model_config_list { config { name: "lm" base_path: "lm" } }',
                                            encoding="utf-8")
    base, stop = serve_in_thread(tmp_path / "models.config")
    try:
        code, body = call(f"{base}/v1/inspect", {"text": "north east"})
        assert code == 200 and body["results"][0]["tokens"] == ["</s>", "▁north", "▁east"]
        code, body = call(f"{base}/v1/next-word", {"text": "north east", "k": 1})
        assert code == 200 and body["next_words"][0][0]["word"] == "south"
        code, body = call(f"{base}/v1/inspect", {"text": "north east", "gradients": True})
        assert code == 400 and body["error"] == ("model lm version 1 has no gradients signature (it was exported "
                                                 "before gradients existed); export the run again with `nmt export`")
    finally:
        stop()


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
        ("/v1/next-word", {"text": "north", "k": 0}, 400, "k must be an integer between 1 and"),
        ("/v1/next-word", {"text": []}, 400, "is empty"),
        ("/v1/generate", {"text": "north", "top_p": 0}, 400, "top_p must be in (0, 1]"),
        ("/v1/translate", {"text": "hi", "model": "lm"}, 400, "model lm is not a translation model"),
        ("/v1/translate", b"[1, 2", 400, "JSON Parse error"),
        ("/v1/translate", {"text": "hi", "attention": "yes please"}, 400, "invalid request: attention"),
        ("/v1/inspect", {"text": "north", "model": "nope"}, 404, "Servable not found"),
        ("/v1/inspect", {"text": []}, 400, "is empty"),
        ("/v1/inspect", {"text": "hi", "model": "en-ja", "gradients": True}, 400, "language models; model en-ja"),
        ("/v1/inspect", {"text": "north", "gradients": "yes please"}, 400, "invalid request: gradients"),
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
        assert count == 1 + len(prompt) % 3  # each its own k, whatever it was batched with (8 words: enough)
    after = batching_stats(server, "lm/1/next_words")
    assert after["rows"] - before["rows"] == 50  # (that calls merge: test_serving_calls, deterministically)


def test_concurrent_generate_with_different_settings(server: str, cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    requests = [{"text": "north", "max_tokens": 4 + i % 5, "temperature": [0.0, 0.8, 1.5][i % 3],
                 "top_k": i % 4, "top_p": [1.0, 0.9][i % 2], "seed": i} for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda r: call(f"{server}/v1/generate", r), requests))
    for request, (code, body) in zip(requests, answers):
        assert code == 200, body
        expected = lm.generate(["north"], max_tokens=request["max_tokens"], temperature=request["temperature"],
                               top_k=request["top_k"], top_p=request["top_p"], seed=request["seed"])
        assert body["text"] == expected


def test_a_foreign_savedmodel_is_served_by_the_tf_serving_api(tmp_path: Path) -> None:
    """A SavedModel that nmt did not export (no assets.extra/nmt.json): TF Serving's API serves it,
    the task endpoints say it is not theirs."""
    import tensorflow as tf

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def double(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 2 * x}

    module = Double()
    tf.saved_model.save(module, str(tmp_path / "double" / "1"), signatures={"serving_default": module.double})
    (tmp_path / "models.config").write_text('model_config_list { config { name: "double" base_path: "double" } }',
                                            encoding="utf-8")
    base, stop = serve_in_thread(tmp_path / "models.config")
    try:
        assert call(f"{base}/v1/models/double:predict", {"instances": [1.0, 2.5]}) == (200, {"predictions": [2.0, 5.0]})
        assert call(f"{base}/v1/models/double:predict", {"inputs": {"x": [3.0]}}) == (200, {"outputs": [6.0]})
        code, body = call(f"{base}/v1/models/double/versions/1/metadata")
        assert code == 200 and set(body["metadata"]["signature_def"]["signature_def"]) == {"serving_default"}
        assert call(f"{base}/healthz")[1]["tasks"] == {"double": None}
        code, body = call(f"{base}/v1/next-word", {"text": "a"})
        assert code == 404 and body["error"] == "no language model is served"
        code, body = call(f"{base}/v1/translate", {"text": "a", "model": "double"})
        assert code == 400 and body["error"] == "model double is not a translation model"
        code, body = call(f"{base}/v1/inspect", {"text": "a"})
        assert code == 400 and "\"inspect\" not found in signature def" in body["error"]
    finally:
        stop()


def test_the_package_and_the_options_load_neither_tensorflow_nor_fastapi() -> None:
    # The CLI checks `nmt serve`'s arguments before the seconds-long imports.
    code = ("import sys, nmt.serving, nmt.cli.serve, nmt.cli.model_server\n"
            "from nmt.serving import Limits, ServerSettings, read_model_config\n"
            "print(sorted({'tensorflow', 'fastapi', 'uvicorn'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.slow
def test_suggest_over_rest_predict_and_grpc_is_the_python_answer(server: str, keyboard_run: Path) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    lm = nmt.load(keyboard_run)
    typed = ["I love piz", "I love ", "we eat P", "I love zq"]
    code, body = call(f"{server}/v1/suggest", {"text": typed, "model": "keyboard"})
    assert code == 200, body
    want = lm.suggest(typed, k=3)
    assert [s["completing"] for s in body["suggestions"]] == ["piz", "", "P", "zq"]
    for got, expected in zip(body["suggestions"], want):
        assert [w["word"] for w in got["words"]] == [w for w, _ in expected.words]
        np.testing.assert_allclose([w["probability"] for w in got["words"]], [p for _, p in expected.words], atol=1e-5)
    assert body["suggestions"][3]["words"] == []
    assert body["suggestions"][0]["words"][0]["word"].startswith("piz")
    code, body = call(f"{server}/v1/suggest", {"text": "I love pi", "k": 0, "model": "keyboard"})
    assert code == 400 and "k must be an integer between 1 and" in body["error"]
    # TF Serving's own Predict, REST and gRPC, on the suggest signature: the same graph.
    code, body = call(f"{server}/v1/models/keyboard:predict",
                      {"signature_name": "suggest", "inputs": {"text": ["I love piz"], "k": [2]}})
    assert code == 200, body
    assert body["outputs"]["completing"] == ["piz"]
    assert [w for w in body["outputs"]["words"][0] if w] == [w for w, _ in lm.suggest("I love piz", k=2).words]
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "keyboard", "suggest"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"I love piz"], dtype=object)))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.array([2], np.int32)))
    with grpc.insecure_channel(server.grpc_address) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    words = [w.decode() for w in tf.make_ndarray(reply.outputs["words"])[0] if w]
    assert words == [w for w, _ in lm.suggest("I love piz", k=2).words]
    assert tf.make_ndarray(reply.outputs["completing"]).tolist() == [b"piz"]

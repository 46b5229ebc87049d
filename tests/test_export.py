"""SavedModel export: reloaded in a fresh process it gives what the package gives in-process, with
only ops that TensorFlow Serving has, through both the TF2 and the session-based TF1 loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nmt
from nmt.cli import main
from nmt.errors import NmtError
from nmt.export import export
from nmt.pipeline import pad_batch

SENTENCES = ["Good morning.", "", "Where is the station?", "I like tea very much."]
PROMPTS = ["north east", "", "up down left"]

# Runs in a new interpreter: nothing of the exporting process (its Python objects, its registered
# functions) can help the SavedModel load or run.
FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the SentencePiece ops, as TF Serving links them)

translation, lm, sentences, prompts, ids, lengths = json.loads(sys.stdin.read())
out = {}
m = tf.saved_model.load(translation)
out["translation_signatures"] = sorted(m.signatures)
for name in ("translate", "translate_greedy", "serving_default"):
    r = m.signatures[name](text=tf.constant(sentences))
    out[name] = {"translations": [t.decode() for t in r["translations"].numpy()],
                 "scores": r["scores"].numpy().tolist()}
r = m.signatures["translate_ids"](ids=tf.constant(ids, tf.int32), lengths=tf.constant(lengths, tf.int32))
out["translate_ids"] = {k: v.numpy().tolist() for k, v in r.items()}
def plain(outputs):
    return {k: (np.vectorize(bytes.decode)(v.numpy()).tolist() if v.dtype == tf.string else v.numpy().tolist())
            for k, v in outputs.items()}
out["translate_attention"] = plain(m.signatures["translate_attention"](text=tf.constant(sentences)))
out["translation_inspect"] = plain(m.signatures["inspect"](text=tf.constant(sentences)))
l = tf.saved_model.load(lm)
out["lm_signatures"] = sorted(l.signatures)
r = l.signatures["next_words"](text=tf.constant(prompts), k=tf.constant([2, 3, 1]))
out["next_words"] = {"words": [[w.decode() for w in row] for row in r["words"].numpy()],
                     "probabilities": r["probabilities"].numpy().tolist()}
n = len(prompts)
r = l.signatures["generate"](text=tf.constant(prompts), max_tokens=tf.fill([n], 10), temperature=tf.fill([n], 0.9),
                             top_k=tf.fill([n], 0), top_p=tf.fill([n], 0.95), seed=tf.fill([n], 5))
out["generate"] = [t.decode() for t in r["text"].numpy()]
out["lm_inspect"] = plain(l.signatures["inspect"](text=tf.constant(prompts)))

# The TF1 session loader reads the graph the way tensorflow_model_server's C++ loader does.
for key, path, name, feed in (("tf1_translate", translation, "translate", {"text": sentences}),
                              ("tf1_next_words", lm, "next_words", {"text": prompts, "k": [2, 3, 1]})):
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta.signature_def[name]
        result = session.run({k: v.name for k, v in signature.outputs.items()},
                             {signature.inputs[k].name: v for k, v in feed.items()})
        out[key] = {k: (v.astype(str).tolist() if v.dtype == object else v.tolist()) for k, v in result.items()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tiny_run: Path, cycle_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("export")
    return {"translation": export(tiny_run, out / "en-ja"), "lm": export(cycle_run, out / "lm")}


@pytest.fixture(scope="module")
def fresh(exported: dict, tiny_run: Path) -> dict:
    translator = nmt.load(tiny_run)
    ids, lengths = pad_batch(translator.source_tokenizer.encode(["Good morning.", "Where is the station?"]))
    payload = json.dumps([str(exported["translation"]), str(exported["lm"]), SENTENCES, PROMPTS, ids.tolist(),
                          lengths.tolist()])
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], input=payload, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"ids": ids, "lengths": lengths}


def test_exported_translation_equals_in_process_decoding(tiny_run: Path, fresh: dict) -> None:
    translator = nmt.load(tiny_run)
    assert fresh["translation_signatures"] == ["inspect", "score", "serving_default", "translate",
                                               "translate_attention", "translate_constrained", "translate_greedy",
                                               "translate_ids"]
    for name, beam in (("translate", translator.config.decode.beam_size), ("translate_greedy", 1)):
        expected = [h[0] for h in translator.translate(SENTENCES, beam_size=beam)]
        assert fresh[name]["translations"] == [h.text for h in expected]
        np.testing.assert_allclose(fresh[name]["scores"], [h.score for h in expected], rtol=1e-4, atol=1e-5)
    assert fresh["serving_default"] == fresh["translate"]
    assert fresh["tf1_translate"]["translations"] == fresh["translate"]["translations"]
    np.testing.assert_allclose(fresh["tf1_translate"]["scores"], fresh["translate"]["scores"], rtol=1e-5)
    result = translator.translate_batch_ids([list(r[:n]) for r, n in zip(fresh["ids"], fresh["lengths"])],
                                            translator.config.decode.beam_size)
    assert fresh["translate_ids"]["ids"] == result.ids.numpy()[:, 0].tolist()
    assert fresh["translate_ids"]["lengths"] == result.lengths.numpy()[:, 0].tolist()


def test_exported_attention_and_encoder_states_equal_in_process(tiny_run: Path, fresh: dict) -> None:
    translator = nmt.load(tiny_run)
    got = fresh["translate_attention"]
    assert got["translations"] == fresh["translate"]["translations"]
    expected = [h[0] for h in translator.translate(SENTENCES, with_attention=True)]
    for row, hypothesis in enumerate(expected):
        n_source, n_target = got["source_lengths"][row], got["target_lengths"][row]
        if not SENTENCES[row]:
            assert (n_source, n_target, got["translations"][row]) == (0, 0, "")
            continue
        # Each tokenizer is its own: the source pieces are the source model's, the output's the target's.
        assert got["source_tokens"][row][:n_source] == hypothesis.source_tokens
        assert got["target_tokens"][row][:n_target] == [*hypothesis.tokens, "</s>"]
        weights = np.array(got["attention"][row])[:n_target, :n_source]
        np.testing.assert_allclose(weights, hypothesis.attention, atol=1e-5)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        trace = translator.inspect.hidden_states(SENTENCES[row])
        states = fresh["translation_inspect"]
        assert states["tokens"][row][: states["lengths"][row]] == trace.tokens
        np.testing.assert_allclose(np.array(states["states"][row])[: len(trace.tokens)], trace.states, atol=1e-5)


def test_exported_language_model_equals_in_process(cycle_run: Path, fresh: dict) -> None:
    lm = nmt.load(cycle_run)
    assert fresh["lm_signatures"] == ["generate", "gradients", "inspect", "next_words", "next_words_ids",
                                      "serving_default", "suggest"]
    for row, (prompt, k) in enumerate(zip(PROMPTS, [2, 3, 1])):
        expected = lm.next_words(prompt, k=k)
        words = fresh["next_words"]["words"][row]
        assert words[:k] == [w for w, _ in expected] and all(w == "" for w in words[k:])
        np.testing.assert_allclose(fresh["next_words"]["probabilities"][row][:k], [p for _, p in expected], rtol=1e-4)
    assert fresh["next_words"]["words"][0][0] == "south"
    assert fresh["generate"] == lm.generate(PROMPTS, max_tokens=10, temperature=0.9, top_p=0.95, seed=5)
    assert "\n" in fresh["generate"][0]  # running text: EOS comes back as a line break
    assert fresh["tf1_next_words"]["words"] == fresh["next_words"]["words"]
    for row, prompt in enumerate(PROMPTS):
        trace = lm.inspect.hidden_states(prompt, k=5)
        inspected = fresh["lm_inspect"]
        n = inspected["lengths"][row]
        assert inspected["tokens"][row][:n] == trace.tokens and n == len(trace.tokens)
        np.testing.assert_allclose(np.array(inspected["states"][row])[:n], trace.states, atol=1e-5)
        assert inspected["top_tokens"][row][:n] == [[w for w, _ in step] for step in trace.predictions]
        np.testing.assert_allclose(np.array(inspected["top_probabilities"][row])[:n],
                                   [[p for _, p in step] for step in trace.predictions], rtol=1e-4, atol=1e-6)


def test_in_graph_tokenizers_stay_distinct_after_reload(tiny_run: Path, tmp_path: Path) -> None:
    # Regression: TF Text names a tokenizer's model resource after the tokenizer, and two unnamed
    # ones restored from a SavedModel shared the first one's model (English pieces for Japanese).
    import tensorflow as tf

    from nmt.run_dir import RunDir
    from nmt.tasks import task_for
    from nmt.text_policy import InGraphTokenizer
    from nmt.tokenizer import Tokenizer

    run = RunDir(tiny_run)
    source, target = (Tokenizer.load(p) for p in task_for(run.read_config()).tokenizer_files(run))
    module = tf.Module()
    module.source = InGraphTokenizer(source.model_proto, "source_tokenizer")
    module.target = InGraphTokenizer(target.model_proto, "target_tokenizer")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def pieces(ids: tf.Tensor) -> dict:
        return {"source": module.source.sentencepiece.id_to_string(ids),
                "target": module.target.sentencepiece.id_to_string(ids)}

    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"pieces": pieces})
    restored = tf.saved_model.load(str(tmp_path / "model")).signatures["pieces"](tf.range(4, 60))
    ids = range(4, 60)
    assert [t.decode() for t in restored["source"].numpy()] == [source.id_to_piece(i) for i in ids]
    assert [t.decode() for t in restored["target"].numpy()] == [target.id_to_piece(i) for i in ids]
    assert [source.id_to_piece(i) for i in ids] != [target.id_to_piece(i) for i in ids]


def saved_model_ops(path: Path) -> tuple[set[str], set[str]]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    ops, functions = set(), set()
    for meta in saved.meta_graphs:
        ops |= {node.op for node in meta.graph_def.node}
        for function in meta.graph_def.library.function:
            functions.add(function.signature.name)
            ops |= {node.op for node in function.node_def}
    return ops, functions


@pytest.mark.slow
def test_exported_graphs_use_only_core_tensorflow_and_tensorflow_text_ops(exported: dict) -> None:
    # Which ops core TensorFlow registers is asked in a process that has not loaded tensorflow-text.
    script = (
        "import json, sys; from tensorflow.python.framework import op_def_registry as r; "
        "names = json.loads(sys.stdin.read()); core = [n for n in names if r.get(n) is not None]; "
        "import tensorflow_text; text = [n for n in names if n not in core and r.get(n) is not None]; "
        "print(json.dumps([core, text]))"
    )
    for path in exported.values():
        ops, functions = saved_model_ops(path)
        names = sorted(ops - functions)
        done = subprocess.run([sys.executable, "-c", script], input=json.dumps(names), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        core, text = json.loads(done.stdout.strip().splitlines()[-1])
        assert sorted(set(names) - set(core) - set(text)) == [], f"{path}: ops outside core TF and TF Text"
        assert set(text) <= {"SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceDetokenizeOp",
                             "SentencepieceIdToStringOp"}
        assert "SentencepieceOp" in text  # tokenization really is inside the graph
        # Core TF registers these, but a model server cannot run Python.
        assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


@pytest.mark.slow
def test_the_export_is_cpu_servable_where_a_gpu_would_run_cudnn(tiny_run: Path, cycle_run: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a GPU is present, whole sequences run on Keras' layers (cuDNN): the export must trace
    our loop instead. Here the GPU is pretended and the Keras path made to fail, so an export
    that took it fails; and no Cudnn op may be in the written graphs."""
    from nmt.layers import recurrent

    def refuse(*args: object) -> None:
        raise AssertionError("the export traced the Keras (cuDNN) path")

    monkeypatch.setattr(recurrent, "gpu_present", lambda: True)
    monkeypatch.setattr(recurrent.Recurrent, "_keras_sequence", refuse)
    assert recurrent.recurrence_path("gru") == "keras"
    for run in (tiny_run, cycle_run):
        ops, _ = saved_model_ops(export(run, tmp_path / run.name))
        assert "While" in ops or "StatelessWhile" in ops
        assert not [op for op in ops if "cudnn" in op.lower()]


@pytest.mark.slow
def test_versions_are_numbered_immutable_and_written_whole(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "models" / "tiny"
    assert main(["export", "--run", str(tiny_run), "--out", str(out)]) == 0
    assert f"to {out / '1'}" in capsys.readouterr().out
    assert export(tiny_run, out) == out / "2"
    with pytest.raises(NmtError, match="exists: TF Serving versions are immutable"):
        export(tiny_run, out, version=2)
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"]  # no staging folders left behind
    assert (out / "1" / "saved_model.pb").is_file() and (out / "1" / "variables").is_dir()
    assert main(["export", "--run", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def loaded(exported: dict) -> dict:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - the SentencePiece ops

    return {name: tf.saved_model.load(str(path)) for name, path in exported.items()}


def strings_of(tensor) -> list:
    return np.vectorize(bytes.decode, otypes=[object])(tensor.numpy()).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("texts", [[""], [" "], ["", " \t "], ["Good morning.", ""], ["", "Good morning."]])
def test_the_empty_text_translates_to_the_empty_text_alone_or_batched(loaded: dict, tiny_run: Path, texts) -> None:
    # Regression: a batch of only empty texts tokenized to [batch, 0] and failed inside the graph
    # (Graph execution error), while the same text batched with a longer one translated.
    import tensorflow as tf

    model = loaded["translation"]
    translator = nmt.load(tiny_run)
    blank = [not t.strip() for t in texts]
    for name, beam in (("translate", translator.config.decode.beam_size), ("translate_greedy", 1),
                       ("translate_attention", translator.config.decode.beam_size)):
        out = model.signatures[name](text=tf.constant(texts))
        expected = [translator.translate([t], beam_size=beam)[0][0].text if t.strip() else "" for t in texts]
        assert strings_of(out["translations"]) == expected
        assert all(score == 0.0 for score, b in zip(out["scores"].numpy(), blank) if b)
        if name == "translate_attention":
            assert all(n == 0 for n, b in zip(out["target_lengths"].numpy(), blank) if b)
    inspected = model.signatures["inspect"](text=tf.constant(texts))
    assert all(n == 0 for n, b in zip(inspected["lengths"].numpy(), blank) if b)


def test_the_empty_prompt_works_in_every_language_model_signature(loaded: dict, cycle_run: Path) -> None:
    import tensorflow as tf

    model, lm = loaded["lm"], nmt.load(cycle_run)
    for texts in ([""], ["", "north"]):
        n = len(texts)
        words = strings_of(model.signatures["next_words"](text=tf.constant(texts), k=tf.fill([n], 2))["words"])
        assert words[0] == [w for w, _ in lm.next_words("", k=2)]
        assert strings_of(model.signatures["serving_default"](text=tf.constant(texts))["words"])[0][:2] == words[0]
        generated = model.signatures["generate"](text=tf.constant(texts), max_tokens=tf.fill([n], 4),
                                                 temperature=tf.fill([n], 0.0), top_k=tf.fill([n], 0),
                                                 top_p=tf.fill([n], 1.0), seed=tf.fill([n], 0))
        assert strings_of(generated["text"])[0] == lm.generate("", max_tokens=4, temperature=0.0)
        assert model.signatures["inspect"](text=tf.constant(texts))["lengths"].numpy()[0] == 1  # the start symbol


def test_generate_refuses_nan_and_infinite_settings_in_the_graph(loaded: dict) -> None:
    # Clients of stock TF Serving reach the graph without nmt serve's checks.
    import tensorflow as tf

    generate = loaded["lm"].signatures["generate"]
    settings = dict(text=tf.constant(["north"]), max_tokens=tf.constant([3]), top_k=tf.constant([0]),
                    seed=tf.constant([0]))
    for name, bad in (("temperature", float("nan")), ("top_p", float("inf"))):
        values = {"temperature": tf.constant([1.0]), "top_p": tf.constant([1.0]), name: tf.constant([bad])}
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{name} must be a finite number"):
            generate(**settings, **values)
    assert generate(**settings, temperature=tf.constant([1.0]), top_p=tf.constant([1.0]))["text"].shape == [1]


def test_ids_outside_the_vocabulary_fail_cleanly_in_the_graph(loaded: dict, tiny_run: Path) -> None:
    # TF Serving runs this graph as it is: an id outside the embedding table must neither crash
    # nor read garbage (on an accelerator a gather reads zeros), so the graph refuses it.
    import tensorflow as tf

    vocab = nmt.load(tiny_run).source_tokenizer.vocab_size
    translate_ids = loaded["translation"].signatures["translate_ids"]
    next_words_ids = loaded["lm"].signatures["next_words_ids"]
    for bad in (-1, vocab, 2**31 - 1):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"ids must be in \[0, {vocab}\) \(the vocabulary\)"):
            translate_ids(ids=tf.constant([[5, bad]]), lengths=tf.constant([2]))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"ids must be in \[0, 12\)"):
            next_words_ids(ids=tf.constant([[4, bad]]), lengths=tf.constant([2]), k=tf.constant([2]))
    # Past a row's length an id is padding, whatever its value; lengths past the ids are cut.
    clean = translate_ids(ids=tf.constant([[5, 6, 0]]), lengths=tf.constant([2]))
    for ids, lengths in (([[5, 6, -7]], [2]), ([[5, 6]], [9])):
        out = translate_ids(ids=tf.constant(ids), lengths=tf.constant(lengths))
        assert out["ids"].numpy().tolist() == clean["ids"].numpy().tolist()
    empty = translate_ids(ids=tf.zeros([2, 0], tf.int32), lengths=tf.constant([0, 0]))
    assert empty["ids"].shape[0] == 2


@pytest.mark.slow
@pytest.mark.parametrize("kib", [200, 1500])
def test_a_full_disk_ends_in_one_error_line_and_no_version_folder(tiny_run: Path, tmp_path: Path, kib: int) -> None:
    from faults import run_nmt, small_disk

    with small_disk(tmp_path, kib=kib) as disk:
        out = disk / "models" / "en-ja"
        done = run_nmt(["export", "--run", str(tiny_run), "--out", str(out)], timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"nmt: error: no space left on device while writing {out / '1'}" in done.stderr
        assert "Traceback" not in done.stderr
        assert list(out.iterdir()) == []  # neither the version nor its hidden staging folder


@pytest.mark.slow
@pytest.mark.parametrize("task, signatures_", [
    ("translation", ["inspect", "score", "serving_default", "translate", "translate_attention",
                     "translate_constrained", "translate_greedy", "translate_ids"]),
    ("lm", ["generate", "gradients", "inspect", "next_words", "next_words_ids", "serving_default", "suggest"]),
])
def test_the_export_carries_a_warmup_request_per_signature(exported: dict, task: str, signatures_: list[str]) -> None:
    """assets.extra/tf_serving_warmup_requests: one PredictLog per signature, each of which the
    model answers, replayed on load (nmt serve's Servable as TF Serving's loader)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from nmt.serving.config import Limits
    from nmt.serving.registry import Servable
    from nmt.signatures import WARMUP_FILE

    path = exported[task] / WARMUP_FILE
    logs = [prediction_log_pb2.PredictionLog.FromString(r)
            for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == signatures_
    inputs = [proto for log in logs for proto in log.predict_log.request.inputs.values()]
    assert all(tf.make_ndarray(proto).shape[0] == 1 for proto in inputs)
    assert Servable(task, 1, exported[task], Limits()).warmup_requests == len(signatures_)

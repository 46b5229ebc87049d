"""Scoring given translations (forced decoding): Python, the CLI, the exported signature in a fresh
process and /v1/score on a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from nmt import decoding
from nmt.cli import main
from nmt.errors import NmtError
from nmt.pipeline import pad_batch

from conftest import call

SOURCES = ["Good morning.", "Where is the station?", "I like tea very much.", "Thank you."]


@pytest.fixture(scope="module")
def translator(tiny_run: Path):
    from nmt.inference import load

    return load(tiny_run)


def test_forced_decoding_of_the_searchs_outputs_gives_the_searchs_scores(translator) -> None:
    ids = translator.source_tokenizer.encode(SOURCES)
    source, source_lengths = pad_batch(ids)
    alpha = translator.config.decode.length_penalty
    for beam in (1, 3):
        result = translator.translate_batch_ids(ids, beam)
        for n in range(beam):  # every hypothesis of the n-best list, ended by EOS (none hit the limit)
            lengths = result.lengths[:, n].numpy()
            assert (lengths < decoding.max_output_lengths(source_lengths, 2.0, 10).numpy()).all()
            pieces = translator.score_ids(source, source_lengths, result.ids[:, n].numpy(), lengths - 1).numpy()
            normalized = pieces.sum(axis=1) / decoding.length_penalty(tf.constant(lengths), alpha).numpy()
            np.testing.assert_allclose(normalized, result.scores[:, n].numpy(), rtol=1e-5, atol=1e-5)
            assert (pieces[np.arange(pieces.shape[1])[None, :] >= lengths[:, None]] == 0).all()  # past EOS


def test_word_scores_sum_to_the_sentence_score_and_normalizing_divides_by_the_penalty(translator) -> None:
    targets = ["おはよう。", "駅はどこですか。", "", "ありがとう。"]
    scores = translator.score(SOURCES, targets)
    alpha = translator.config.decode.length_penalty
    for target, result in zip(targets, scores):
        assert result.pieces[-1] == "</s>" and len(result.pieces) == len(result.piece_scores)
        assert len(result.pieces) == len(translator.target_tokenizer.encode([target])[0]) + 1
        assert result.log_probability == pytest.approx(sum(result.piece_scores), abs=1e-5)
        assert result.log_probability < 0
        penalty = float(decoding.length_penalty(tf.constant(len(result.pieces)), alpha))
        assert result.normalized == pytest.approx(result.log_probability / penalty, rel=1e-6)
    # An empty target is the empty translation: EOS alone, what the (tiny) model's search finds first.
    empty = translator.translate([SOURCES[2]], beam_size=3)[0][0]
    assert empty.text == "" and scores[2].pieces == ["</s>"]
    assert scores[2].normalized == pytest.approx(empty.score, abs=1e-5)
    # Batched or one at a time, the same numbers.
    alone = translator.score([SOURCES[1]], [targets[1]])[0]
    assert alone.log_probability == pytest.approx(scores[1].log_probability, abs=1e-5)


def test_bad_pairs_are_clear_errors(translator) -> None:
    with pytest.raises(NmtError, match="line 2: empty source text"):
        translator.score(["Hello.", "  "], ["a", "b"])
    with pytest.raises(NmtError, match="2 source lines but 1 target lines"):
        translator.score(["Hello.", "Bye."], ["a"])


def test_the_cli_prints_one_score_per_pair(tiny_run: Path, tmp_path: Path, translator,
                                           capsys: pytest.CaptureFixture) -> None:
    src, tgt = tmp_path / "src.en", tmp_path / "tgt.ja"
    src.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    tgt.write_text("おはよう。\n駅はどこですか。\n\nありがとう。\n", encoding="utf-8")
    expected = translator.score(SOURCES, ["おはよう。", "駅はどこですか。", "", "ありがとう。"])
    assert main(["score", "--run", str(tiny_run), "--src", str(src), "--tgt", str(tgt)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [float(x) for x in lines] == pytest.approx([e.log_probability for e in expected], abs=1e-4)
    assert main(["score", "--run", str(tiny_run), "--src", str(src), "--tgt", str(tgt), "--normalize",
                 "--word-scores"]) == 0
    lines = capsys.readouterr().out.splitlines()
    value, pieces = lines[1].split(" ||| ")
    assert float(value) == pytest.approx(expected[1].normalized, abs=1e-4)
    assert pieces.split()[::2] == expected[1].pieces
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--run", str(tiny_run), "--src", str(src), "--tgt", str(tgt), "--json", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[2]["pieces"] == ["</s>"] and rows[0]["log_probability"] == pytest.approx(expected[0].log_probability)
    short = tmp_path / "short.ja"
    short.write_text("a\n", encoding="utf-8")
    assert main(["score", "--run", str(tiny_run), "--src", str(src), "--tgt", str(short)]) == 2
    assert f"{short} has 1 lines but {src} has 4" in capsys.readouterr().err
    (tmp_path / "blank.en").write_text("Hello.\n\n", encoding="utf-8")
    (tmp_path / "two.ja").write_text("a\nb\n", encoding="utf-8")
    assert main(["score", "--run", str(tiny_run), "--src", str(tmp_path / "blank.en"),
                 "--tgt", str(tmp_path / "two.ja")]) == 2
    assert "line 2: empty source text" in capsys.readouterr().err


FRESH = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
path, sources, targets = json.loads(sys.stdin.read())
m = tf.saved_model.load(path)
r = m.signatures["score"](text=tf.constant(sources), target=tf.constant(targets))
out = {k: ([[b.decode() for b in row] for row in v.numpy()] if v.dtype == tf.string else v.numpy().tolist())
       for k, v in r.items()}
try:
    m.signatures["score"](text=tf.constant(["Hello.", ""]), target=tf.constant(["a", "b"]))
except tf.errors.InvalidArgumentError as error:
    out["empty_source_error"] = error.message
print(json.dumps(out))
"""


def test_the_score_signature_equals_the_package_in_a_fresh_process(tiny_run: Path, tmp_path: Path,
                                                                   translator) -> None:
    from nmt.export import export

    targets = ["おはよう。", "駅はどこですか。", "", "ありがとう。"]
    path = export(tiny_run, tmp_path / "model")
    done = subprocess.run([sys.executable, "-c", FRESH], input=json.dumps([str(path), SOURCES, targets]),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    expected = translator.score(SOURCES, targets)
    np.testing.assert_allclose(got["scores"], [e.log_probability for e in expected], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["normalized_scores"], [e.normalized for e in expected], rtol=1e-5, atol=1e-5)
    for row, e in enumerate(expected):
        n = got["target_lengths"][row]
        assert got["target_tokens"][row][:n] == e.pieces
        np.testing.assert_allclose(got["piece_scores"][row][:n], e.piece_scores, rtol=1e-5, atol=1e-5)
    assert "empty source text" in got["empty_source_error"]


def test_v1_score_on_a_real_server(server: str, translator) -> None:
    targets = ["おはよう。", "ありがとう。"]
    code, body = call(f"{server}/v1/score", {"text": [SOURCES[0], SOURCES[3]], "target": targets})
    assert code == 200, body
    expected = translator.score([SOURCES[0], SOURCES[3]], targets)
    for result, e in zip(body["results"], expected):
        assert result["tokens"] == e.pieces
        assert result["log_probability"] == pytest.approx(e.log_probability, abs=1e-4)
        assert result["normalized"] == pytest.approx(e.normalized, abs=1e-4)
        assert result["token_scores"] == pytest.approx(e.piece_scores, abs=1e-4)
    code, body = call(f"{server}/v1/score", {"text": ["a", "b"], "target": ["x"]})
    assert code == 400 and "one translation per text: 2 text(s), 1 target(s)" in body["error"]
    code, body = call(f"{server}/v1/score", {"text": "north", "target": "east", "model": "lm"})
    assert code == 400


def test_a_language_model_scores_each_line_on_its_own(cycle_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import nmt

    lm = nmt.load(cycle_run)
    lines = ["north east south", "up down", ""]
    scores = lm.score(lines)
    for line, result in zip(lines, scores):
        ids = lm.tokenizer.encode([line])[0]
        state, previous, expected = lm.model.initial_state(1), lm.start_id, []
        for target in [*ids, 3]:  # step by step from the start, then EOS
            logits, state, _ = lm.model.step(tf.constant([previous]), state, {})
            expected.append(float(tf.nn.log_softmax(logits)[0, target]))
            previous = target
        np.testing.assert_allclose(result.piece_scores, expected, rtol=1e-5, atol=1e-5)
        assert result.pieces[-1] == "</s>" and result.log_probability == pytest.approx(sum(expected), abs=1e-4)
    assert scores[0].log_probability > scores[1].log_probability - 50  # both finite
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["score", "--run", str(cycle_run), "--text", str(text)]) == 0
    printed = [float(x) for x in capsys.readouterr().out.splitlines()]
    assert printed == pytest.approx([s.log_probability for s in scores], abs=1e-4)
    assert main(["score", "--run", str(cycle_run), "--text", str(text), "--src", str(text)]) == 2
    assert "score needs --src and --tgt (a translation model) or --text (a language model)" in capsys.readouterr().err

"""Ensembles: one model's output when alone or doubled, the mean of the members' step
log-probabilities, one vocabulary, and the CLI's --run A --run B / --weights A,B."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.cli import main
from nmt.errors import NmtError
from nmt.pipeline import pad_batch

SENTENCES = ["Good morning.", "", "Where is the station?", "I like tea very much."]


def _same_outputs(a, b) -> None:
    for a_list, b_list in zip(a, b):
        assert [h.text for h in a_list] == [h.text for h in b_list]
        np.testing.assert_allclose([h.score for h in a_list], [h.score for h in b_list], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["log_probs", "probs"])
def test_an_ensemble_of_one_or_of_two_copies_decodes_as_the_model(tiny_run: Path, mode: str) -> None:
    model = nmt.load(tiny_run)
    for members in ([tiny_run], [tiny_run, (tiny_run, "best")]):
        ensemble = nmt.load_ensemble(members, mode)
        for beam in (1, 3):
            _same_outputs(model.translate(SENTENCES, beam_size=beam, nbest=beam),
                          ensemble.translate(SENTENCES, beam_size=beam, nbest=beam))


def test_the_ensembles_step_is_the_mean_of_its_members(tiny_run: Path) -> None:
    members = [nmt.load(tiny_run, weights="ckpt-20"), nmt.load(tiny_run, weights="ckpt-40")]
    ids = members[0].source_tokenizer.encode(SENTENCES[2:])
    source, lengths = pad_batch(ids)
    previous = tf.constant([5, 9])
    member_log_probs = []
    for member in members:
        context, state = member.model.encode(source, lengths)
        logits, _, _ = member.model.step(previous, state, context)
        member_log_probs.append(tf.nn.log_softmax(logits).numpy())
    assert not np.allclose(member_log_probs[0], member_log_probs[1])  # two different models
    for mode, expected in (("log_probs", np.mean(member_log_probs, axis=0)),
                           ("probs", np.log(np.mean(np.exp(member_log_probs), axis=0)))):
        ensemble = nmt.load_ensemble([(tiny_run, "ckpt-20"), (tiny_run, "ckpt-40")], mode).model
        context, state = ensemble.encode(source, lengths)
        combined, new_state, attention = ensemble.step(previous, state, context)
        np.testing.assert_allclose(combined.numpy(), expected, rtol=1e-5, atol=1e-5)
        assert len(new_state) == 2 and tuple(attention.shape) == (2, source.shape[1])
        # What the search reads: the renormalised combination (probs: already normalised).
        search = tf.nn.log_softmax(combined).numpy()
        if mode == "probs":
            np.testing.assert_allclose(search, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.exp(search).sum(axis=1), 1.0, rtol=1e-5)


def test_members_must_share_the_vocabularies(tiny_run: Path, tmp_path: Path) -> None:
    from sentencepiece import sentencepiece_model_pb2

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns(".lock"))
    target = other / "spm" / "target.model"
    proto = sentencepiece_model_pb2.ModelProto.FromString(target.read_bytes())
    proto.pieces[10].score -= 1.0  # the same size, another segmentation model
    target.write_bytes(proto.SerializeToString())
    with pytest.raises(NmtError, match=r"other \(best\)'s target SentencePiece model differs from .*en-ja-tiny"):
        nmt.load_ensemble([tiny_run, other])


def test_the_cli_decodes_with_an_ensemble(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in.en"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.ja"
    assert main(["translate", "--run", str(tiny_run), "--weights", "ckpt-20,ckpt-40", "-i", str(source), "-o",
                 str(out), "--beam", "3"]) == 0
    expected = nmt.load_ensemble([(tiny_run, "ckpt-20"), (tiny_run, "ckpt-40")]).translate(SENTENCES, beam_size=3)
    assert out.read_text(encoding="utf-8").splitlines() == [h[0].text for h in expected]
    assert main(["translate", "--run", str(tiny_run), "--run", str(tiny_run), "-i", str(source), "-o", str(out),
                 "--ensemble-mode", "probs"]) == 0
    assert main(["translate", "--run", str(tiny_run), "--weights", "ckpt-20,ckpt-40", "--shortlist", "-i",
                 str(source)]) == 2
    assert "has no vocabulary shortlist" in capsys.readouterr().err


FRESH = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
path, sentences = json.loads(sys.stdin.read())
m = tf.saved_model.load(path)
out = {"signatures": sorted(m.signatures)}
for name in ("translate", "translate_greedy"):
    r = m.signatures[name](text=tf.constant(sentences))
    out[name] = [[t.decode() for t in r["translations"].numpy()], r["scores"].numpy().tolist()]
r = m.signatures["score"](text=tf.constant(sentences[2:]), target=tf.constant(out["translate"][0][2:]))
out["score"] = r["scores"].numpy().tolist()
print(json.dumps(out))
"""


def test_an_exported_ensemble_decodes_as_the_ensemble_in_a_fresh_process(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert main(["export", "--run", str(tiny_run), "--weights", "ckpt-20,ckpt-40", "--out", str(out), "-q"]) == 0
    done = subprocess.run([sys.executable, "-c", FRESH], input=json.dumps([str(out / "1"), SENTENCES]),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert "inspect" not in got["signatures"] and "translate" in got["signatures"]  # no single encoder to show
    ensemble = nmt.load_ensemble([(tiny_run, "ckpt-20"), (tiny_run, "ckpt-40")])
    single = nmt.load(tiny_run, weights="ckpt-40")
    for name, beam in (("translate", ensemble.config.decode.beam_size), ("translate_greedy", 1)):
        expected = ensemble.translate(SENTENCES, beam_size=beam)
        assert got[name][0] == [h[0].text for h in expected]
        np.testing.assert_allclose(got[name][1], [h[0].score for h in expected], rtol=1e-5, atol=1e-5)
        # The ensemble is not one of its members in disguise.
        assert not np.allclose(got[name][1], [h[0].score for h in single.translate(SENTENCES, beam_size=beam)])
    scores = ensemble.score(SENTENCES[2:], got["translate"][0][2:])
    np.testing.assert_allclose(got["score"], [s.log_probability for s in scores], rtol=1e-5, atol=1e-5)


def test_tflite_refuses_an_ensemble(cycle_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "--run", str(cycle_run), "--run", str(cycle_run), "--format", "tflite", "--out",
                 str(tmp_path / "phone")]) == 2
    assert "holds a language model" in capsys.readouterr().err
    assert main(["export", "--run", str(cycle_run), "--weights", "best,latest", "--format", "tflite", "--out",
                 str(tmp_path / "phone")]) == 2
    assert "exports one language model, not an ensemble" in capsys.readouterr().err

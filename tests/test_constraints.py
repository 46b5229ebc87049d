"""Terminology constraints: every constraint in the best output, no avoided phrase, clear errors,
no constraints = the plain search bit for bit, the Python and in-graph encodings equal, and the CLI's
--json-input, the exported signature in a fresh process and /v1/translate on a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.cli import main
from nmt.constraints import InGraphTerminology, Terminology, TerminologyEncoder
from nmt.errors import NmtError

from conftest import call

SOURCES = ["Where is the station?", "I like tea very much.", "Good morning.", "He went to Tokyo yesterday."]
# Phrases the tiny run's 1,000-piece vocabulary can write.
TERMS = [Terminology.of(["学校"]), Terminology.of(["お茶", "とても"]), Terminology.of(["おはよう"], ["ござい"]),
         Terminology.of(["時間", "先生"])]


@pytest.fixture(scope="module")
def translator(tiny_run: Path):
    return nmt.load(tiny_run)


@pytest.mark.parametrize("beam", [1, 3, 5])
def test_every_constraint_is_in_the_best_output(translator, beam: int) -> None:
    results = translator.translate(SOURCES, beam_size=beam, nbest=1, terminology=TERMS)
    for hypotheses, item in zip(results, TERMS):
        for phrase in item.constraints:
            assert phrase in hypotheses[0].text, (phrase, hypotheses[0].text)
    assert translator.unmet == []


def test_avoided_phrases_never_appear(translator) -> None:
    # The tiny model writes little of its own: avoid a character its constrained n-best lists wrote
    # besides the constraints.
    required = [Terminology.of(t.constraints) for t in TERMS]
    before = translator.translate(SOURCES, beam_size=3, nbest=3, terminology=required)
    avoid = []
    for item, hypotheses in zip(required, before):
        written = Counter(c for h in hypotheses for c in h.text if not any(c in p for p in item.constraints))
        assert written, [h.text for h in hypotheses]
        avoid.append(Terminology.of(item.constraints, [written.most_common(1)[0][0]]))
    after = translator.translate(SOURCES, beam_size=3, nbest=3, terminology=avoid)
    for item, hypotheses in zip(avoid, after):
        for hypothesis in hypotheses:  # in none of the n best now
            assert item.avoid[0] not in hypothesis.text, (item.avoid[0], hypothesis.text)
        assert all(p in hypotheses[0].text for p in item.constraints)


def test_no_constraints_is_the_plain_search_bit_for_bit(translator) -> None:
    for beam in (1, 3):
        plain = translator.translate(SOURCES, beam_size=beam, nbest=beam)
        empty = translator.translate(SOURCES, beam_size=beam, nbest=beam, terminology=[Terminology()] * 4)
        assert [[(h.text, h.score) for h in x] for x in plain] == [[(h.text, h.score) for h in x] for x in empty]
    # Through the constrained search itself, with nothing to constrain: the same ids and scores.
    ids = translator.source_tokenizer.encode(SOURCES)
    nothing = translator.terminology_encoder.encode([Terminology()] * 4, [40] * 4)
    plain = translator.translate_batch_ids(ids, 3)
    constrained = translator.translate_batch_ids(ids, 3, constraints=nothing)
    np.testing.assert_array_equal(plain.ids.numpy(), constrained.ids.numpy())
    np.testing.assert_array_equal(plain.scores.numpy(), constrained.scores.numpy())


def test_constraints_that_cannot_fit_fail_clearly(translator) -> None:
    with pytest.raises(NmtError, match=r"line 1: the constraints take \d+ pieces but this input's output may have "
                                       r"at most \d+"):
        translator.translate(["Hi."], terminology=[Terminology.of(["学校に行きたいです。" * 8])])
    with pytest.raises(ValueError, match="holds the avoided phrase '駅'"):
        Terminology.of(["東京駅"], ["駅"])
    with pytest.raises(ValueError, match="holds an empty phrase"):
        Terminology.of([" "])
    with pytest.raises(NmtError, match="line 1: 'Ω' has characters the target vocabulary lacks"):
        translator.translate(["Hi."], terminology=[Terminology.of(["Ω"])])
    with pytest.raises(NmtError, match="2 texts but 1 terminology entries"):
        translator.translate(["Hi.", "Yes."], terminology=[Terminology()])


def test_the_python_and_in_graph_encodings_agree(translator) -> None:
    items = [Terminology.of(["学校", "お茶 です"], ["ござい", "a.b", "."]), Terminology(), Terminology.of(["時間"])]
    python = TerminologyEncoder(translator.target_tokenizer, "ja").encode(items, [40, 40, 40])
    graph = InGraphTerminology(translator.target_tokenizer, "ja")

    def rows(phrases: list[tuple[str, ...]]) -> tf.Tensor:
        width = max(len(p) for p in phrases)
        return tf.constant([list(p) + [""] * (width - len(p)) for p in phrases])

    in_graph = graph.encode(rows([i.constraints for i in items]), rows([i.avoid for i in items]), tf.constant([40] * 3))
    for name, a, b in zip(python._fields, python, in_graph):
        np.testing.assert_array_equal(np.asarray(a), b.numpy(), err_msg=name)
    assert python.banned[0].sum() > 0 and not python.banned[1].any()
    # Japanese phrases are pieces as inside a sentence (no word-start marker); English ones as words.
    pieces = [translator.target_tokenizer.id_to_piece(i) for i in python.tokens[0] if i]
    assert not pieces[0].startswith("▁")


FRESH = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
path, sources, constraints, avoid = json.loads(sys.stdin.read())
m = tf.saved_model.load(path)
r = m.signatures["translate_constrained"](text=tf.constant(sources), constraints=tf.constant(constraints),
                                          avoid=tf.constant(avoid))
out = {"translations": [t.decode() for t in r["translations"].numpy()], "scores": r["scores"].numpy().tolist()}
try:
    m.signatures["translate_constrained"](text=tf.constant(["Hi."]), constraints=tf.constant([["学校" * 40]]),
                                          avoid=tf.constant([[""]]))
except tf.errors.InvalidArgumentError as error:
    out["too_long"] = error.message
print(json.dumps(out))
"""


def _rows(items: list[Terminology], name: str) -> list[list[str]]:
    width = max(len(getattr(i, name)) for i in items) or 1
    return [list(getattr(i, name)) + [""] * (width - len(getattr(i, name))) for i in items]


def test_the_exported_signature_equals_the_package_in_a_fresh_process(tiny_run: Path, tmp_path: Path,
                                                                        translator) -> None:
    from nmt.export import export

    path = export(tiny_run, tmp_path / "model")
    sources, items = [*SOURCES, ""], [*TERMS, Terminology()]
    done = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, timeout=300,
                          input=json.dumps([str(path), sources, _rows(items, "constraints"), _rows(items, "avoid")]))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    expected = translator.translate(SOURCES, terminology=TERMS)
    assert got["translations"] == [h[0].text for h in expected] + [""]
    np.testing.assert_allclose(got["scores"][:4], [h[0].score for h in expected], rtol=1e-5, atol=1e-5)
    assert "the constraints take more pieces than the output may have" in got["too_long"]


def test_the_cli_reads_json_input(tiny_run: Path, tmp_path: Path, translator, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": s, "constraints": list(t.constraints), "avoid": list(t.avoid)}, ensure_ascii=False)
             for s, t in zip(SOURCES, TERMS)]
    plain_line = json.dumps({"text": SOURCES[1]})
    source.write_text("\n".join([lines[0], "", plain_line, *lines[1:]]) + "\n", encoding="utf-8")
    out = tmp_path / "out.ja"
    assert main(["translate", "--run", str(tiny_run), "--json-input", "-i", str(source), "-o", str(out)]) == 0
    expected = translator.translate([SOURCES[0], "", SOURCES[1], *SOURCES[1:]],
                                    terminology=[TERMS[0], Terminology(), Terminology(), *TERMS[1:]])
    assert out.read_text(encoding="utf-8").splitlines() == [h[0].text for h in expected]
    for bad, message in (("{\"text\": 1}", "line 1: expected a JSON object with a \"text\" string"),
                         ("not json", "line 1: not JSON (Expecting value at column 1)"),
                         ("{\"text\": \"a\", \"constrain\": [\"x\"]}", "line 1: unknown key 'constrain'"),
                         ("{\"text\": \"a\", \"constraints\": \"x\"}",
                          "line 1: 'constraints' must be a list of strings")):
        source.write_text(bad + "\n", encoding="utf-8")
        assert main(["translate", "--run", str(tiny_run), "--json-input", "-i", str(source)]) == 2
        assert f"{source} {message}" in capsys.readouterr().err


def test_v1_translate_with_terminology_on_a_real_server(server: str, translator) -> None:
    body = {"text": SOURCES[:2], "constraints": [list(TERMS[0].constraints), list(TERMS[1].constraints)],
            "avoid": [[], ["ござい"]]}
    code, answer = call(f"{server}/v1/translate", body)
    assert code == 200, answer
    expected = translator.translate(SOURCES[:2],
                                    terminology=[TERMS[0], Terminology.of(TERMS[1].constraints, ["ござい"])])
    assert answer["translations"] == [h[0].text for h in expected]
    assert answer["scores"] == pytest.approx([h[0].score for h in expected], abs=1e-4)
    code, answer = call(f"{server}/v1/translate", {"text": SOURCES[0], "constraints": ["先生"]})  # one text
    assert code == 200 and "先生" in answer["translations"][0]
    code, answer = call(f"{server}/v1/translate", {"text": SOURCES[:2], "constraints": [["先生"]]})
    assert code == 400 and "one list of phrases per text: 2 text(s)" in answer["error"]
    code, answer = call(f"{server}/v1/translate", {"text": SOURCES[0], "constraints": ["東京駅"], "avoid": ["駅"]})
    assert code == 400 and "holds the avoided phrase" in answer["error"]
    code, answer = call(f"{server}/v1/translate", {"text": "Hi.", "constraints": ["学校" * 40]})
    assert code == 400 and "more pieces than the output may have" in answer["error"]

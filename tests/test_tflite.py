"""``nmt export --format tflite``: each variant, reloaded in a fresh process by ``tf.lite.Interpreter``
(through :class:`nmt.tflite.TfliteNextWords`), gives the exported SavedModel's next words, and its
float32 model the SavedModel's ``suggest`` answers (completions of the word being typed); translation
runs are refused; files are whole or absent."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nmt.cli import main
from nmt.errors import NmtError

from conftest import CYCLE

ROOT = Path(__file__).resolve().parent.parent
SUBWORD_PROMPTS = ["I love eating", "", "Where is the", "He said that", "Tom", "Zyxqv blorfs", "  I love   eating ",
                   "It's", "Can you help me", "The cat sat on the",
                   # ... and the first words of 50 dev sentences: 60 prompts, so that one disagreement
                   # moves the share by 1.7 points, not 10 (the bar is 0.9).
                   *(" ".join(line.split()[:3]) for line in
                     (ROOT / "data" / "en-ja" / "dev.en").read_text(encoding="utf-8").splitlines()[:50])]
CYCLE_PROMPTS = [" ".join((CYCLE * 3)[i:i + n]) for i in range(8) for n in (1, 3, 6)]
# Texts a keyboard sends: inside a word (completions), after a space (next words), no possible word.
SUBWORD_TYPED = ["I love piz", "Where is th", "T", "Can you he", "I love ", "Zyxq", "He said that I", "It's a ",
                 "Tom is ver", "I don'", *(line[: len(line) // 2] for line in
                                             (ROOT / "data" / "en-ja" / "dev.en").read_text(encoding="utf-8")
                                             .splitlines()[:30])]
CYCLE_TYPED = ["north ea", "west u", "s", "north east ", "nor", "x", "up down le", ""]
# Quantized variants: the top-1 word equals the float32 SavedModel's on at least this share of prompts.
QUANTIZED_TOP1_AGREEMENT = 0.9


def savedmodel_next_words(export_dir: Path, prompts: list[str], k: int) -> list[list[tuple[str, float]]]:
    """The exported SavedModel's ``next_words`` signature, as TF Serving would run it."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    found = loaded.signatures["next_words"](text=tf.constant(prompts), k=tf.fill([len(prompts)], k))
    return [[(w.decode(), float(p)) for w, p in zip(words, probs) if w]
            for words, probs in zip(found["words"].numpy(), found["probabilities"].numpy())]


def savedmodel_suggest(export_dir: Path, typed: list[str], k: int) -> list[dict]:
    import tensorflow as tf

    suggest = tf.saved_model.load(str(export_dir)).signatures["suggest"]
    found = suggest(text=tf.constant(typed), k=tf.fill([len(typed)], k))
    return [{"completing": c.decode(), "words": [(w.decode(), float(p)) for w, p in zip(words, probs) if w]}
            for c, words, probs in zip(found["completing"].numpy(), found["words"].numpy(),
                                       found["probabilities"].numpy())]


def tflite_next_words(folder: Path, prompts: list[str], k: int, typed: list[str]) -> dict[str, list]:
    """Every variant of an export, each loaded in a fresh Python process: next words per variant, and the
    float32 model's suggestions for ``typed``."""
    script = (
        "import json, sys\n"
        "from nmt.tflite import TfliteNextWords, TfliteRecord\n"
        "from pathlib import Path\n"
        "folder, prompts, k = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])\n"
        "typed = json.loads(sys.argv[4])\n"
        "out = {v: TfliteNextWords(folder, v).next_words(prompts, k) for v in TfliteRecord.read(folder).variants}\n"
        "out['suggest'] = [s._asdict() for s in TfliteNextWords(folder).suggest(typed, k)]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(folder), json.dumps(prompts), str(k), json.dumps(typed)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_exact(got: list, want: list) -> None:
    for got_row, want_row in zip(got, want, strict=True):
        assert [w for w, _ in got_row] == [w for w, _ in want_row]
        np.testing.assert_allclose([p for _, p in got_row], [p for _, p in want_row], atol=1e-4, rtol=0)


def top1_agreement(got: list, want: list) -> float:
    return float(np.mean([bool(g) and bool(w) and g[0][0] == w[0][0] for g, w in zip(got, want, strict=True)]))


@pytest.mark.slow
@pytest.mark.parametrize("run_name", ["subword_run", "cycle_run"])
def test_every_variant_gives_the_savedmodels_next_words(run_name: str, request, tmp_path: Path, capsys) -> None:
    run = request.getfixturevalue(run_name)
    prompts = SUBWORD_PROMPTS if run_name == "subword_run" else CYCLE_PROMPTS
    folder = tmp_path / "phone"
    assert main(["export", "--run", str(run), "--format", "tflite", "--quantize", "all", "--out", str(folder)]) == 0
    assert "TensorFlow Lite" in capsys.readouterr().out
    record = json.loads((folder / "nmt-tflite.json").read_text(encoding="utf-8"))
    assert set(record["variants"]) == {"float32", "float16", "int8"}
    assert not any(op.startswith("custom:") or op.startswith("FlexDelegate") for op in record["ops"])
    assert "WHILE" in record["ops"]
    sizes = {v: (folder / name).stat().st_size for v, name in record["variants"].items()}
    assert sizes["float16"] < sizes["float32"] and sizes["int8"] < sizes["float32"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["README.md", "nmt-tflite.json", "tokenizer.model", *record["variants"].values()])

    typed = SUBWORD_TYPED if run_name == "subword_run" else CYCLE_TYPED
    from nmt.export import export

    export_dir = export(run, tmp_path / "savedmodel")
    want = savedmodel_next_words(export_dir, prompts, 5)
    got = tflite_next_words(folder, prompts, 5, typed)
    assert_exact(got["float32"], want)
    want_suggestions = savedmodel_suggest(export_dir, typed, 5)
    assert [s["completing"] for s in got["suggest"]] == [s["completing"] for s in want_suggestions]
    assert_exact([s["words"] for s in got["suggest"]], [s["words"] for s in want_suggestions])
    assert any(s["completing"] and s["words"] for s in want_suggestions)  # completions were found ...
    assert all(w.startswith(s["completing"]) for s in want_suggestions for w, _ in s["words"])  # ... of the prefix
    for variant in ("float16", "int8"):
        assert top1_agreement(got[variant], want) >= QUANTIZED_TOP1_AGREEMENT, (variant, got[variant], want)
        for row in got[variant]:
            assert 1 <= len(row) <= 5 and all(w and p > 0 for w, p in row)


def test_a_translation_run_is_refused_in_one_line(tiny_run: Path, tmp_path: Path, capsys) -> None:
    code = main(["export", "--run", str(tiny_run), "--format", "tflite", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    refusal = "a translation model: it exports as savedmodel"
    assert err == f"nmt: error: --format tflite is not an export of {tiny_run}, {refusal}\n"
    from nmt.tflite import export_tflite

    with pytest.raises(NmtError, match=f"--format tflite is not an export of .*, {refusal}$"):
        export_tflite(tiny_run, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--quantize", "int8"], "--quantize is for --format tflite (a SavedModel keeps float32 weights)"),
    (["--format", "tflite", "--version", "2"], "--version is for SavedModel exports; --format tflite writes"),
    (["--max-k", "3"], "--max-k is for --format tflite (a SavedModel's limit is 20)"),
    (["--format", "tflite", "--max-k", "21"], "--max-k must be between 1 and 20, got 21"),
])
def test_option_combinations(argv: list[str], message: str, cycle_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", "--run", str(cycle_run), "--out", str(tmp_path / "x"), *argv]) == 2
    assert capsys.readouterr().err.startswith(f"nmt: error: {message}")


def test_a_failed_write_leaves_no_half_file_and_keeps_the_previous_export(cycle_run: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    from nmt.tflite import TfliteNextWords, export_tflite

    folder = tmp_path / "phone"
    export_tflite(cycle_run, folder, "float32")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(NmtError, match="no space left on device while writing"):
        export_tflite(cycle_run, folder, "all")
    with pytest.raises(NmtError, match="no space left on device while writing"):
        export_tflite(cycle_run, tmp_path / "new", "float32")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary files, nothing changed
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())
    assert TfliteNextWords(folder).next_words("north east", k=1)[0][0] == "south"


def test_words_from_candidates_sums_the_segmentations_of_a_word() -> None:
    from nmt.constants import LOG_ZERO
    from nmt.tflite import words_from_candidates

    pieces = ["<pad>", "<unk>", "<s>", "</s>", "▁ca", "t", "▁cat", "▁dog"]
    ids = np.array([[[6, 0], [4, 5], [7, 0], [4, 0]]])  # "cat", "cat" (two pieces), "dog", no candidate
    log_probs = np.log(np.array([[0.2, 0.1, 0.25, 0.5]], np.float32))
    log_probs[0, 3] = LOG_ZERO
    got = words_from_candidates(ids, log_probs, pieces, k=5)
    assert [w for w, _ in got[0]] == ["cat", "dog"]
    np.testing.assert_allclose([p for _, p in got[0]], [0.3, 0.25], rtol=1e-6)
    assert words_from_candidates(ids, log_probs, pieces, k=1) == [got[0][:1]]


@pytest.mark.slow
def test_max_k_narrows_the_beam_and_the_record_says_so(subword_run: Path, tmp_path: Path) -> None:
    from nmt.tflite import TfliteNextWords, TfliteRecord

    assert main(["export", "--run", str(subword_run), "--format", "tflite", "--quantize", "int8", "--max-k", "3",
                 "--out", str(tmp_path / "kb")]) == 0
    record = TfliteRecord.read(tmp_path / "kb")
    assert (record.max_k, record.beam_size) == (3, 10) and set(record.variants) == {"int8"}
    with pytest.raises(NmtError, match="k must be an integer between 1 and 3"):
        TfliteNextWords(tmp_path / "kb", "int8").suggest("I love", k=4)

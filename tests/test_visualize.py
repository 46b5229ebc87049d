"""Looking inside: attention maps from `nmt translate`, hidden-state traces from `nmt inspect`,
training curves from `nmt report` (PNG files checked by their header), and their error messages."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.cli import main
from nmt.visualize import save_attention


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_translate_saves_an_attention_map_per_sentence(tiny_run: Path, tmp_path: Path, capsys) -> None:
    one = tmp_path / "one.en"
    one.write_text("Where is the station?\n", encoding="utf-8")
    code, out, err = run_main(["translate", "--run", str(tiny_run), "-i", str(one), "--attention",
                               str(tmp_path / "map.png")], capsys)
    assert code == 0 and len(out.splitlines()) == 1 and "wrote 1 attention map(s)" in err
    width, height = png_size(tmp_path / "map.png")
    assert width > 100 and height > 100

    many = tmp_path / "many.en"
    many.write_text("Good morning.\n\nI like tea very much.\n", encoding="utf-8")
    code, out, err = run_main(["translate", "--run", str(tiny_run), "-i", str(many), "--beam", "1",
                               "--attention-dir", str(tmp_path / "maps")], capsys)
    assert code == 0 and len(out.split("\n")) == 4  # three lines and the final newline
    # Named by input line; the empty line has nothing to draw.
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["line-00001.png", "line-00003.png"]
    # A longer sentence makes a wider map (a column per source piece).
    assert png_size(tmp_path / "maps" / "line-00003.png")[0] > png_size(tmp_path / "maps" / "line-00001.png")[0]

    code, _, err = run_main(["translate", "--run", str(tiny_run), "-i", str(many), "--attention", "x.png"], capsys)
    assert code == 2 and "draws one sentence, but the input has 3 lines; use --attention-dir" in err
    code, _, err = run_main(["translate", "--run", str(tiny_run), "-i", str(one), "--attention", "x.png",
                             "--attention-dir", "d"], capsys)
    assert code == 2 and "not both" in err


def test_attention_map_rejects_weights_of_the_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"do not match 2 target x 3 source tokens"):
        save_attention(tmp_path / "bad.png", ["a", "b", "c"], ["x", "y"], np.ones((3, 2)))
    assert not (tmp_path / "bad.png").exists()


def test_language_model_trace_matches_the_whole_sequence_forward_pass(cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    trace = lm.inspect.hidden_states("north east south", k=3)
    assert trace.tokens == ["</s>", "▁north", "▁east", "▁south"]  # running text: a line starts after EOS
    ids = [lm.start_id, *lm.tokenizer.encode(["north east south"])[0]]
    logits, final = lm.model.forward(tf.constant([ids]), lm.model.initial_state(1))
    np.testing.assert_allclose(trace.states[-1], final["rnn"][-1][0].numpy()[0], atol=1e-5)
    probabilities = tf.nn.softmax(logits[0]).numpy()
    for step, predictions in enumerate(trace.predictions):
        assert [p for _, p in predictions] == sorted((p for _, p in predictions), reverse=True)
        expected = np.sort(probabilities[step])[::-1][:3]
        np.testing.assert_allclose([p for _, p in predictions], expected, rtol=1e-4, atol=1e-6)
    assert trace.predictions[-1][0][0] == "▁west"
    np.testing.assert_allclose(trace.changes[0], trace.norms[0])  # from the zero state
    np.testing.assert_allclose(trace.changes[1], np.linalg.norm(trace.states[1] - trace.states[0]), rtol=1e-6)


def test_inspect_prints_a_row_per_token_and_plots(cycle_run: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    plot = tmp_path / "trace.png"
    code, out, err = run_main(["inspect", "--run", str(cycle_run), "north east", "-k", "2", "--plot", str(plot)],
                              capsys)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[1] for row in rows] == ["</s>", "▁north", "▁east"]
    # #, piece, norm, change, then k=2 (piece, probability) pairs
    assert rows[-1][4] == "▁south" and len(rows[-1]) == 4 + 2 * 2
    assert png_size(plot)[1] > 100

    code, out, _ = run_main(["inspect", "--run", str(tiny_run), "Good morning."], capsys)
    encoder = nmt.load(tiny_run).inspect.hidden_states("Good morning.")
    assert code == 0 and "translation encoder" in out and encoder.states.shape[1] == 64  # 2 x 32, bidirectional
    assert [line.split()[1] for line in out.splitlines()[2:]] == encoder.tokens
    code, _, err = run_main(["inspect", "--run", str(tiny_run), "Good morning.", "-k", "2"], capsys)
    assert code == 2 and "-k is for language models" in err
    code, _, err = run_main(["inspect", "--run", str(tiny_run), ""], capsys)
    assert code == 2 and "nothing to inspect" in err
    code, _, err = run_main(["inspect", "--run", str(cycle_run), "north", "-k", "99"], capsys)
    assert code == 2 and "k must be an integer between 1 and 12, got 99" in err  # 12: the vocabulary size


def test_report_draws_the_curves_and_prints_the_evaluations(tiny_run: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_main(["report", "--run", str(tiny_run), "-o", str(tmp_path / "curves.png")], capsys)
    assert code == 0, err
    overlap, evaluations, layers = out.split("\n\n")
    assert overlap == "dev: none of its 50 sources, targets or pairs appears in the training data"
    header, *rows = evaluations.splitlines()
    assert header.split() == ["step", "train_loss", "dev_loss", "dev_bleu", "dev_chrf", "gradient_norm",
                              "clipped_fraction"]
    assert [int(row.split()[0]) for row in rows] == [20, 40]  # eval_every=20, steps=40
    assert layers.splitlines()[0].split()[:3] == ["layer", "gradient", "norm"]
    assert png_size(tmp_path / "curves.png")[0] > 500
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    code, _, err = run_main(["report", "--run", str(empty)], capsys)
    assert code == 2 and "no metrics.jsonl yet" in err
    code, _, err = run_main(["report", "--run", str(tmp_path / "missing")], capsys)
    assert code == 2 and "run directory not found" in err

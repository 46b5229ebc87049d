"""How far back a model remembers: gradient norms of one prediction's log-probability with respect
to each earlier token's input embedding, checked against independent references (the model's own
whole-sequence forward pass, differentiated through its embedding table, and finite differences),
for a language model (tied embeddings too) and a translation model; the CLI and its pictures; the
exported ``gradients`` signature."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.constants import BOS_ID
from nmt.errors import NmtError
from nmt.language_model import LanguageModelPredictor
from nmt.models import LanguageModel, Seq2Seq
from nmt.translator import Translator

from test_visualize import png_size, run_main


def piece_id(tokenizer, piece: str) -> int:
    return next(i for i in range(tokenizer.vocab_size) if tokenizer.id_to_piece(i) == piece)


def lm_reference(lm: LanguageModelPredictor, text: str, position: int, target: str) -> tuple[np.ndarray, float]:
    """Per piece read up to ``position``: the norm of the gradient of log p(target | pieces
    0..position) through the model's whole-sequence forward pass, taken with respect to the
    embedding table: with an untied model the lookup is the table's only reader, so its gradient
    holds one row per position (IndexedSlices)."""
    sequence = [lm.start_id, *lm.tokenizer.encode([text])[0]][: position + 1]
    table = lm.model.decoder.embedding.embeddings
    with tf.GradientTape() as tape:
        logits, _ = lm.model.forward(tf.constant([sequence]), lm.model.initial_state(1))
        log_p = tf.nn.log_softmax(logits[0, -1])[piece_id(lm.tokenizer, target)]
    gradient = tape.gradient(log_p, table)
    assert isinstance(gradient, tf.IndexedSlices) and gradient.values.shape[0] == len(sequence)
    return np.linalg.norm(gradient.values.numpy(), axis=1), float(log_p)


def lm_log_p(lm: LanguageModelPredictor, sequence: list[int], target: int) -> float:
    logits, _ = lm.model.forward(tf.constant([sequence]), lm.model.initial_state(1))
    return float(tf.nn.log_softmax(logits[0, -1])[target])


def directional_derivative(table, row: int, direction: np.ndarray, f, eps: float = 1e-2) -> float:
    """(f(row + eps u) - f(row - eps u)) / 2 eps: ``table``'s row moved along ``direction`` and back."""
    original = table.numpy()
    values = []
    try:
        for sign in (1, -1):
            moved = original.copy()
            moved[row] += sign * eps * direction
            table.assign(moved)
            values.append(f())
    finally:
        table.assign(original)
    return (values[0] - values[1]) / (2 * eps)


def test_language_model_gradients_equal_the_reference_and_finite_differences(cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    text = "north up west"  # each piece once; "up" after "north" is a surprise to this model
    tokens = [lm.start_id, *lm.tokenizer.encode([text])[0]]
    for position in (1, 3):
        found = lm.inspect.gradients(text, position=position)
        assert found.tokens == ["</s>", "▁north", "▁up", "▁west"] and found.position == position
        if position < 3:
            assert found.target == found.tokens[position + 1]  # the text's own next piece
        else:
            assert found.target == lm.inspect.hidden_states(text, k=1).predictions[-1][0][0]  # the likeliest
        expected, log_p = lm_reference(lm, text, position, found.target)
        np.testing.assert_allclose(found.norms[: position + 1], expected, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(found.log_probability, log_p, rtol=1e-5)
        assert np.isnan(found.norms[position + 1 :]).all()  # not read by then: no gradient
        assert list(found.distances[: position + 1]) == list(range(position, -1, -1))

    # Finite differences on the model itself: move one token's embedding along its gradient.
    found = lm.inspect.gradients(text, position=1)
    assert found.log_probability < -3 and found.norms[1] > 0.1
    table = lm.model.decoder.embedding.embeddings
    target = piece_id(lm.tokenizer, found.target)
    for index in (0, 1):
        with tf.GradientTape() as tape:
            logits, _ = lm.model.forward(tf.constant([tokens[:2]]), lm.model.initial_state(1))
            log_p = tf.nn.log_softmax(logits[0, -1])[target]
        row = tape.gradient(log_p, table).values.numpy()[index]
        slope = directional_derivative(table, tokens[index], row / np.linalg.norm(row),
                                       lambda: lm_log_p(lm, tokens[:2], target))
        np.testing.assert_allclose(slope, found.norms[index], rtol=2e-2)


def test_a_position_sees_only_the_pieces_read_by_then(cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    # The cycle model predicts "south" after "north east": asking at position 2 of the longer text
    # is asking the shorter text's default question.
    later = lm.inspect.gradients("north east south west", position=2)
    alone = lm.inspect.gradients("north east")
    assert later.target == alone.target == "▁south" and alone.position == 2
    np.testing.assert_allclose(later.norms[:3], alone.norms, rtol=1e-5)
    assert np.isnan(later.norms[3:]).all() and len(later.norms) == 5
    both = lm.inspect.gradients(["north east", ""])
    assert [g.target for g in both] == ["▁south", "▁north"] and both[1].tokens == ["</s>"]
    for bad in (-1, 3, True, 1.0):
        with pytest.raises(NmtError, match="position must be an integer between 0 .* and 2"):
            lm.inspect.gradients("north east", position=bad)


def test_tied_embeddings_count_only_the_lookup(cycle_run: Path) -> None:
    """With tied embeddings the output projection reads the embedding table too (the table's
    gradient is then dense); the gradients must still be the lookup's alone: equal to those of an
    untied copy whose projection holds the same numbers."""
    lm = nmt.load(cycle_run)
    keras.utils.set_random_seed(3)
    decoder = {"cell": "lstm", "units": 16, "layers": 2, "dropout": 0.0}
    vocab = lm.tokenizer.vocab_size
    tied, untied = (LanguageModel(vocab, 16, dict(decoder), tie_embeddings=tie) for tie in (True, False))
    tied.build_weights()
    untied.build_weights()
    for source, copy in zip(tied.decoder.rnn_layers, untied.decoder.rnn_layers):
        for weight, other in zip(source.weights, copy.weights):
            other.assign(weight)
    untied.decoder.embedding.embeddings.assign(tied.decoder.embedding.embeddings)
    untied.decoder.output_projection.kernel.assign(tf.transpose(tied.decoder.embedding.embeddings))
    untied.decoder.output_projection.bias.assign(tied.decoder.output_bias)
    ids = tf.constant([[lm.start_id, 4, 7, 5]])
    np.testing.assert_allclose(tied.forward(ids, tied.initial_state(1))[0],
                               untied.forward(ids, untied.initial_state(1))[0], atol=1e-5)
    tied_lm, untied_lm = (LanguageModelPredictor(m, lm.tokenizer, lm.config) for m in (tied, untied))
    with tf.GradientTape() as tape:
        logits, _ = tied.forward(ids, tied.initial_state(1))
        log_p = tf.nn.log_softmax(logits[0, -1])[5]
    assert not isinstance(tape.gradient(log_p, tied.decoder.embedding.embeddings), tf.IndexedSlices)
    for text, position in (("north east south", None), ("up down left right", 2)):
        found = tied_lm.inspect.gradients(text, position=position)
        same = untied_lm.inspect.gradients(text, position=position)
        assert found.target == same.target
        np.testing.assert_allclose(found.norms, same.norms, rtol=1e-4, equal_nan=True)
        expected, _ = lm_reference(untied_lm, text, found.position, found.target)
        np.testing.assert_allclose(found.norms[: found.position + 1], expected, rtol=1e-4)


@pytest.fixture(scope="module")
def random_translator(tiny_run: Path) -> Translator:
    """The tiny run's tokenizers over a random model: its greedy output runs to the length limit,
    so there are many output pieces to differentiate."""
    trained = nmt.load(tiny_run)
    keras.utils.set_random_seed(7)
    model = Seq2Seq(trained.source_tokenizer.vocab_size, trained.target_tokenizer.vocab_size, embedding_dim=16,
                    encoder={"cell": "gru", "units": 16, "dropout": 0.0},
                    decoder={"cell": "lstm", "units": 16, "attention": "luong", "dropout": 0.0})
    model.build_weights()
    return Translator(model, trained.source_tokenizer, trained.target_tokenizer, trained.config)


def test_translation_gradients_are_a_target_by_source_matrix(random_translator: Translator) -> None:
    translator = random_translator
    text = "Where is the station?"
    found = translator.inspect.gradients(text)
    best = translator.translate(text, beam_size=1, with_attention=True)[0]
    assert found.source_tokens == best.source_tokens and found.target_tokens[: len(best.tokens)] == best.tokens
    assert found.norms.shape == (len(found.target_tokens), len(found.source_tokens)) and len(found.target_tokens) > 5
    assert np.isfinite(found.norms).all() and (found.norms > 0).all()
    # The log-probabilities are those of the model's step-by-step decoding of that output.
    source = translator.source_tokenizer.encode([text])[0]
    target = [piece_id(translator.target_tokenizer, t) for t in found.target_tokens]
    context, state = translator.model.encode(tf.constant([source]), tf.constant([len(source)]))
    previous, stepwise = BOS_ID, []
    for token in target:
        logits, state, _ = translator.model.step(tf.constant([previous]), state, context)
        stepwise.append(float(tf.nn.log_softmax(logits)[0, token]))
        previous = token
    np.testing.assert_allclose(found.log_probabilities, stepwise, rtol=1e-4)

    # Reference: one output piece at a time, through the encoder's embedding table.
    batch = {"source": tf.constant([source]), "source_length": tf.constant([len(source)]),
             "target_in": tf.constant([[BOS_ID, *target[:-1]]])}
    table = translator.model.encoder.embedding.embeddings

    def log_p(step: int) -> tf.Tensor:
        return tf.nn.log_softmax(translator.model(batch)[0, step])[target[step]]

    for step in (0, len(target) // 2, len(target) - 1):
        with tf.GradientTape() as tape:
            value = log_p(step)
        values = tape.gradient(value, table).values.numpy()
        np.testing.assert_allclose(found.norms[step], np.linalg.norm(values, axis=1), rtol=1e-4)
        np.testing.assert_allclose(found.log_probabilities[step], float(value), rtol=1e-5)
    step, index = len(target) // 2, 1
    with tf.GradientTape() as tape:
        value = log_p(step)
    row = tape.gradient(value, table).values.numpy()[index]
    slope = directional_derivative(table, source[index], row / np.linalg.norm(row), lambda: float(log_p(step)))
    np.testing.assert_allclose(slope, found.norms[step, index], rtol=2e-2)
    lengths = [len(ids) for ids in translator.source_tokenizer.encode(["Good morning.", text])]
    assert [g.norms.shape[1] for g in translator.inspect.gradients(["Good morning.", text])] == lengths
    with pytest.raises(NmtError, match="nothing to inspect"):
        translator.inspect.gradients("")


@pytest.mark.slow
def test_inspect_gradients_prints_and_plots(cycle_run: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    plot = tmp_path / "g.png"
    code, out, err = run_main(["inspect", "--run", str(cycle_run), "north east south", "--gradients",
                               "--plot", str(plot)], capsys)
    assert code == 0, err
    expected = nmt.load(cycle_run).inspect.gradients("north east south")
    header, columns, *rows = out.splitlines()
    assert "log p(▁west | pieces 0..3)" in header and columns.split() == ["#", "token", "back", "gradient"]
    assert [row.split()[1:3] for row in rows] == [["</s>", "3"], ["▁north", "2"], ["▁east", "1"], ["▁south", "0"]]
    np.testing.assert_allclose([float(row.split()[3]) for row in rows], expected.norms, rtol=1e-3)
    assert png_size(plot)[1] > 100

    code, out, _ = run_main(["inspect", "--run", str(cycle_run), "north east south", "--gradients",
                             "--position", "1"], capsys)
    assert code == 0 and "log p(▁east | pieces 0..1)" in out and len(out.splitlines()) == 2 + 2  # 2 pieces read

    matrix = tmp_path / "m.png"
    code, out, err = run_main(["inspect", "--run", str(tiny_run), "Where is the station?", "--gradients",
                               "--plot", str(matrix)], capsys)
    assert code == 0, err
    found = nmt.load(tiny_run).inspect.gradients("Where is the station?")
    lines = out.splitlines()
    assert lines[2].split() == found.source_tokens and len(lines) == 3 + len(found.target_tokens)
    np.testing.assert_allclose([[float(v) for v in line.split()[1:]] for line in lines[3:]], found.norms, rtol=1e-3)
    assert png_size(matrix)[0] > 100

    for argv, message in (
        ([str(tiny_run), "Where", "--gradients", "--position", "1"], "--position is for language models"),
        ([str(cycle_run), "north", "--position", "0"], "--position goes with --gradients"),
        ([str(cycle_run), "north", "--gradients", "--position", "5"], "position must be an integer between 0"),
        ([str(cycle_run), "north", "--gradients", "-k", "2"], "-k is for the hidden-state table"),
    ):
        code, _, err = run_main(["inspect", "--run", *argv], capsys)
        assert code == 2 and message in err, err
    with pytest.raises(SystemExit):
        run_main(["inspect", "--run", str(cycle_run), "north", "--gradients", "--position", "-1"], capsys)
    with pytest.raises(SystemExit):
        run_main(["inspect", "--help"], capsys)
    help_text = " ".join(capsys.readouterr().out.split())
    assert "how strongly the prediction still depends on that token" in help_text
    assert "vanishing gradient" in help_text


@pytest.mark.slow
def test_the_exported_gradients_signature_equals_the_api(cycle_run: Path, tmp_path: Path) -> None:
    from nmt.export import export
    from nmt.signatures import GRADIENTS, RECORD_FILE, ServingRecord

    path = export(cycle_run, tmp_path / "lm")
    assert GRADIENTS in ServingRecord.from_json((path / RECORD_FILE).read_text()).signatures
    loaded = tf.saved_model.load(str(path))
    texts = ["north east south", "", "up down"]
    out = {k: v.numpy() for k, v in loaded.signatures[GRADIENTS](text=tf.constant(texts)).items()}
    lm = nmt.load(cycle_run)
    for row, text in enumerate(texts):
        expected = lm.inspect.gradients(text)
        n = out["lengths"][row]
        assert [t.decode() for t in out["tokens"][row, :n]] == expected.tokens
        assert out["next_token"][row].decode() == expected.target
        np.testing.assert_allclose(out["norms"][row, :n], expected.norms, rtol=1e-5, atol=1e-10)
        assert (out["norms"][row, n:] == 0).all()  # padding
        np.testing.assert_allclose(out["log_probability"][row], expected.log_probability, rtol=1e-5)

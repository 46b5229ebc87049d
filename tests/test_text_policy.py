"""The text <-> ids rules of nmt.text_policy: the Python form (nmt.load) and the in-graph form
(SavedModel, TF Serving) give the same answers on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nmt import text_policy as text
from nmt.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "where is the station", "good morning to you"] * 30
TEXTS = ["the cat sat", "", "   ", "Zyxqv ☃ blorfs", "  the dog  ", "the " * 40, "猫 the"]


@pytest.fixture(scope="module")
def tokenizers() -> tuple[Tokenizer, text.InGraphTokenizer]:
    python = Tokenizer.train(CORPUS, model_type="unigram", vocab_size=32, character_coverage=1.0)
    return python, text.InGraphTokenizer(python.model_proto, "policy_test")


def _rows(ids: tf.Tensor, lengths: tf.Tensor) -> list[list[int]]:
    return [list(row[:n]) for row, n in zip(ids.numpy(), lengths.numpy())]


@pytest.mark.parametrize("max_length", [1, 5, 200])
def test_source_ids_are_cut_alike(tokenizers, max_length: int) -> None:
    python, graph = tokenizers
    expected, cut = text.source_ids(python, TEXTS, max_length)
    ids, lengths = text.source_ids_in_graph(graph, tf.constant(TEXTS), max_length)
    assert _rows(ids, lengths) == expected
    assert cut == sum(len(x) > max_length for x in python.encode(TEXTS)) and (max_length > 100 or cut > 0)
    assert max_length < 5 or UNK_ID in expected[3]  # unknown characters read as the unknown piece, in both forms


def test_prompt_ids_agree_and_a_long_prompt_is_an_error_in_both(tokenizers) -> None:
    python, graph = tokenizers
    short = [t for t in TEXTS if len(python.encode([t.strip()])[0]) <= 12]
    ids, lengths = text.prompt_ids_in_graph(graph, tf.constant(short), 12)
    assert _rows(ids, lengths) == text.prompt_ids(python, short, 12)
    assert text.prompt_ids(python, ["  the dog  "], 12) == text.prompt_ids(python, ["the dog"], 12)
    with pytest.raises(NmtError, match="prompt is longer than this model's 12 tokens"):
        text.prompt_ids(python, TEXTS, 12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="prompt is longer than this model's 12 tokens"):
        text.prompt_ids_in_graph(graph, tf.constant(TEXTS), 12)


def test_a_final_eos_is_not_text_in_both_forms() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 30, size=(50, 9)).astype(np.int32)
    lengths = rng.integers(0, 10, size=50).astype(np.int32)
    for row, n in enumerate(lengths):
        if n and row % 2:
            ids[row, n - 1] = EOS_ID  # half the rows end with EOS, the others hit the length limit
    expected = [text.text_length(row, int(n)) for row, n in zip(ids, lengths)]
    assert list(text.text_lengths_in_graph(tf.constant(ids), tf.constant(lengths)).numpy()) == expected
    assert expected[1] == (lengths[1] - 1 if lengths[1] else 0) and expected[2] == lengths[2]


@pytest.mark.parametrize("running_text", [False, True])
def test_ids_to_text_agree(tokenizers, running_text: bool) -> None:
    python, graph = tokenizers
    the_cat, the_dog = python.encode(["the cat sat", "the dog ran"])
    rows = [
        the_cat,
        [],
        [*the_cat, EOS_ID, *the_dog],  # running text: two lines; a sentence: ends at the EOS
        [EOS_ID, EOS_ID, *the_dog, EOS_ID],  # empty lines and a final line break
        [UNK_ID, *the_dog, UNK_ID],  # unknown pieces print as SentencePiece prints them
        [BOS_ID, *the_cat, PAD_ID],  # start and padding symbols print nothing
    ]
    expected = [text.ids_to_text(python, row, running_text) for row in rows]
    ragged = tf.ragged.constant(rows, dtype=tf.int32, row_splits_dtype=tf.int64)
    got = [t.decode("utf-8") for t in text.ids_to_text_in_graph(graph, ragged, running_text).numpy()]
    assert got == expected
    if running_text:
        assert expected[2] == "the cat sat\nthe dog ran" and expected[3] == "\n\nthe dog ran\n"
    else:
        assert expected[2] == "the cat sat" and expected[1] == ""


def test_checked_ids_zero_padding_and_refuse_ids_outside_the_vocabulary() -> None:
    ids, lengths = text.checked_ids(tf.constant([[5, 6, 99], [7, 8, 9]]), tf.constant([2, 9]), 40, 200)
    assert ids.numpy().tolist() == [[5, 6, 0], [7, 8, 9]] and lengths.numpy().tolist() == [2, 3]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"ids must be in \[0, 40\)"):
        text.checked_ids(tf.constant([[5, 40]]), tf.constant([2]), 40, 200)

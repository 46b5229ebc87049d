"""Tests for nmt/tokenizer.py: SentencePiece training, round trips, special ids, in-graph parity."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nmt.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

_JA_SUBJECTS = ["私は", "彼は", "彼女は", "猫が", "犬が", "先生が", "学生は"]
_JA_OBJECTS = ["本を", "水を", "りんごを", "手紙を", "音楽を", "映画を"]
_JA_VERBS = ["読みます。", "飲みました。", "食べた。", "書いている。", "聞きたい。", "見ました。"]
_EN_SUBJECTS = ["I", "He", "She", "The cat", "The dog", "The teacher", "My friend"]
_EN_VERBS = ["reads", "drank", "ate", "writes", "likes", "watched"]
_EN_OBJECTS = ["a book", "water", "an apple", "a letter", "music", "a movie"]


def _corpus(n: int = 300, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    ja = [rng.choice(_JA_SUBJECTS) + rng.choice(_JA_OBJECTS) + rng.choice(_JA_VERBS) for _ in range(n)]
    en = [
        f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)} at {rng.randint(1, 12)} o'clock."
        for _ in range(n)
    ]
    return ja, en


JA_SENTENCES = ["私は本を読みます。", "猫が水を飲みました。", "先生が手紙を書いている。", "彼女は映画を見ました。"]
EN_SENTENCES = ["The teacher watched a movie at 7 o'clock.", "She likes music.", "I ate an apple at 12 o'clock."]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    ja, en = _corpus()
    return ja + en


@pytest.fixture(scope="module")
def unigram(corpus) -> Tokenizer:
    return Tokenizer.train(corpus, model_type="unigram", vocab_size=200)


@pytest.fixture(scope="module")
def char(corpus) -> Tokenizer:
    return Tokenizer.train(corpus, model_type="char", vocab_size=200)


@pytest.fixture(scope="module")
def word() -> Tokenizer:
    _, en = _corpus()
    return Tokenizer.train(en, model_type="word", vocab_size=200)


@pytest.mark.parametrize("text", JA_SENTENCES + EN_SENTENCES)
def test_unigram_round_trip(unigram, text):
    ids = unigram.encode([text])[0]
    assert ids, "a non-empty sentence must encode to at least one id"
    assert UNK_ID not in ids
    assert all(i > EOS_ID for i in ids), "encode must not add PAD/BOS/EOS"
    assert unigram.decode(ids) == text


def test_unigram_vocab_size_is_at_most_requested(unigram):
    # hard_vocab_limit=False: never more pieces than asked for, and more than the 4 specials.
    assert 4 < unigram.vocab_size <= 200


def test_encode_is_batched_and_order_preserving(unigram):
    batch = unigram.encode(JA_SENTENCES + EN_SENTENCES)
    assert batch == [unigram.encode([s])[0] for s in JA_SENTENCES + EN_SENTENCES]


@pytest.mark.parametrize("text", JA_SENTENCES + EN_SENTENCES)
def test_char_round_trip(char, text):
    ids = char.encode([text])[0]
    assert UNK_ID not in ids
    assert char.decode(ids) == text


def test_char_model_pieces_are_single_characters(char):
    assert char.encode_pieces("私は本を読みます。") == ["▁", "私", "は", "本", "を", "読", "み", "ま", "す", "。"]


def test_word_model_one_piece_per_known_word(word):
    assert word.encode_pieces("The cat reads a book") == ["▁The", "▁cat", "▁reads", "▁a", "▁book"]
    ids = word.encode(["The cat reads a book"])[0]
    assert len(ids) == 5 and UNK_ID not in ids
    assert word.decode(ids) == "The cat reads a book"


def test_word_model_unknown_word_is_unk(word):
    ids = word.encode(["The cat zebra"])[0]
    assert len(ids) == 3
    assert ids[2] == UNK_ID
    assert UNK_ID not in ids[:2]


def test_save_load_round_trip(unigram, tmp_path):
    path = tmp_path / "sub" / "spm.model"
    unigram.save(path)
    assert path.read_bytes() == unigram.model_proto
    loaded = Tokenizer.load(path)
    sentences = JA_SENTENCES + EN_SENTENCES
    assert loaded.encode(sentences) == unigram.encode(sentences)
    assert loaded.vocab_size == unigram.vocab_size
    assert [loaded.id_to_piece(i) for i in range(loaded.vocab_size)] == [
        unigram.id_to_piece(i) for i in range(unigram.vocab_size)
    ]


def test_load_missing_file(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(NmtError, match="tokenizer model not found") as info:
        Tokenizer.load(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("fixture", ["unigram", "char", "word"])
def test_special_ids(request, fixture):
    tok = request.getfixturevalue(fixture)
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<spm-unk>", "<s>", "</s>"]


def test_decode_stops_at_eos_and_ignores_pad_and_bos(unigram):
    first = unigram.encode(["私は本を読みます。"])[0]
    second = unigram.encode(["She likes music."])[0]
    ids = [BOS_ID, *first[:2], PAD_ID, *first[2:], EOS_ID, *second, EOS_ID, PAD_ID, PAD_ID]
    assert unigram.decode(ids) == "私は本を読みます。"
    assert unigram.decode([EOS_ID, *first]) == ""
    assert unigram.decode([PAD_ID, BOS_ID, PAD_ID]) == ""


def test_decode_accepts_numpy_ids(unigram):
    ids = np.array([BOS_ID, *unigram.encode(["She likes music."])[0], EOS_ID, PAD_ID], dtype=np.int32)
    assert unigram.decode(ids) == "She likes music."


def test_train_on_empty_corpus_raises():
    with pytest.raises(NmtError, match="empty corpus"):
        Tokenizer.train([], vocab_size=100)


def test_too_small_vocab_is_an_nmt_error_mentioning_vocab_size(corpus):
    # More distinct characters than vocab_size: SentencePiece refuses, the wrapper re-raises cleanly.
    with pytest.raises(NmtError) as info:
        Tokenizer.train(corpus, model_type="unigram", vocab_size=10)
    message = str(info.value)
    assert message.startswith("SentencePiece training failed:")
    assert "vocab_size" in message


def test_vocab_smaller_than_special_pieces_error_mentions_vocab_size(corpus):
    with pytest.raises(NmtError) as info:
        Tokenizer.train(corpus, model_type="char", vocab_size=3)
    assert "vocab_size" in str(info.value)


def test_input_sentence_size_samples_the_corpus():
    # Every sentence has a character of its own: the vocabulary counts the sentences sampled.
    corpus = [f"a{chr(0x4E00 + i)}b" for i in range(600)]
    options = dict(model_type="char", vocab_size=1000, character_coverage=1.0)
    tok = Tokenizer.train(corpus, input_sentence_size=101, **options)
    assert Tokenizer.train(corpus, **options).vocab_size == 4 + 2 + 600 + 1  # specials, a, b, 600, "▁"
    assert tok.vocab_size == 4 + 2 + 101 + 1
    # Read as a stream (a generator), sampled with the seed: the same model again.
    again = Tokenizer.train((s for s in corpus), input_sentence_size=101, **options)
    assert again.model_proto == tok.model_proto
    with pytest.raises(NmtError, match="more than 100 sentences"):
        Tokenizer.train(corpus, input_sentence_size=100)


def test_training_is_deterministic(corpus, unigram):
    again = Tokenizer.train(corpus, model_type="unigram", vocab_size=200)
    assert again.encode(JA_SENTENCES + EN_SENTENCES) == unigram.encode(JA_SENTENCES + EN_SENTENCES)


@pytest.mark.parametrize("fixture", ["unigram", "char"])
def test_in_graph_tokenizer_agrees_with_python(request, fixture):
    import tensorflow as tf
    import tensorflow_text

    tok = request.getfixturevalue(fixture)
    sentences = JA_SENTENCES + EN_SENTENCES
    in_graph = tensorflow_text.SentencepieceTokenizer(model=tok.model_proto)
    ragged = in_graph.tokenize(tf.constant(sentences))
    assert ragged.to_list() == tok.encode(sentences)
    detok = [s.decode("utf-8") for s in in_graph.detokenize(ragged).numpy().tolist()]
    assert detok == sentences

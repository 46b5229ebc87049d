"""The text <-> ids policy, once: each rule in its Python form (lists, for ``nmt.load``) beside its
in-graph form (tensors, for the SavedModel and so for TF Serving). ``tests/test_text_policy.py``
runs both forms on the same inputs and checks they agree.

The rules:
1. **Source text -> ids** (translation): SentencePiece pieces, cut to ``max_length`` (an RNN trained on
   sentences degrades on page-long inputs; the caller counts the cut ones and warns).
2. **Prompt -> ids** (language model): surrounding whitespace does not count; a prompt longer than
   ``max_length`` pieces is an error, not silently cut (the next word depends on its end).
3. **Output ids -> text length**: a final EOS is not text; a hypothesis that hit the length limit
   keeps all its tokens.
4. **Ids -> text**: SentencePiece's detokenizer; for a model of running text an EOS is a line break.
5. **Typed text -> context and the word being typed** (``suggest``): a text that ends inside a word
   (a letter, digit or mark, or an apostrophe within the word) is being typed: its trailing word,
   from its first letter or digit, is the prefix to complete and the text before it the context. A
   text that ends with a space or punctuation has an empty prefix: the next word is asked for.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import tensorflow as tf

from nmt import signatures as sig
from nmt.constants import EOS_ID
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

# The exported signatures' shared inputs: every one has a batch dimension (TF Serving's row format).
TEXT_SPEC = tf.TensorSpec([None], tf.string, name=sig.TEXT)
IDS_SPEC = tf.TensorSpec([None, None], tf.int32, name=sig.IDS)
LENGTHS_SPEC = tf.TensorSpec([None], tf.int32, name=sig.LENGTHS)

PROMPT_TOO_LONG = "prompt is longer than this model's {max_length} tokens (decode.max_source_length)"


class InGraphTokenizer(tf.Module):
    """A run's SentencePiece model as a TensorFlow resource (tracked, saved with the model): the
    in-graph twin of :class:`nmt.tokenizer.Tokenizer`, built from the same model file."""

    def __init__(self, model_proto: bytes, name: str) -> None:
        super().__init__(name=name)
        import tensorflow_text  # registers the SentencePiece ops

        # A distinct name per tokenizer: TF Text names the model resource after it, and a restored
        # SavedModel whose two tokenizers share a name gets the first model for both.
        self.sentencepiece = tensorflow_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32, name=name)

    def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
        return self.sentencepiece.tokenize(text)

    def pieces(self, ids: tf.Tensor) -> tf.Tensor:
        return self.sentencepiece.id_to_string(ids)


def at_least_one_column(ids: tf.Tensor) -> tf.Tensor:
    """A batch of only empty texts tokenizes to [batch, 0], which the encoder cannot read: one pad
    column makes it [batch, 1], as the same texts are when batched with a longer one."""
    return tf.pad(ids, [[0, 0], [0, tf.maximum(1 - tf.shape(ids)[1], 0)]])


def _padded(ragged: tf.RaggedTensor) -> tuple[tf.Tensor, tf.Tensor]:
    return at_least_one_column(ragged.to_tensor(0)), tf.cast(ragged.row_lengths(), tf.int32)


# --- 1. source text -> ids, cut ------------------------------------------------------------------


def source_ids(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Ids per text cut to ``max_length``, and how many texts were cut."""
    encoded = tokenizer.encode(list(texts))
    return [ids[:max_length] for ids in encoded], sum(len(ids) > max_length for ids in encoded)


def target_ids_in_graph(tokenizer: InGraphTokenizer, text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A translation to score -> zero-padded ids and lengths, uncut (the Python form: ``tokenizer.encode``)."""
    return _padded(tokenizer.tokenize(text))


def source_ids_in_graph(tokenizer: InGraphTokenizer, text: tf.Tensor, max_length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """string[batch] -> zero-padded ids [batch, time] cut to ``max_length``, and their lengths."""
    return _padded(tokenizer.tokenize(text)[:, :max_length])


# --- 2. prompt -> ids, too long is an error ------------------------------------------------------


def prompt_ids(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    encoded = tokenizer.encode([t.strip() for t in texts])
    for index, ids in enumerate(encoded):
        if len(ids) > max_length:
            raise NmtError(f"{PROMPT_TOO_LONG.format(max_length=max_length)}: prompt {index + 1} has {len(ids)}")
    return encoded


def prompt_ids_in_graph(tokenizer: InGraphTokenizer, text: tf.Tensor, max_length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """As :func:`prompt_ids`: a too-long prompt fails the call (InvalidArgumentError, which TF
    Serving and ``nmt serve`` answer with a 400 naming the limit)."""
    ragged = tokenizer.tokenize(tf.strings.strip(text))
    lengths = tf.cast(ragged.row_lengths(), tf.int32)
    check = tf.debugging.Assert(tf.reduce_all(lengths <= max_length),
                                [PROMPT_TOO_LONG.format(max_length=max_length) + "; lengths:", lengths], summarize=8)
    with tf.control_dependencies([check]):
        return _padded(ragged)


def checked_ids(ids: tf.Tensor, lengths: tf.Tensor, vocab_size: int, max_length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Ids given by a client (the ``*_ids`` signatures) made safe: cut to ``max_length``, lengths
    clipped to [0, width], padding (past a row's length) zeroed, and an id outside [0, vocab_size)
    within a row's length is an InvalidArgumentError (a 400) rather than an embedding lookup that
    fails on CPU and reads zeros or garbage on an accelerator."""
    ids = at_least_one_column(ids[:, :max_length])
    lengths = tf.clip_by_value(lengths, 0, tf.shape(ids)[1])
    inside = tf.range(tf.shape(ids)[1])[None, :] < lengths[:, None]
    bad = inside & ((ids < 0) | (ids >= vocab_size))
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"ids must be in [0, {vocab_size}) (the vocabulary); out of range:", tf.boolean_mask(ids, bad)], summarize=5)
    with tf.control_dependencies([check]):
        return tf.where(inside, ids, 0), tf.identity(lengths)


# --- 3. output ids -> how many are text ----------------------------------------------------------


def teacher_forced(target: tf.Tensor, lengths: tf.Tensor, start_id: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Target ids [batch, time] (the first ``lengths`` of each row) -> what forced decoding feeds and
    predicts, [batch, time + 1] each: the start id then the pieces, the pieces then EOS, and the
    mask of the predicted positions (EOS included). Training's batches are laid out by the same rule."""
    batch, positions = tf.shape(target)[0], tf.range(tf.shape(target)[1] + 1)[None, :]
    target_in = tf.concat([tf.fill([batch, 1], start_id), target], axis=1)
    target_out = tf.where(positions == lengths[:, None], EOS_ID, tf.pad(target, [[0, 0], [0, 1]]))
    return target_in, target_out, positions <= lengths[:, None]


def text_length(ids: Sequence[int], length: int) -> int:
    """Tokens of ``ids[:length]`` that are text: a final EOS is not."""
    return length - 1 if length > 0 and int(ids[length - 1]) == EOS_ID else length


def text_lengths_in_graph(ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    last = tf.gather(ids, tf.maximum(lengths - 1, 0), batch_dims=1)
    return lengths - tf.cast((lengths > 0) & tf.equal(last, EOS_ID), tf.int32)


# --- 4. ids -> text ------------------------------------------------------------------------------


def ids_to_text(tokenizer: Tokenizer, ids: Sequence[int], running_text: bool = False) -> str:
    """Sentence models: the text of ``ids`` up to an EOS. Running text: an EOS is a line break."""
    if not running_text:
        return tokenizer.decode(ids)
    lines: list[list[int]] = [[]]
    for i in ids:
        if int(i) == EOS_ID:
            lines.append([])
        else:
            lines[-1].append(int(i))
    return "\n".join(tokenizer.decode(line) for line in lines)


def ids_to_text_in_graph(tokenizer: InGraphTokenizer, ids: tf.RaggedTensor, running_text: bool = False) -> tf.Tensor:
    """ids [batch, (tokens)] -> string[batch], as :func:`ids_to_text` does one row."""
    if not running_text:
        # Up to the first EOS, as Tokenizer.decode.
        is_eos = tf.cast(tf.equal(ids, EOS_ID), tf.int32)
        before_eos = tf.equal(tf.math.cumsum(is_eos, axis=1), 0)
        return tokenizer.sentencepiece.detokenize(tf.ragged.boolean_mask(ids, before_eos))
    # Running text: cut each row into lines at its EOS tokens, detokenize every line, join the
    # lines of a row with "\n" (SentencePiece cannot write a line break itself).
    values = ids.flat_values
    is_eos = tf.equal(values, EOS_ID)
    eos_before = ids.with_flat_values(tf.cast(is_eos, tf.int64))
    line_in_row = tf.math.cumsum(eos_before, axis=1, exclusive=True).flat_values
    lines_per_row = tf.reduce_sum(eos_before, axis=1) + 1
    first_line = tf.math.cumsum(lines_per_row, exclusive=True)
    line_of_token = tf.gather(first_line, ids.value_rowids()) + line_in_row
    keep = tf.logical_not(is_eos)
    lines = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(values, keep), tf.boolean_mask(line_of_token, keep), nrows=tf.reduce_sum(lines_per_row))
    texts = tokenizer.sentencepiece.detokenize(lines)
    # A line break after every line but a row's last. (reduce_join's separator would be simpler,
    # but over a ragged row it drops the breaks of leading empty lines.)
    last_lines = (tf.math.cumsum(lines_per_row) - 1)[:, None]
    no_break = tf.fill(tf.shape(lines_per_row), "")
    breaks = tf.tensor_scatter_nd_update(tf.fill(tf.shape(texts), "\n"), last_lines, no_break)
    return tf.strings.reduce_join(tf.RaggedTensor.from_row_lengths(texts + breaks, lines_per_row), axis=1)


# --- 5. typed text -> context, the word being typed ------------------------------------------------

WORD_APOSTROPHES = "'’"  # inside a word ("don't", "rock’n’roll")
# The in-graph form of split_typed_word (RE2): the earliest letter or digit from which the text to its
# end is letters, digits, marks and apostrophes.
_TYPED_WORD = r"(?s)^(.*?)([\pL\pN][\pL\pN\pM" + WORD_APOSTROPHES + r"]*)?$"


def in_word(char: str) -> bool:
    """A character that can be part of a word (rule 5)."""
    return unicodedata.category(char)[0] in "LNM" or char in WORD_APOSTROPHES


def _word_start(text: str, start: int, end: int) -> int:
    """Where the run of word characters text[start:end] begins as a word: at its first letter or digit,
    not at a mark or an apostrophe (end: none)."""
    while start < end and unicodedata.category(text[start])[0] not in "LN":
        start += 1
    return start


def split_typed_word(text: str) -> tuple[str, str]:
    """``"I love piz"`` -> ``("I love ", "piz")``; ``"I love "`` -> ``("I love ", "")``."""
    start = len(text)
    while start > 0 and in_word(text[start - 1]):
        start -= 1
    start = _word_start(text, start, len(text))
    return text[:start], text[start:]


def words_of(text: str) -> list[tuple[int, str]]:
    """(start, word) of each word of ``text``: what :func:`split_typed_word` would cut as the word being
    typed, had the text ended after it (a keyboard benchmark's words, a lexicon's)."""
    found, i = [], 0
    while i < len(text):
        if not in_word(text[i]):
            i += 1
            continue
        end = i
        while end < len(text) and in_word(text[end]):
            end += 1
        start = _word_start(text, i, end)
        if start < end:
            found.append((start, text[start:end]))
        i = end
    return found


def split_typed_word_in_graph(text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """string[batch] -> (contexts, prefixes) string[batch] each, as :func:`split_typed_word`."""
    return tf.strings.regex_replace(text, _TYPED_WORD, r"\1"), tf.strings.regex_replace(text, _TYPED_WORD, r"\2")


def prefix_chars(prefixes: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Typed prefixes -> their code points per row (the search compares characters, not pieces)."""
    return [[ord(c) for c in prefix] for prefix in prefixes], [len(prefix) for prefix in prefixes]


def prefix_chars_in_graph(prefixes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """string[batch] -> code points [batch, width] (0-padded, width >= 1) and lengths, as :func:`prefix_chars`."""
    return _padded(tf.strings.unicode_decode(prefixes, "UTF-8"))

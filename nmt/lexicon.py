"""A keyboard's lexicon: the words ``suggest`` may offer (``nmt lexicon``; ``RUN/lexicon.txt``).

A subword or character model spells any word, which is why it can complete a name it never saw; but held
to a typed prefix, it also spells words nobody writes ("Vo" -> "Vots", "Vorrect": a rare first piece
followed by a common ending). Phone keyboards suggest from a dictionary. Here the dictionary is the
words of the run's own training text, cut by the text policy's word rule (rule 5 of
:mod:`nmt.text_policy`), seen at least ``min_count`` times; a run fine-tuned from another
(``train.init_from``) keeps that run's words and adds its own (a user's names and words).

With a lexicon, ``suggest`` (Python, CLI, the ``suggest`` signature, the TFLite reference decoder) keeps
the candidate words of the lexicon and renormalises over them; ``next_words`` stays the model's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import tensorflow as tf

from nmt.errors import NmtError
from nmt.io import atomic_write_text
from nmt.text_policy import words_of


def count_words(texts: Iterable[str]) -> Counter:
    return Counter(word for text in texts for _, word in words_of(text))


def write_lexicon(path: Path, counts: Counter) -> list[str]:
    """``word<TAB>count`` lines, most frequent first (ties alphabetical); written whole or not at all.
    Returns the words."""
    kept = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    atomic_write_text(path, "".join(f"{word}\t{count}\n" for word, count in kept))
    return [word for word, _ in kept]


def read_lexicon(path: Path) -> Counter:
    counts: Counter = Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        word, tab, count = line.partition("\t")
        if not word or not tab or not count.isdigit():
            raise NmtError(f"{path}:{number}: expected 'word<TAB>count', got {line!r}; write it again with "
                           "`nmt lexicon`")
        counts[word] = int(count)
    return counts


class Lexicon(tf.Module):
    """The lexicon as a TensorFlow hash table (tracked, saved with an export): :meth:`contains` is
    the in-graph twin of ``word in words``."""

    def __init__(self, words: Sequence[str]) -> None:
        super().__init__(name="lexicon")
        self.words = list(words)
        keys = tf.constant(self.words or [""], tf.string)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32) if self.words
                                                else tf.zeros([1], tf.int32)), default_value=0)

    def contains(self, words: tf.Tensor) -> tf.Tensor:
        return tf.equal(self.table.lookup(words), 1)

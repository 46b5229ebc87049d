"""The one tokenizer wrapper: SentencePiece for subwords (unigram, BPE), characters and words.

The same ``.model`` file serves the Python path (training data, the CLI) and the in-graph path
(``tensorflow_text.SentencepieceTokenizer``, for exported SavedModels), so the two cannot disagree.
Ids are fixed for every model: 0 padding, 1 unknown, 2 begin, 3 end of sequence.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from nmt.constants import BOS_ID, EOS_ID, MIN_VOCAB_SIZE, NUM_SPECIAL, PAD_ID, UNK_ID, UNK_PIECE, WORD_START
from nmt.errors import NmtError
from nmt.io import atomic_write_bytes

log = logging.getLogger(__name__)


def _remembering(texts: Iterator[str], failures: list[BaseException]) -> Iterator[str]:
    """``texts``, keeping any exception raised while reading them: SentencePiece reports it only as
    the text of its own RuntimeError (with a stack listing), which would bury the reader's message."""
    try:
        yield from texts
    except BaseException as error:
        failures.append(error)
        raise


class Tokenizer:
    """Text <-> ids with a SentencePiece model.

    Example:
    >>> tok = Tokenizer.train(["a cat", "a dog"] * 50, model_type="char", vocab_size=20)
    >>> tok.decode(tok.encode(["a cat"])[0])
    'a cat'
    """

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        model_type: str = "unigram",
        vocab_size: int = 8000,
        character_coverage: float = 0.9995,
        input_sentence_size: int = 1_000_000,
        seed: int = 1234,
    ) -> Tokenizer:
        """Trains on ``texts``, read once as a stream: SentencePiece keeps a uniform sample of
        ``input_sentence_size`` sentences (reservoir sampling, seeded), so memory is bounded
        whatever the corpus size."""
        if vocab_size < MIN_VOCAB_SIZE:
            raise NmtError(f"tokenizer vocab_size must be at least {MIN_VOCAB_SIZE} (4 ids are reserved), "
                           f"got {vocab_size}")
        if input_sentence_size <= 100:
            raise NmtError("input_sentence_size: SentencePiece samples more than 100 sentences, "
                           f"got {input_sentence_size}")
        iterator = iter(texts)
        first = next(iterator, None)
        if first is None:
            raise NmtError("cannot train a tokenizer on an empty corpus")
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)
        failures: list[BaseException] = []
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_remembering(itertools.chain([first], iterator), failures),
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size,
                # A vocabulary smaller than asked for is fine for small corpora and char models.
                hard_vocab_limit=False,
                character_coverage=character_coverage,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                # Not "<unk>": that is a word of some corpora (Penn Treebank), which would otherwise
                # become the unknown id, adjacent ones merged into one token.
                unk_piece=UNK_PIECE,
                # Keeps corpus-specific statistics out of the log; errors still raise.
                minloglevel=2,
                num_threads=2,
                max_sentence_length=8192,
                # Digits split into single pieces generalise to unseen numbers.
                split_digits=True,
            )
        except RuntimeError as error:
            if failures:  # the corpus reader's own error (file:line: ...), not SentencePiece's wrapping of it
                raise failures[0] from None
            raise NmtError(f"SentencePiece training failed: {error}") from None
        tokenizer = cls(model.getvalue())
        if tokenizer.vocab_size < vocab_size:
            unit = {"char": "characters", "word": "words"}.get(model_type, "pieces")
            log.warning(
                "tokenizer.vocab_size is %d, but the training text has too few distinct %s for that: using %d "
                "(set tokenizer.vocab_size to %d to silence this)",
                vocab_size, unit, tokenizer.vocab_size, tokenizer.vocab_size,
            )
        return tokenizer

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise NmtError(f"tokenizer model not found: {path}")
        try:
            return cls(path.read_bytes())
        except RuntimeError:  # SentencePiece's ParseFromArray failure: truncated or overwritten
            raise NmtError(f"{path}: damaged SentencePiece model (it does not parse); restore it from a copy of "
                           "the run, or train the run again") from None

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids without BOS/EOS; the model adds those."""
        return self._sp.encode(list(texts), out_type=int, num_threads=2)

    def encode_pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; stops at the first EOS and ignores padding and BOS."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(i)
        return self._sp.decode(out)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def spellings(self) -> list[str]:
        """What each id adds to the characters of a word: its piece without the word-start marker, and
        nothing for the reserved ids. Completing a typed prefix compares these with the typed characters,
        whatever the units (a whole word, a subword, a character)."""
        return ["" if i < NUM_SPECIAL else self.id_to_piece(i).removeprefix(WORD_START) for i in range(self.vocab_size)]

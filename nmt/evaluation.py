"""Scores: sacrebleu BLEU and chrF on detokenized text."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import sacrebleu

from nmt.config import DataConfig
from nmt.errors import NmtError

# sacrebleu tokenizers by target language; everything else gets the standard "13a".
_TOKENIZE_BY_LANGUAGE = {"ja": "ja-mecab", "zh": "zh", "ko": "ko-mecab"}


TOKENIZERS = tuple(sacrebleu.metrics.bleu.BLEU.TOKENIZERS)


def default_tokenize(target_language: str) -> str:
    return _TOKENIZE_BY_LANGUAGE.get(target_language.lower(), "13a")


def bleu_tokenize(data: DataConfig) -> str:
    """The configured sacrebleu tokenizer, or the default for the target language."""
    return data.bleu_tokenize or default_tokenize(data.target_language)


@dataclasses.dataclass
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    sentences: int

    def summary(self) -> str:
        return (
            f"BLEU = {self.bleu:.2f}  chrF = {self.chrf:.2f}  ({self.sentences} sentences)\n"
            f"  {self.bleu_signature}\n  {self.chrf_signature}"
        )


def bleu_metric(tokenize: str) -> sacrebleu.metrics.BLEU:
    """sacrebleu's BLEU with ``tokenize``, which must be usable here: ja-mecab needs MeCab, the
    ``ja`` extra (checked before training, not at its first dev evaluation)."""
    if tokenize not in TOKENIZERS:
        choices = ", ".join(TOKENIZERS)
        raise NmtError(f"unknown BLEU tokenizer {tokenize!r} (choices: {choices})")
    try:
        bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
        bleu.corpus_score(["a"], [["a"]])  # sacrebleu loads some tokenizers on first use
    except (ImportError, RuntimeError) as error:  # e.g. ja-mecab without sacrebleu[ja]
        raise NmtError(f"BLEU tokenizer {tokenize!r} is unavailable ({error}); "
                       "install it with: pip install 'nmt[ja]'") from None
    return bleu


def score(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> Scores:
    """Corpus BLEU and chrF of hypotheses against one reference each."""
    if len(hypotheses) != len(references):
        raise NmtError(f"{len(hypotheses)} hypotheses but {len(references)} references: counts must match")
    bleu = bleu_metric(tokenize)
    chrf = sacrebleu.metrics.CHRF()
    hyps, refs = list(hypotheses), [list(references)]
    bleu_score = bleu.corpus_score(hyps, refs)
    chrf_score = chrf.corpus_score(hyps, refs)
    return Scores(
        bleu=bleu_score.score,
        chrf=chrf_score.score,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        sentences=len(hyps),
    )

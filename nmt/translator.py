"""A trained translation model as a Python object: batched greedy or beam search over text.

The search over ids (:meth:`Translator.search`) is the one the export traces into the SavedModel;
the text <-> ids rules are :mod:`nmt.text_policy`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import overload

import numpy as np
import tensorflow as tf

from nmt import decoding
from nmt.config import Config
from nmt.config_fields import check_fields
from nmt.constants import BOS_ID
from nmt.constrained_beam import Constraints, constrained_beam_search
from nmt.constraints import Terminology, TerminologyEncoder, unmet
from nmt.errors import NmtError
from nmt.function_cache import FunctionCache
from nmt.inspection import TranslationInspection
from nmt.models import Seq2Seq
from nmt.pipeline import pad_batch
from nmt.scoring import Score, score_in_batches
from nmt.shortlist import Shortlist
from nmt.signatures import TRANSLATION
from nmt.text_policy import source_ids, teacher_forced, text_length
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)

IDS_SPEC = [tf.TensorSpec([None, None], tf.int32, name="source"), tf.TensorSpec([None], tf.int32, name="source_length")]
CONSTRAINTS_SPEC = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                    tf.TensorSpec([None, None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                    tf.TensorSpec([None, None], tf.bool)]


@dataclasses.dataclass
class Hypothesis:
    text: str
    score: float  # log-probability / length penalty
    tokens: list[str] = dataclasses.field(default_factory=list)  # target pieces (without a final EOS)
    attention: np.ndarray | None = None  # [target pieces + EOS, source pieces]
    source_tokens: list[str] = dataclasses.field(default_factory=list)


EMPTY_SOURCE = "empty source text; a translation of nothing has no score"


class Translator:
    """Translates text with a trained model: batched, sorted by length, greedy or beam search.

    One text in, its n-best list out; a list of texts in, a list of n-best lists out.

    Example (after ``nmt train --config configs/en-ja-tiny.yaml``):
    >>> translator = nmt.load("runs/en-ja-tiny")                # doctest: +SKIP
    >>> translator.translate("Good morning.", beam_size=5)[0].text  # doctest: +SKIP
    """

    task = TRANSLATION

    def __init__(
        self, model: Seq2Seq, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer, config: Config,
        shortlist: Shortlist | None = None,
    ) -> None:
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.config = config
        # Decode over each batch's shortlisted targets (nmt shortlist) instead of the whole vocabulary.
        self.shortlist = shortlist
        self.truncated = 0  # inputs cut to decode.max_source_length by the last translate()
        self.unmet: list[tuple[int, list[str]]] = []  # texts whose best translation broke its terminology
        self._searches = FunctionCache()  # one compiled search per (beam size, attention)
        # Hidden states and gradients (nmt inspect): translator.inspect.hidden_states("Good morning.")
        self.inspect = TranslationInspection(model, source_tokenizer, target_tokenizer,
                                             config.decode.max_source_length, self._greedy_ids)

    def with_decode(self, **settings: object) -> Translator:
        """A translator over the same model and tokenizers with some ``decode`` settings changed
        (``length_penalty=1.4``): decode settings are chosen after training. Each traces its own search.

        >>> translator.with_decode(length_penalty=1.4).translate("Good morning.")  # doctest: +SKIP
        """
        decode = dataclasses.replace(self.config.decode, **settings)
        check_fields(decode, "decode.")  # the config's rules: a negative length_penalty is an error here too
        return Translator(self.model, self.source_tokenizer, self.target_tokenizer,
                          dataclasses.replace(self.config, decode=decode), self.shortlist)

    def with_shortlist(self, shortlist: Shortlist | None) -> Translator:
        """A translator over the same model that decodes over ``shortlist`` (None: the whole vocabulary)."""
        return Translator(self.model, self.source_tokenizer, self.target_tokenizer, self.config, shortlist)

    def max_output_lengths(self, lengths: tf.Tensor | np.ndarray) -> tf.Tensor:
        """Each source's output length limit (with EOS), from ``decode``."""
        cfg = self.config.decode
        return decoding.max_output_lengths(lengths, cfg.max_length_ratio, cfg.max_length_offset)

    def search(
        self, ids: tf.Tensor, lengths: tf.Tensor, beam_size: int, with_attention: bool = False,
        constraints: Constraints | None = None,
    ) -> decoding.DecodeResult:
        """Source ids [batch, time] -> the search's result: the one search both this class and the
        exported signatures run (the output length limit from ``decode``); attention weights
        only ``with_attention`` (else the result's attention is None). ``constraints``: the
        terminology search (:class:`nmt.constrained_beam.Constraints`), over the whole vocabulary (a
        shortlist could leave a constraint's pieces out)."""
        cfg = self.config.decode
        context, state = self.model.encode(ids, lengths)
        max_lengths = self.max_output_lengths(lengths)
        if constraints is not None:
            return constrained_beam_search(self.model.step, state, context, max_lengths, beam_size,
                                           cfg.length_penalty, constraints, with_attention)
        if self.shortlist is None:
            return decoding.decode(self.model.step, state, context, max_lengths, beam_size, cfg.length_penalty,
                                   with_attention=with_attention)
        # The search runs over positions in the batch's allowed ids: position i < NUM_SPECIAL is id i
        # (EOS stays EOS), the step maps positions to ids for the embedding, the result is mapped once.
        allowed = self.shortlist.allowed_ids(ids, lengths)
        rows = self.model.decoder.output_rows(allowed)

        def step(positions: tf.Tensor, state: dict, context: dict) -> tuple:
            return self.model.step(tf.gather(allowed, positions), state, context, rows)

        result = decoding.decode(step, state, context, max_lengths, beam_size, cfg.length_penalty,
                                 with_attention=with_attention)
        return result._replace(ids=tf.gather(allowed, result.ids))

    def score_ids(self, source: tf.Tensor, source_lengths: tf.Tensor, target: tf.Tensor,
                  target_lengths: tf.Tensor) -> tf.Tensor:
        """Forced decoding: the log-probability [batch, time + 1] of each target piece [batch, time]
        (the first ``target_lengths`` of each row) and then of EOS, given the source; 0 past the EOS.
        One teacher-forced pass over the whole batch, the computation training's loss runs."""
        target_in, target_out, predicted = teacher_forced(target, target_lengths, BOS_ID)
        logits = self.model({"source": source, "source_length": source_lengths, "target_in": target_in})
        scores = tf.gather(tf.nn.log_softmax(logits), target_out, batch_dims=2)
        return tf.where(predicted, scores, 0.0)

    def score(
        self, sources: Sequence[str], targets: Sequence[str], batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Score]:
        """Each target's log-probability given its source, with per-piece scores. Sources are cut
        to ``decode.max_source_length`` as :meth:`translate` cuts them (``self.truncated`` counts
        them); targets are scored whole, however long. An empty target is the empty translation:
        its score is EOS's. An empty source has no translation to score: NmtError naming its line."""
        if len(sources) != len(targets):
            raise NmtError(f"{len(sources)} source lines but {len(targets)} target lines: scoring needs pairs")
        for line, text in enumerate(sources, 1):
            if not text.strip():
                raise NmtError(f"line {line}: {EMPTY_SOURCE}")
        cfg = self.config.decode
        encoded, self.truncated = source_ids(self.source_tokenizer, sources, cfg.max_source_length)
        encoded_targets = self.target_tokenizer.encode(list(targets))
        function = self._searches(("score",), lambda: tf.function(self.score_ids, autograph=False,
                                                                  input_signature=IDS_SPEC + IDS_SPEC))

        def scores_of(rows: list[int]) -> np.ndarray:
            source, source_lengths = pad_batch([encoded[i] for i in rows])
            target, target_lengths = pad_batch([encoded_targets[i] for i in rows])  # empty ones: a pad column
            return function(source, source_lengths, target, target_lengths).numpy()

        return score_in_batches(encoded_targets, scores_of, self.target_tokenizer, cfg.length_penalty,
                                batch_size or cfg.batch_size, [len(x) for x in encoded], progress)

    def _search_function(self, beam_size: int, with_attention: bool = False, constrained: bool = False) -> Callable:
        """One compiled search per beam size, attention and terminology; the input signature avoids
        retracing per shape."""
        if not constrained:
            return self._searches((beam_size, with_attention), lambda: tf.function(
                lambda ids, lengths: self.search(ids, lengths, beam_size, with_attention),
                autograph=False, input_signature=IDS_SPEC))
        return self._searches((beam_size, with_attention, "constrained"), lambda: tf.function(
            lambda ids, lengths, *c: self.search(ids, lengths, beam_size, with_attention, Constraints(*c)),
            autograph=False, input_signature=IDS_SPEC + CONSTRAINTS_SPEC))

    def _greedy_ids(self, ids: list[int]) -> np.ndarray:
        """One sentence's greedy translation as ids, with its final EOS (what the gradients follow)."""
        result = self.translate_batch_ids([ids], 1)
        return result.ids.numpy()[0, 0, : int(result.lengths.numpy()[0, 0])]

    def prepare(self, beam_size: int | None = None) -> None:
        """Traces the search for ``beam_size`` (default: the config's) now rather than on the first
        batch, so that a timing of :meth:`translate` measures translation alone."""
        self._search_function(beam_size or self.config.decode.beam_size).get_concrete_function()

    def translate_batch_ids(
        self, ids: list[list[int]], beam_size: int, with_attention: bool = False,
        constraints: Constraints | None = None,
    ) -> decoding.DecodeResult:
        source, lengths = pad_batch(ids)
        if constraints is None:
            return self._search_function(beam_size, with_attention)(source, lengths)
        return self._search_function(beam_size, with_attention, True)(source, lengths, *constraints)

    @overload
    def translate(self, texts: str, beam_size: int | None = None, nbest: int = 1, batch_size: int | None = None,
                  with_attention: bool = False, progress: Callable[[int], None] | None = None,
                  terminology: Terminology | None = None) -> list[Hypothesis]: ...
    @overload
    def translate(self, texts: Sequence[str], beam_size: int | None = None, nbest: int = 1,
                  batch_size: int | None = None, with_attention: bool = False,
                  progress: Callable[[int], None] | None = None,
                  terminology: Sequence[Terminology | None] | None = None) -> list[list[Hypothesis]]: ...

    def translate(
        self,
        texts: str | Sequence[str],
        beam_size: int | None = None,
        nbest: int = 1,
        batch_size: int | None = None,
        with_attention: bool = False,
        progress: Callable[[int], None] | None = None,
        terminology: Terminology | Sequence[Terminology | None] | None = None,
    ) -> list[Hypothesis] | list[list[Hypothesis]]:
        """Returns ``nbest`` hypotheses per text, best first. An empty text gives empty hypotheses.

        Texts longer than ``decode.max_source_length`` tokens are cut to that length (an RNN
        trained on sentences degrades on page-long inputs; split them into sentences first);
        ``self.truncated`` counts them.

        ``terminology``: per text (one, for one text), phrases its translation must contain and
        must not (:class:`nmt.constraints.Terminology`; :mod:`nmt.constraints` says how phrases
        become pieces). Batches with terminology run the constrained beam search over the whole
        vocabulary, the others the plain one. ``self.unmet`` lists the texts whose best translation
        still breaks its terminology (a constraint that did not fit the beam or the length limit).

        >>> translator.translate("Where is Tokyo Station?", beam_size=5,
        ...                      terminology=Terminology.of(["東京駅"], ["新宿"]))  # doctest: +SKIP
        """
        if isinstance(texts, str):
            one = None if terminology is None else [terminology]
            return self.translate([texts], beam_size, nbest, batch_size, with_attention, progress, one)[0]
        cfg = self.config.decode
        beam_size = beam_size or cfg.beam_size
        batch_size = batch_size or cfg.batch_size
        if nbest < 1 or nbest > beam_size:
            raise NmtError(f"--nbest must be between 1 and the beam size ({beam_size}), got {nbest}")
        encoded, self.truncated = source_ids(self.source_tokenizer, texts, cfg.max_source_length)
        items = self._terminology(texts, terminology)
        self.unmet = []
        results: list[list[Hypothesis]] = [[Hypothesis("", 0.0)] * nbest for _ in texts]
        # Longest first: similar lengths share a batch, and the slowest batch shows up early.
        order = sorted((i for i, x in enumerate(encoded) if x), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            constraints = None
            if any(items[i] for i in chunk):
                limits = self.max_output_lengths(np.array([len(encoded[i]) for i in chunk], np.int32)).numpy()
                constraints = self.terminology_encoder.encode([items[i] for i in chunk], limits.tolist(),
                                                              [i + 1 for i in chunk])
            result = self.translate_batch_ids([encoded[i] for i in chunk], beam_size, with_attention, constraints)
            arrays = decoding.DecodeResult(result.ids.numpy(), result.lengths.numpy(), result.scores.numpy(),
                                           result.attention.numpy() if with_attention else None)
            for row, index in enumerate(chunk):
                results[index] = self._hypotheses(arrays, row, nbest, encoded[index] if with_attention else None)
                broken = unmet(items[index], results[index][0].text) if items[index] else []
                if broken:
                    self.unmet.append((index, broken))
            if progress:
                progress(len(chunk))
        if progress:
            progress(len(texts) - len(order))  # empty lines
        for index, broken in self.unmet:
            log.warning("line %d: the best translation %s (a constraint may not fit the beam or the length "
                        "limit: try a larger --beam)", index + 1, " and ".join(broken))
        return results

    def _terminology(self, texts: Sequence[str], terminology: Sequence[Terminology | None] | None) -> list[Terminology]:
        if terminology is None:
            return [Terminology()] * len(texts)
        if len(terminology) != len(texts):
            raise NmtError(f"{len(texts)} texts but {len(terminology)} terminology entries: give one per text")
        items = [t or Terminology() for t in terminology]
        for line, (text, item) in enumerate(zip(texts, items), 1):
            if item and not text.strip():
                raise NmtError(f"line {line}: constraints on an empty text (its translation is empty)")
        return items

    @functools.cached_property
    def terminology_encoder(self) -> TerminologyEncoder:
        """Terminology phrases -> pieces, as the target language writes them inside a sentence."""
        return TerminologyEncoder(self.target_tokenizer, self.config.data.target_language)

    def _hypotheses(self, result: decoding.DecodeResult, row: int, nbest: int,
                    source: list[int] | None) -> list[Hypothesis]:
        """The ``nbest`` hypotheses of one row of a search (as numpy arrays); with attention when
        ``source`` is given."""
        ids, lengths, scores = result.ids[row], result.lengths[row], result.scores[row]
        hypotheses = []
        for n in range(nbest):
            pieces = ids[n, : text_length(ids[n], int(lengths[n]))]
            hypothesis = Hypothesis(self.target_tokenizer.decode(pieces), float(scores[n]))
            if source is not None:
                hypothesis.tokens = [self.target_tokenizer.id_to_piece(i) for i in pieces]
                hypothesis.source_tokens = [self.source_tokenizer.id_to_piece(i) for i in source]
                hypothesis.attention = result.attention[row, n, : lengths[n], : len(source)]
            hypotheses.append(hypothesis)
        return hypotheses

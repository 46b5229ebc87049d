"""A trained run directory as a Python object: ``nmt.load(run_dir).translate(texts)``.

The CLI and the dev-set evaluation during training are layers over this.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml

from nmt import decoding
from nmt.config import Config, config_from_dict
from nmt.errors import NmtError
from nmt.models import Seq2Seq, model_variables
from nmt.pipeline import pad_batch
from nmt.tokenizer import Tokenizer

BEST_WEIGHTS = Path("best") / "model.weights.h5"


@dataclasses.dataclass
class Hypothesis:
    text: str
    score: float  # log-probability / length penalty
    tokens: list[str] = dataclasses.field(default_factory=list)  # target pieces (with EOS omitted)
    attention: np.ndarray | None = None  # [target pieces + EOS, source pieces]
    source_tokens: list[str] = dataclasses.field(default_factory=list)


def tokenizer_paths(run_dir: Path, shared: bool) -> tuple[Path, Path]:
    spm = run_dir / "spm"
    if shared:
        return spm / "shared.model", spm / "shared.model"
    return spm / "source.model", spm / "target.model"


def build_model(config: Config, source_vocab_size: int, target_vocab_size: int) -> Seq2Seq:
    """The model section of a config, 1:1 onto the constructor."""
    model_args = dataclasses.asdict(config.model)
    model = Seq2Seq(source_vocab_size, target_vocab_size, **model_args)
    model.build_weights()
    return model


class Translator:
    """Translates text with a trained model: batched, sorted by length, greedy or beam search.

    Example (after ``nmt train --config configs/en-ja-tiny.yaml``):
    >>> translator = nmt.load("runs/en-ja-tiny")               # doctest: +SKIP
    >>> translator.translate(["Good morning."], beam_size=5)   # doctest: +SKIP
    """

    def __init__(
        self, model: Seq2Seq, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer, config: Config
    ) -> None:
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.config = config
        self.truncated = 0  # inputs cut to decode.max_source_length by the last translate()
        self._functions: dict[int, Callable] = {}

    def _decode_function(self, beam_size: int) -> Callable:
        """One compiled decoder per beam size; the input signature avoids retracing per shape."""
        if beam_size not in self._functions:
            cfg = self.config.decode

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, None], tf.int32, name="source"),
                    tf.TensorSpec([None], tf.int32, name="source_length"),
                ]
            )
            def run(source: tf.Tensor, source_length: tf.Tensor) -> decoding.DecodeResult:
                context, state = self.model.encode(source, source_length)
                max_lengths = decoding.max_output_lengths(source_length, cfg.max_length_ratio, cfg.max_length_offset)
                result = decoding.decode(self.model.step, state, context, max_lengths, beam_size, cfg.length_penalty)
                return result

            self._functions[beam_size] = run
        return self._functions[beam_size]

    def translate_batch_ids(self, ids: list[list[int]], beam_size: int) -> decoding.DecodeResult:
        source, lengths = pad_batch(ids)
        return self._decode_function(beam_size)(source, lengths)

    def translate(
        self,
        texts: Sequence[str],
        beam_size: int | None = None,
        nbest: int = 1,
        batch_size: int | None = None,
        with_attention: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Hypothesis]]:
        """Returns ``nbest`` hypotheses per text, best first. An empty text gives empty hypotheses.

        Texts longer than ``decode.max_source_length`` tokens are cut to that length (an RNN
        trained on sentences degrades on page-long inputs; split them into sentences first);
        ``self.truncated`` counts them.
        """
        cfg = self.config.decode
        beam_size = beam_size or cfg.beam_size
        batch_size = batch_size or cfg.batch_size
        if nbest < 1 or nbest > beam_size:
            raise NmtError(f"--nbest must be between 1 and the beam size ({beam_size}), got {nbest}")
        encoded = self.source_tokenizer.encode(list(texts))
        self.truncated = sum(len(x) > cfg.max_source_length for x in encoded)
        encoded = [x[: cfg.max_source_length] for x in encoded]
        results: list[list[Hypothesis]] = [[Hypothesis("", 0.0)] * nbest for _ in texts]
        # Longest first: similar lengths share a batch, and the slowest batch shows up early.
        order = sorted((i for i, x in enumerate(encoded) if x), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            result = self.translate_batch_ids([encoded[i] for i in chunk], beam_size)
            ids, lengths, scores = result.ids.numpy(), result.lengths.numpy(), result.scores.numpy()
            attention = result.attention.numpy() if with_attention else None
            for row, index in enumerate(chunk):
                hypotheses = []
                for n in range(nbest):
                    pieces = ids[row, n, : max(0, lengths[row, n] - 1)]  # without EOS
                    hypothesis = Hypothesis(self.target_tokenizer.decode(pieces), float(scores[row, n]))
                    if with_attention:
                        hypothesis.tokens = [self.target_tokenizer.id_to_piece(i) for i in pieces]
                        hypothesis.source_tokens = [self.source_tokenizer.id_to_piece(i) for i in encoded[index]]
                        hypothesis.attention = attention[row, n, : lengths[row, n], : len(encoded[index])]
                    hypotheses.append(hypothesis)
                results[index] = hypotheses
            if progress:
                progress(len(chunk))
        if progress:
            progress(len(texts) - len(order))  # empty lines
        return results


def read_run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise NmtError(f"{run_dir} is not a run directory: {path.name} is missing (train one with `nmt train`)")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(tree, dict):
            raise NmtError("expected a mapping of config keys")
        return config_from_dict(tree)
    except (NmtError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise NmtError(f"{path}: not a valid run config: {error}") from None


def load(run_dir: str | Path, weights: str = "best") -> Translator:
    """Loads a trained run: ``weights`` is ``best`` (chosen on dev) or ``latest`` (last checkpoint)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    source_path, target_path = tokenizer_paths(run_dir, config.tokenizer.shared)
    source_tokenizer, target_tokenizer = Tokenizer.load(source_path), Tokenizer.load(target_path)
    model = build_model(config, source_tokenizer.vocab_size, target_tokenizer.vocab_size)
    best = run_dir / BEST_WEIGHTS
    if weights == "best" and best.is_file():
        model.load_weights(best)
    else:
        latest = tf.train.latest_checkpoint(run_dir / "checkpoints")
        if latest is None:
            raise NmtError(f"{run_dir}: no trained weights (neither {BEST_WEIGHTS} nor a checkpoint)")
        tf.train.Checkpoint(model=model_variables(model)).read(latest).expect_partial().assert_existing_objects_matched()
        if weights == "best":
            print(f"note: {run_dir} has no {BEST_WEIGHTS} yet; using the latest checkpoint", file=sys.stderr)
    return Translator(model, source_tokenizer, target_tokenizer, config)

"""A trained run directory as a Python object: ``nmt.load(run_dir)`` gives a :class:`Translator`
(``translate(texts)``) or, for a language model, a :class:`LanguageModelRunner`
(``next_words``, ``generate``, ``evaluate``).

The CLI and the dev-set evaluation during training are layers over this.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from nmt import decoding
from nmt.checkpoints import checkpoint_prefixes, checkpoint_problem, newest_intact
from nmt.config import Config, check_finite, check_sampling, check_task, read_run_config  # noqa: F401 - read_run_config: API
from nmt.errors import NmtError
from nmt.models import LanguageModel, Seq2Seq, model_variables
from nmt.pipeline import encode_texts, make_dataset, make_stream_dataset, pad_batch, token_stream
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

BEST_WEIGHTS = Path("best") / "model.weights.h5"

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Hypothesis:
    text: str
    score: float  # log-probability / length penalty
    tokens: list[str] = dataclasses.field(default_factory=list)  # target pieces (with EOS omitted)
    attention: np.ndarray | None = None  # [target pieces + EOS, source pieces]
    source_tokens: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Trace:
    """What a recurrent network holds after each token of one text (``nmt inspect``)."""

    tokens: list[str]  # the pieces read, in order (a language model's first is its start symbol)
    states: np.ndarray  # [tokens, units]: the top layer's hidden state after each token
    predictions: list[list[tuple[str, float]]]  # language model: the k likeliest next pieces after each token

    @property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.states, axis=1)

    @property
    def changes(self) -> np.ndarray:
        """L2 distance from the state after the previous token (from zeros for the first)."""
        previous = np.concatenate([np.zeros_like(self.states[:1]), self.states[:-1]])
        return np.linalg.norm(self.states - previous, axis=1)


def tokenizer_paths(run_dir: Path, config: Config) -> tuple[Path, Path]:
    """(source, target) SentencePiece model files; one file when they are the same tokenizer
    (a shared vocabulary, or a language model)."""
    spm = run_dir / "spm"
    if config.tokenizer.shared or config.task == "lm":
        return spm / "shared.model", spm / "shared.model"
    return spm / "source.model", spm / "target.model"


def build_model(config: Config, source_vocab_size: int, target_vocab_size: int) -> Seq2Seq | LanguageModel:
    """The model section of a config, 1:1 onto the constructor."""
    model_args = dataclasses.asdict(config.model)
    if config.task == "lm":
        del model_args["encoder"]
        model: Seq2Seq | LanguageModel = LanguageModel(target_vocab_size, **model_args)
    else:
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
                autograph=False,
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

    def encoder_states(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """The encoder's output after each source token [batch, time, units x directions] (the
        forward and backward halves of a bidirectional encoder side by side): what attention reads."""
        memory, _ = self.model.encoder(ids, lengths, training=False)
        return memory

    def trace(self, text: str) -> Trace:
        """The encoder's state after each piece of ``text`` (cut to decode.max_source_length)."""
        ids = self.source_tokenizer.encode([text])[0][: self.config.decode.max_source_length]
        if not ids:
            raise NmtError("nothing to inspect: the text is empty")
        states = self.encoder_states(tf.constant([ids], tf.int32), tf.constant([len(ids)], tf.int32))
        return Trace([self.source_tokenizer.id_to_piece(i) for i in ids], states.numpy()[0], [])

    def prepare(self, beam_size: int | None = None) -> None:
        """Traces the search for ``beam_size`` (default: the config's) now rather than on the first
        batch, so that a timing of :meth:`translate` measures translation alone."""
        self._decode_function(beam_size or self.config.decode.beam_size).get_concrete_function()

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


@dataclasses.dataclass
class Perplexity:
    """How well a language model predicts a text: total negative log-likelihood (nats) and what
    it is normalised by. Every line's end is one prediction (EOS), one word and one character
    (the newline), as in the Penn Treebank convention, so the figures compare across units."""

    nll: float
    tokens: int  # predictions made by the model (its own units, + 1 EOS per line)
    words: int  # whitespace-separated words + 1 per line
    characters: int  # characters + 1 per line (the newline)

    @property
    def loss(self) -> float:
        """Mean nats per model token."""
        return self.nll / max(self.tokens, 1)

    @property
    def token_perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def word_perplexity(self) -> float:
        return math.exp(min(self.nll / max(self.words, 1), 700.0))

    @property
    def nats_per_character(self) -> float:
        return self.nll / max(self.characters, 1)

    @property
    def bits_per_character(self) -> float:
        return self.nats_per_character / math.log(2)

    def summary(self) -> str:
        return (
            f"word perplexity {self.word_perplexity:.2f}, {self.bits_per_character:.4f} bits/char "
            f"({self.nats_per_character:.4f} nats/char), loss {self.loss:.4f} nats/token, token perplexity "
            f"{self.token_perplexity:.2f} ({self.tokens} tokens, {self.words} words, {self.characters} characters)"
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": self.loss, "token_perplexity": self.token_perplexity, "word_perplexity": self.word_perplexity,
            "nats_per_character": self.nats_per_character, "bits_per_character": self.bits_per_character,
            "tokens": self.tokens, "words": self.words, "characters": self.characters,
        }


PROMPT_SPEC = [tf.TensorSpec([None, None], tf.int32, name="ids"), tf.TensorSpec([None], tf.int32, name="length")]


class LanguageModelRunner:
    """A trained language model: next whole words, text generation and perplexity.

    Trained line by line (``train.bptt_steps`` null), a text is one sequence: BOS, tokens, EOS, and
    generation stops at EOS. Trained on running text (TBPTT), EOS is a line break: the model reads a
    prompt as the start of a new line and generation runs on to ``max_tokens``.

    Example (after ``nmt train --config configs/lm-en.yaml``):
    >>> lm = nmt.load("runs/lm-en")                          # doctest: +SKIP
    >>> lm.next_words("I love eating", k=3)                  # doctest: +SKIP
    [[('pizza', 0.08), ('sushi', 0.05), ('apples', 0.03)]]
    """

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, config: Config) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.running_text = config.train.bptt_steps is not None
        # What precedes a line's first token: BOS for sentence models, the previous line's EOS for
        # running text.
        self.start_id = EOS_ID if self.running_text else BOS_ID
        self.max_prompt_tokens = config.decode.max_source_length
        self.pieces = tf.constant([tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)])
        self._functions: dict[tuple, Callable] = {}

    # --- prompts -----------------------------------------------------------------------------

    def encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids; a prompt over ``decode.max_source_length`` tokens is an error."""
        encoded = self.tokenizer.encode([t.strip() for t in texts])
        for index, ids in enumerate(encoded):
            if len(ids) > self.max_prompt_tokens:
                raise NmtError(
                    f"prompt {index + 1} is {len(ids)} tokens long; this model takes at most "
                    f"{self.max_prompt_tokens} (decode.max_source_length)"
                )
        return encoded

    def prime(self, ids: tf.Tensor, length: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """Prompt ids [batch, time] (padded) -> the state before the prompt's last token and that
        token (the start id for an empty prompt): every search starts by feeding it."""
        batch = tf.shape(ids)[0]
        sequence = tf.concat([tf.fill([batch, 1], self.start_id), ids], axis=1)
        last = tf.gather(sequence, length, batch_dims=1)
        _, state = self.model.forward(sequence[:, :-1], self.model.initial_state(batch), lengths=length)
        return state, last

    def _function(self, key: tuple, build: Callable[[], Callable]) -> Callable:
        if key not in self._functions:
            self._functions[key] = build()
        return self._functions[key]

    # --- next words --------------------------------------------------------------------------

    @property
    def max_word_pieces(self) -> int:
        return 24 if self.config.tokenizer.model_type == "char" else 8

    @property
    def max_k(self) -> int:
        """The most next words one query can ask for (100, or fewer for a tiny vocabulary)."""
        return min(100, self.tokenizer.vocab_size - 4)

    def beam_size_for(self, k: int) -> int:
        return min(max(10, k), self.tokenizer.vocab_size)

    def next_words_ids(self, ids: tf.Tensor, length: tf.Tensor, k: int | tf.Tensor, beam_size: int) -> decoding.NextWords:
        state, last = self.prime(ids, length)
        return decoding.next_word_search(
            self.model.step, state, {}, last, self.pieces, k, beam_size, self.max_word_pieces,
            whole_pieces=self.config.tokenizer.model_type == "word",
        )

    def next_words(self, texts: str | Sequence[str], k: int = 5, batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely next whole words after each text, with their probabilities.

        Trailing spaces do not matter: the next word is always a new word after the text. An empty
        text asks for the first word of a sentence.
        """
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(k, float):
            check_finite("k", k)  # NaN compares false with everything: name it rather than give a range
        if not 1 <= k <= self.max_k:
            raise NmtError(f"k must be between 1 and {self.max_k}, got {k}")
        beam_size = self.beam_size_for(k)

        def build() -> Callable:
            @tf.function(autograph=False, input_signature=[*PROMPT_SPEC, tf.TensorSpec([], tf.int32, name="k")])
            def run(ids: tf.Tensor, length: tf.Tensor, k: tf.Tensor) -> decoding.NextWords:
                return self.next_words_ids(ids, length, k, beam_size)

            return run

        encoded = self.encode_prompts(texts)
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(encoded), batch_size):
            ids, length = pad_batch(encoded[start : start + batch_size])
            found = self._function(("next_words", beam_size), build)(ids, length, tf.constant(k))
            results += [
                [(w.decode("utf-8"), float(p)) for w, p in zip(row_words, row_probs) if w]
                for row_words, row_probs in zip(found.words.numpy(), found.probabilities.numpy())
            ]
        return results

    # --- hidden states ---------------------------------------------------------------------

    def trace_ids(self, ids: tf.Tensor, length: tf.Tensor, k: int) -> dict[str, tf.Tensor]:
        """Reads the start symbol, then each prompt token, one step at a time. After each token:
        ``states`` [batch, 1 + time, units] (the top layer's hidden state, which the softmax reads)
        and the ``k`` likeliest next tokens, ``top_ids`` and ``top_probabilities`` [batch, 1 + time,
        k]; ``lengths`` [batch] counts the start symbol (rows past it are padding)."""
        batch = tf.shape(ids)[0]
        sequence = tf.concat([tf.fill([batch, 1], self.start_id), tf.cast(ids, tf.int32)], axis=1)

        def read(carry: tuple, ids_t: tf.Tensor) -> tuple:
            logits, state, _ = self.model.step(ids_t, carry[0], {})
            top = tf.math.top_k(tf.nn.softmax(logits), k)
            return state, tf.cast(state["rnn"][-1][0], tf.float32), top.indices, top.values

        initial = (self.model.initial_state(batch), tf.zeros([batch, self.model.decoder.units]),
                   tf.zeros([batch, k], tf.int32), tf.zeros([batch, k]))
        _, states, top_ids, top_probabilities = tf.scan(read, tf.transpose(sequence), initializer=initial)
        batch_major = [1, 0, 2]
        return {"states": tf.transpose(states, batch_major), "top_ids": tf.transpose(top_ids, batch_major),
                "top_probabilities": tf.transpose(top_probabilities, batch_major), "lengths": length + 1}

    def trace(self, text: str, k: int = 5) -> Trace:
        """The hidden state and the ``k`` likeliest next pieces after each token of ``text``."""
        if not 1 <= k <= self.tokenizer.vocab_size:
            raise NmtError(f"k must be between 1 and the vocabulary size {self.tokenizer.vocab_size}, got {k}")
        ids = self.encode_prompts([text])[0]

        def build() -> Callable:
            return tf.function(lambda ids, length: self.trace_ids(ids, length, k), autograph=False, input_signature=PROMPT_SPEC)

        found = self._function(("trace", k), build)(tf.constant([ids], tf.int32), tf.constant([len(ids)], tf.int32))
        piece = self.tokenizer.id_to_piece
        predictions = [
            [(piece(int(i)), float(p)) for i, p in zip(row_ids, row_probs)]
            for row_ids, row_probs in zip(found["top_ids"].numpy()[0], found["top_probabilities"].numpy()[0])
        ]
        return Trace([piece(self.start_id), *map(piece, ids)], found["states"].numpy()[0], predictions)

    # --- generation --------------------------------------------------------------------------

    def generate_ids(
        self, ids: tf.Tensor, length: tf.Tensor, max_tokens: tf.Tensor, sampler: decoding.Sampler, seed: tf.Tensor
    ) -> decoding.DecodeResult:
        """``max_tokens`` and ``seed``: scalars or one per row (steps, EOS included)."""
        state, last = self.prime(ids, length)
        max_lengths = tf.broadcast_to(tf.cast(max_tokens, tf.int32), [tf.shape(ids)[0]])
        return decoding.sample(
            self.model.step, state, {}, max_lengths, sampler, seed, start_ids=last, stop_at_eos=not self.running_text
        )

    def generate(
        self,
        prompts: str | Sequence[str],
        max_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 64,
    ) -> list[str]:
        """Continues each prompt; returns prompt + continuation. ``temperature`` 0 is greedy;
        ``top_k`` 0 and ``top_p`` 1 disable those filters; the same ``seed`` gives the same text.
        ``max_tokens`` counts the tokens of text written (the end of sentence is not one)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        check_sampling(temperature, top_p, max_tokens, seed)
        if top_k < 0 or top_k > self.tokenizer.vocab_size:
            raise NmtError(f"top_k must be between 0 (off) and the vocabulary size {self.tokenizer.vocab_size}, got {top_k}")

        def build() -> Callable:
            @tf.function(
                autograph=False,
                input_signature=[
                    *PROMPT_SPEC,
                    tf.TensorSpec([], tf.int32, name="max_tokens"),
                    tf.TensorSpec([], tf.float32, name="temperature"),
                    tf.TensorSpec([], tf.int32, name="top_k"),
                    tf.TensorSpec([], tf.float32, name="top_p"),
                    tf.TensorSpec([], tf.int32, name="seed"),
                ]
            )
            def run(ids, length, max_tokens, temperature, top_k, top_p, seed) -> decoding.DecodeResult:
                return self.generate_ids(ids, length, max_tokens, decoding.Sampler(temperature, top_k, top_p), seed)

            return run

        encoded = self.encode_prompts(prompts)
        # A sentence model's last step is its EOS, which is not text: one more step for it.
        limit = max_tokens if self.running_text else max_tokens + 1
        texts = []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            ids, length = pad_batch(chunk)
            result = self._function(("generate",), build)(
                ids, length, tf.constant(limit), tf.constant(temperature, tf.float32), tf.constant(top_k),
                tf.constant(top_p, tf.float32), tf.constant(seed),
            )
            out_ids, out_lengths = result.ids.numpy()[:, 0], result.lengths.numpy()[:, 0]
            texts += [self.ids_to_text(prompt + list(row[:n])) for prompt, row, n in zip(chunk, out_ids, out_lengths)]
        return texts

    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Sentence models: the text up to EOS. Running text: EOS is a line break."""
        if not self.running_text:
            return self.tokenizer.decode(ids)
        lines, current = [], []
        for i in ids:
            if int(i) == EOS_ID:
                lines.append(self.tokenizer.decode(current))
                current = []
            else:
                current.append(int(i))
        return "\n".join(lines + [self.tokenizer.decode(current)])

    # --- perplexity --------------------------------------------------------------------------

    def evaluate(
        self, texts: Sequence[str], streams: int = 1, window: int = 200, progress: Callable[[int], None] | None = None
    ) -> Perplexity:
        """Negative log-likelihood of ``texts`` (lines). Running text is read as one stream,
        ``window`` tokens at a time with the state carried, so every token sees all of the text
        before it; ``streams`` > 1 cuts it into that many parts read side by side (faster; each
        part but the first starts without context). A sentence model scores each non-empty line
        on its own."""
        texts = [t.strip() for t in texts]
        if not self.running_text:
            texts = [t for t in texts if t]
        if not texts:
            raise NmtError("nothing to evaluate: the text has no non-empty lines")
        words = sum(len(t.split()) for t in texts) + len(texts)
        characters = sum(len(t) for t in texts) + len(texts)
        corpus = encode_texts(list(texts), self.tokenizer)
        if self.running_text:
            batches = make_stream_dataset(token_stream(corpus), streams, window, repeat=False)
        else:
            batches = make_dataset(corpus, batch_size=64, repeat=False, shuffle=False)
        nll, tokens = 0.0, 0
        state = self.model.initial_state(streams)
        score = self._function(("score",), lambda: tf.function(self._score_batch, autograph=False, reduce_retracing=True))
        for batch in batches:
            batch_nll, batch_tokens, state = score(batch["target_in"], batch["target_out"], state)
            nll += float(batch_nll)
            tokens += int(batch_tokens)
            if progress:
                progress(int(batch_tokens))
        return Perplexity(nll, tokens, words, characters)

    def _score_batch(self, target_in: tf.Tensor, target_out: tf.Tensor, state: dict) -> tuple[tf.Tensor, tf.Tensor, dict]:
        """Summed NLL and count of the non-padding targets, and the state after the batch."""
        if not self.running_text:
            state = self.model.initial_state(tf.shape(target_in)[0])
        logits, final = self.model.forward(target_in, state)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(target_out, logits)
        mask = tf.cast(tf.not_equal(target_out, PAD_ID), tf.float32)
        return tf.reduce_sum(nll * mask), tf.reduce_sum(mask), final


def load(run_dir: str | Path, weights: str = "best", task: str | None = None) -> Translator | LanguageModelRunner:
    """Loads a trained run: ``weights`` is ``best`` (chosen on dev), ``latest`` (last checkpoint) or
    the name of one kept checkpoint, ``ckpt-N`` (as in ``run_dir/checkpoints``).

    A translation run gives a :class:`Translator`, a language model a :class:`LanguageModelRunner`;
    ``task`` ("translation" or "lm"), when given, makes any other kind an error.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    check_task(run_dir, config, task)
    source_path, target_path = tokenizer_paths(run_dir, config)
    source_tokenizer, target_tokenizer = Tokenizer.load(source_path), Tokenizer.load(target_path)
    model = build_model(config, source_tokenizer.vocab_size, target_tokenizer.vocab_size)
    _load_weights(model, run_dir, weights)
    if config.task == "lm":
        return LanguageModelRunner(model, target_tokenizer, config)
    return Translator(model, source_tokenizer, target_tokenizer, config)


def _read_checkpoint(model: Seq2Seq | LanguageModel, prefix: Path) -> None:
    tf.train.Checkpoint(model=model_variables(model)).read(str(prefix)).expect_partial().assert_existing_objects_matched()


def _load_weights(model: Seq2Seq | LanguageModel, run_dir: Path, weights: str) -> None:
    """A file asked for by name (the best weights, ``ckpt-N``) must be intact; the latest checkpoint
    falls back to the newest intact one, with a warning naming each damaged one passed over."""
    checkpoints = run_dir / "checkpoints"
    best = run_dir / BEST_WEIGHTS
    if weights not in ("best", "latest"):
        if not re.fullmatch(r"ckpt-\d+", weights):
            raise NmtError(f"weights {weights!r}: expected best, latest or a checkpoint name such as ckpt-1000")
        kept = ", ".join(p.name for p in reversed(checkpoint_prefixes(checkpoints))) or "none"
        if not (checkpoints / f"{weights}.index").is_file():
            raise NmtError(f"{checkpoints} has no checkpoint {weights} (kept: {kept})")
        problem = checkpoint_problem(checkpoints / weights)
        if problem is not None:
            raise NmtError(f"checkpoint {checkpoints / weights} is damaged ({problem}); "
                           f"choose another with --weights (kept: {kept})")
        _read_checkpoint(model, checkpoints / weights)
    elif weights == "best" and best.is_file():
        try:
            model.load_weights(best)
        except Exception as error:  # noqa: BLE001 - h5py and Keras raise many types for a damaged file
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise NmtError(f"{best}: damaged weights file ({reason}); use --weights latest, or restore "
                           "the file from a copy of the run") from None
    else:
        prefixes = checkpoint_prefixes(checkpoints)
        if not prefixes:
            raise NmtError(f"{run_dir}: no trained weights (neither {BEST_WEIGHTS} nor a checkpoint)")
        intact = newest_intact(checkpoints)
        if intact is None:
            raise NmtError(f"no intact checkpoint in {checkpoints}: every one is damaged, the newest "
                           f"{prefixes[0]} ({checkpoint_problem(prefixes[0])})")
        _read_checkpoint(model, intact)
        if weights == "best":
            log.warning("%s has no %s yet; using the checkpoint %s", run_dir, BEST_WEIGHTS, intact.name)

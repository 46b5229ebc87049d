"""Beam-5 decoding of the shipped en-ja model's shape: the previous beam search vs the current one.

Builds configs/en-ja.yaml's model (vocabularies of tokenizer.vocab_size, embeddings, bidirectional
LSTM encoder, LSTM decoder with Luong attention) with random weights, no training, and decodes a
batch of 32 random source sentences of ~12 tokens at beam 5 and the config's length penalty, each
search compiled as nmt translate compiles it (tf.function, autograph off, encoder included):
  - previous:   the search before TensorArrays (_reference_beam_search below, a copy of it: it
                concatenates and regathers the whole token and attention history every step);
  - full:       the current search without its early stop (decoding._beam_search, stop_early=False);
  - attention:  decoding.beam_search recording and backtracing each step's attention weights
                (with_attention=True: what every search did before issue 16 made it optional,
                and what translate_attention / --attention still run);
  - vocab-top-k: the current search with each step's choice as it was before per-row candidates
                (_WholeVocabularyBeam below: the rows that may only end rewritten over the whole
                vocabulary, then one top-k over each sentence's k x vocab rankings);
  - current:    decoding.beam_search (per-step TensorArrays, one backtrace, early stop, no attention,
                each row's k best by a blockwise top-k, then a top-k over the k x k candidates).
Two models: "untrained" as initialised, whose logits are nearly equal (std ~0.002) and never
favour EOS, so every search runs to the length limit (2 x source + 10), and "ending", the same with
its output kernel scaled up (peaked distributions, as a trained model's) and EOS's bias raised so
that greedy hypotheses end near the source length (median 12 tokens): the case where stopping
early matters. Rounds alternate the searches; the best round of each counts (the least
disturbed by the machine's other load). Then a beam step's parts are timed alone.

    python bench/beam_profile.py [--quick]
    python bench/beam_profile.py --searches attention current --rounds 30 --no-parts   # attention's cost alone
    python bench/beam_profile.py --searches vocab-top-k current --rounds 20             # per-row candidates

The first search named is the baseline: "vs" is the ratio of its best time to each search's, "paired"
the median over rounds of each round's ratio (the rounds alternate, so a ratio within one round is
the least touched by the machine's drift), "same best" whether the best hypotheses and scores equal
the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nmt import decoding  # noqa: E402
from nmt.config import load_config  # noqa: E402
from nmt.constants import BOS_ID, EOS_ID, LOG_ZERO  # noqa: E402
from nmt.tasks import task_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "beam_profile.json"
BATCH, BEAM, SOURCE_TOKENS = 32, 5, 12


def _reference_beam_search(step_fn, state, context, max_lengths, beam_size, alpha=0.6, start_ids=None):
    """nmt.decoding.beam_search before this change (commit 102392a), verbatim but for names: the
    baseline. It carries ids [rows, t] and attention [rows, t, source] and regathers them by the
    parent pointers at every step."""
    k, neg = beam_size, LOG_ZERO
    batch = tf.shape(max_lengths)[0]
    state = decoding.tile_batch(state, k)
    context = decoding.tile_batch(context, k)
    flat_max = tf.repeat(max_lengths, k)
    source = tf.shape(tf.nest.flatten(context)[0])[1] if tf.nest.flatten(context) else 0
    limit = tf.reduce_max(max_lengths)
    initial_log_probs = tf.tile(tf.concat([[0.0], tf.fill([k - 1], neg)], axis=0), [batch])
    base = tf.repeat(tf.range(batch) * k, k)

    def cond(t, ids, state, finished, lengths, log_probs, seqs, attn):
        return tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(finished)))

    def body(t, ids, state, finished, lengths, log_probs, seqs, attn):
        logits, state, weights = step_fn(ids, state, context)
        step_log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        vocab = tf.shape(step_log_probs)[1]
        force_end = tf.logical_or(finished, t + 1 >= flat_max)
        step_log_probs = tf.where(force_end[:, None], decoding._eos_only(vocab)[None, :], step_log_probs)
        total = log_probs[:, None] + step_log_probs
        new_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        ranking = total / decoding.length_penalty(new_lengths, alpha)[:, None]
        _, top = tf.math.top_k(tf.reshape(ranking, [batch, k * vocab]), k=k)
        parent = base + tf.reshape(top // vocab, [-1])
        token = tf.reshape(top % vocab, [-1])
        log_probs = tf.gather_nd(total, tf.stack([parent, token], axis=1))
        was_finished = tf.gather(finished, parent)
        lengths = tf.gather(new_lengths, parent)
        token = tf.where(was_finished, tf.zeros_like(token), token)
        finished = tf.logical_or(was_finished, tf.equal(token, EOS_ID))
        state = tf.nest.map_structure(lambda s: tf.gather(s, parent), state)
        seqs = tf.concat([tf.gather(seqs, parent), token[:, None]], axis=1)
        weights = tf.gather(tf.cast(weights, tf.float32), parent)
        attn = tf.concat([tf.gather(attn, parent), weights[:, None, :]], axis=1)
        return t + 1, tf.where(finished, EOS_ID, token), state, finished, lengths, log_probs, seqs, attn

    loop_vars = (
        tf.constant(0),
        tf.fill([batch * k], BOS_ID) if start_ids is None else decoding.tile_batch(tf.cast(start_ids, tf.int32), k),
        state,
        tf.zeros([batch * k], tf.bool),
        tf.zeros([batch * k], tf.int32),
        initial_log_probs,
        tf.zeros([batch * k, 0], tf.int32),
        tf.zeros([batch * k, 0, source], tf.float32),
    )
    invariants = tf.nest.map_structure(lambda t: tf.TensorShape([None] * t.shape.rank), loop_vars)
    _, _, _, _, lengths, log_probs, seqs, attn = tf.while_loop(
        cond, body, loop_vars, shape_invariants=invariants, maximum_iterations=limit
    )
    scores = tf.reshape(log_probs / decoding.length_penalty(lengths, alpha), [batch, k])
    order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)

    def by_score(t):
        shaped = tf.reshape(t, tf.concat([[batch, k], tf.shape(t)[1:]], axis=0))
        return tf.gather(shaped, order, batch_dims=1)

    return decoding.DecodeResult(
        by_score(seqs), by_score(lengths), tf.gather(scores, order, batch_dims=1), by_score(attn)
    )


class _WholeVocabularyBeam(decoding._Beam):
    """decoding._Beam.choose before per-row candidates (commit a487c01), verbatim but for names: the
    baseline here and the reference tests/test_decoding.py checks the current choice against (the
    strategy's own loop state, ``extra``, passed through as the plain beam does)."""

    def choose(self, t, log_probs, finished, lengths, scores, extra=()):
        vocab = tf.shape(log_probs)[1]
        if self.stop_early:
            settled = decoding._settled(finished, lengths, scores, self.max_lengths, self.k, self.alpha)
            only_eos = tf.where(tf.equal(tf.range(vocab), EOS_ID)[None, :], log_probs, LOG_ZERO)
            log_probs = tf.where(settled[:, None], only_eos, log_probs)
        log_probs = decoding._forced_eos(log_probs, tf.logical_or(finished, t + 1 >= self.max_lengths))
        total = scores[:, None] + log_probs
        ranking = decoding._normalized(total, lengths + tf.cast(tf.logical_not(finished), tf.int32), self.alpha)
        _, top = tf.math.top_k(tf.reshape(ranking, [self.batch, self.k * vocab]), k=self.k)
        parent = self.base + tf.reshape(top // vocab, [-1])
        token = tf.reshape(top % vocab, [-1])
        return token, parent, tf.gather_nd(total, tf.stack([parent, token], axis=1)), extra


def _whole_vocabulary_beam_search(step_fn, state, context, max_lengths, k, alpha):
    strategy = _WholeVocabularyBeam(max_lengths, k, alpha, stop_early=True)
    searched = decoding._search_loop(step_fn, decoding.tile_batch(state, k), decoding.tile_batch(context, k),
                                     strategy, None, with_attention=False)
    return strategy.result(searched)


def searches(model: Any, alpha: float, ratio: float, offset: int) -> dict[str, Callable]:
    """Each search compiled as Translator._decode_function compiles it."""
    def compiled(search: Callable) -> Callable:
        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32),
                                                       tf.TensorSpec([None], tf.int32)])
        def run(source: tf.Tensor, lengths: tf.Tensor) -> decoding.DecodeResult:
            context, state = model.encode(source, lengths)
            return search(model.step, state, context, decoding.max_output_lengths(lengths, ratio, offset))
        return run

    return {
        "previous": compiled(lambda *a: _reference_beam_search(*a, BEAM, alpha)),
        "full": compiled(lambda *a: decoding._beam_search(*a, BEAM, alpha, None, stop_early=False)),
        "attention": compiled(lambda *a: decoding.beam_search(*a, BEAM, alpha, with_attention=True)),
        "vocab-top-k": compiled(lambda *a: _whole_vocabulary_beam_search(*a, BEAM, alpha)),
        "current": compiled(lambda *a: decoding.beam_search(*a, BEAM, alpha)),
    }


def time_searches(functions: dict[str, Callable], source: tf.Tensor, lengths: tf.Tensor, rounds: int) -> dict:
    results = {name: fn(source, lengths) for name, fn in functions.items()}  # traces, warms up
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():  # alternating: the machine's load hits all alike
            start = time.perf_counter()
            fn(source, lengths).ids.numpy()
            times[name].append(time.perf_counter() - start)
    baseline = next(iter(functions))  # the first search named: what the others are compared with
    reference = results[baseline]
    rows = {}
    for name, result in results.items():
        width = result.ids.shape[2]
        same = (np.array_equal(result.ids.numpy()[:, 0], reference.ids.numpy()[:, 0, :width])
                and not reference.ids.numpy()[:, 0, width:].any()
                and np.array_equal(result.scores.numpy()[:, 0], reference.scores.numpy()[:, 0]))
        rows[name] = {"ms_best": 1000 * min(times[name]), "ms_median": 1000 * float(np.median(times[name])),
                      "steps": int(width), "best_length_mean": float(result.lengths.numpy()[:, 0].mean()),
                      "baseline": baseline, "same_best_as_baseline": bool(same),
                      "speedup": min(times[baseline]) / min(times[name]),
                      "paired_speedup": float(np.median(np.array(times[baseline]) / np.array(times[name])))}
    return rows


def timed_alone(fn: Callable, args: tuple, reps: int) -> float:
    """ms per call of ``fn(*args)``, run ``reps`` times inside one compiled loop (no call overhead);
    the counter is added to the first input so that no run can be hoisted out of the loop."""
    @tf.function(autograph=False)
    def loop(*args):
        def body(i, acc):
            first = args[0] + tf.cast(i, args[0].dtype) * tf.zeros([], args[0].dtype)
            out = tf.nest.flatten(fn(first, *args[1:]))[0]
            return i + 1, acc + tf.cast(tf.reduce_sum(out[:1]), tf.float32)
        return tf.while_loop(lambda i, acc: i < reps, body, (tf.constant(0), tf.constant(0.0)))[1]

    loop(*args)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        loop(*args).numpy()
        best = min(best, time.perf_counter() - start)
    return 1000 * best / reps


def step_parts(model: Any, source: tf.Tensor, lengths: tf.Tensor, vocab: int, reps: int) -> dict[str, float]:
    """ms of a beam step's parts at batch x beam rows, each alone."""
    rows = BATCH * BEAM
    context, state = model.encode(source, lengths)
    context, state = decoding.tile_batch(context, BEAM), decoding.tile_batch(state, BEAM)
    ids = tf.fill([rows], 7)
    decoder = model.decoder
    units = decoder.output_projection.kernel.shape[0]
    attentional = tf.random.normal([rows, units])
    logits = tf.random.normal([rows, vocab])
    parent = tf.random.shuffle(tf.range(rows))
    t = 2 * SOURCE_TOKENS  # the old history gathers, halfway to the length limit
    history = (tf.zeros([rows, t], tf.int32), tf.zeros([rows, t, int(source.shape[1])], tf.float32))
    # A mid-search step: a quarter of the rows finished, scores of a dozen steps.
    beam_args = (tf.fill([BATCH], 3 * SOURCE_TOKENS), BEAM, 0.6, True)
    choice_inputs = (tf.nn.log_softmax(logits), tf.range(rows) % 4 == 0, tf.fill([rows], 12),
                     -tf.random.uniform([rows], 10.0, 30.0))
    return {
        "whole step_fn (embedding, LSTM, attention, projection)": timed_alone(
            lambda i, s: model.step(tf.cast(i, tf.int32), s, context), (tf.cast(ids, tf.float32), state), reps),
        f"output projection [{rows}, {units}] x [{units}, {vocab}]": timed_alone(
            lambda x: decoder.output_projection(x), (attentional,), reps),
        f"log_softmax [{rows}, {vocab}]": timed_alone(tf.nn.log_softmax, (logits,), reps),
        f"top_k 5 over [{BATCH}, {BEAM * vocab}] (before per-row candidates)": timed_alone(
            lambda x: tf.math.top_k(tf.reshape(x, [BATCH, BEAM * vocab]), k=BEAM).indices, (logits,), reps),
        f"top_k 5 over [{rows}, {vocab}]": timed_alone(lambda x: tf.math.top_k(x, k=BEAM).indices, (logits,), reps),
        f"blockwise top-k 5 over [{rows}, {vocab}] (decoding._row_top_k)": timed_alone(
            lambda x: decoding._row_top_k(x, BEAM)[1], (logits,), reps),
        "whole choice, before (vocab-top-k)": timed_alone(
            lambda lp, *rest: _WholeVocabularyBeam(*beam_args).choose(tf.constant(3), lp, *rest)[0],
            choice_inputs, reps),
        "whole choice, per-row candidates (current)": timed_alone(
            lambda lp, *rest: decoding._Beam(*beam_args).choose(tf.constant(3), lp, *rest, ())[0],
            choice_inputs, reps),
        "state gathers (LSTM h, c, attentional)": timed_alone(
            lambda p, s: tf.nest.map_structure(lambda x: tf.gather(x, tf.cast(p, tf.int32)), s),
            (tf.cast(parent, tf.float32), state), reps),
        f"previous: history gather + concat at t={t}": timed_alone(
            lambda p, h: tf.nest.map_structure(
                lambda x: tf.concat([tf.gather(x, tf.cast(p, tf.int32)), x[:, :1]], axis=1), h),
            (tf.cast(parent, tf.float32), history), reps),
    }


def print_table(title: str, rows: dict) -> None:
    baseline = next(iter(rows.values()))["baseline"]
    print(f"\n{title}")
    print(f"{'search':<12} {'ms/batch best':>14} {'median':>8} {'steps':>6} {'vs ' + baseline:>16} "
          f"{'paired':>7} {'best len':>9}  same best")
    for name, row in rows.items():
        print(f"{name:<12} {row['ms_best']:>14.1f} {row['ms_median']:>8.1f} {row['steps']:>6} "
              f"{row['speedup']:>15.2f}x {row['paired_speedup']:>6.2f}x {row['best_length_mean']:>9.1f}  "
              f"{row['same_best_as_baseline']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds and short part timings (about a minute)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--searches", nargs="+", choices=["previous", "full", "attention", "vocab-top-k", "current"],
                        help="the searches to time (default: all)")
    parser.add_argument("--no-parts", action="store_true", help="skip the timing of a beam step's parts")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--output-scale", type=float, default=1000.0, help="output kernel factor of the 'ending' model")
    parser.add_argument("--eos-bias", type=float, default=5.0, help="added to EOS's output bias for the 'ending' model")
    args = parser.parse_args()
    rounds, reps = (3, 10) if args.quick else (args.rounds, 50)

    config = load_config(ROOT / "configs" / "en-ja.yaml")
    vocab = config.tokenizer.vocab_size
    keras_seed = 1234
    tf.keras.utils.set_random_seed(keras_seed)
    model = task_for(config).build_model(vocab, vocab)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.normal(SOURCE_TOKENS, 3, BATCH).round().astype(np.int32), 4, 20)
    source = np.zeros([BATCH, lengths.max()], np.int32)
    for row, n in enumerate(lengths):
        source[row, :n] = rng.integers(4, vocab, n)
    source, lengths = tf.constant(source), tf.constant(lengths)
    cfg = config.decode
    functions = searches(model, cfg.length_penalty, cfg.max_length_ratio, cfg.max_length_offset)
    functions = {name: fn for name, fn in functions.items() if not args.searches or name in args.searches}

    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "tensorflow": tf.__version__, "cpus": os.cpu_count()},
        "setting": {"config": "configs/en-ja.yaml", "vocab": vocab, "batch": BATCH, "beam": BEAM,
                    "source_tokens_mean": float(lengths.numpy().mean()), "alpha": cfg.length_penalty,
                    "max_length": f"{cfg.max_length_ratio} x source + {cfg.max_length_offset}",
                    "rounds": rounds, "output_scale": args.output_scale, "eos_bias": args.eos_bias},
    }
    report["untrained"] = time_searches(functions, source, lengths, rounds)
    print_table("untrained model (every search runs to the length limit)", report["untrained"])
    projection = model.decoder.output_projection
    projection.kernel.assign(projection.kernel * args.output_scale)
    projection.bias.assign(projection.bias + tf.one_hot(EOS_ID, vocab) * args.eos_bias)
    report["ending"] = time_searches(functions, source, lengths, rounds)
    title = f"'ending' model (output x{args.output_scale:g}, EOS bias +{args.eos_bias:g}: hypotheses end)"
    print_table(title, report["ending"])

    if not args.no_parts:
        report["step_parts_ms"] = step_parts(model, source, lengths, vocab, reps)
        print(f"\none beam step's parts alone, {BATCH} x {BEAM} rows (ms):")
        for part, ms in report["step_parts_ms"].items():
            print(f"  {part:<58} {ms:7.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

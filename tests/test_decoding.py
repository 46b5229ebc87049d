"""Decoding strategies on a hand-made model whose best sequence is known, and on a real model."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from nmt import decoding
from nmt.constants import BOS_ID, EOS_ID, LOG_ZERO
from nmt.models import Seq2Seq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from beam_profile import _WholeVocabularyBeam  # noqa: E402  (the beam step before per-row candidates)

V = 10
A, B, C = 4, 5, 6


def markov_step_fn(table: np.ndarray):
    """A 'model' whose next-token distribution depends only on the previous token."""
    log_table = tf.constant(np.log(np.maximum(table, 1e-12)), tf.float32)

    def step(ids, state, context):
        logits = tf.gather(log_table, ids)
        return logits, state, tf.ones([tf.shape(ids)[0], 1])

    return step


def trap_table() -> np.ndarray:
    """Greedy takes A (0.6) then gets stuck in a flat distribution; B (0.4) then EOS (0.99) is best."""
    table = np.full((V, V), 1e-6)
    table[BOS_ID, A], table[BOS_ID, B] = 0.6, 0.4
    table[A, :] = 0.1  # flat: every continuation after A is unlikely
    table[B, EOS_ID] = 0.99
    table[C, EOS_ID] = 1.0
    table[EOS_ID, EOS_ID] = 1.0
    return table / table.sum(axis=1, keepdims=True)


def run(strategy, beam=1, alpha=0.0, max_len=5):
    step = markov_step_fn(trap_table())
    state = {"dummy": tf.zeros([1, 1])}
    context = {"memory": tf.zeros([1, 1, 1])}
    lengths = tf.constant([max_len])
    if strategy == "greedy":
        return decoding.greedy_search(step, state, context, lengths)
    return decoding.beam_search(step, state, context, lengths, beam, alpha)


def test_beam_search_escapes_the_greedy_trap() -> None:
    greedy = run("greedy")
    beam = run("beam", beam=2)
    assert greedy.ids.numpy()[0, 0, 0] == A
    assert list(beam.ids.numpy()[0, 0, :2]) == [B, EOS_ID]
    assert beam.lengths.numpy()[0, 0] == 2
    table = trap_table()
    np.testing.assert_allclose(beam.scores.numpy()[0, 0], np.log(table[BOS_ID, B] * table[B, EOS_ID]), atol=1e-4)
    assert beam.scores.numpy()[0, 0] > greedy.scores.numpy()[0, 0]


def test_nbest_is_sorted_and_distinct() -> None:
    beam = run("beam", beam=3)
    scores = beam.scores.numpy()[0]
    assert np.all(np.diff(scores) <= 1e-6)
    hypotheses = {tuple(row[: n]) for row, n in zip(beam.ids.numpy()[0], beam.lengths.numpy()[0])}
    assert len(hypotheses) == 3


def test_length_limit_forces_eos() -> None:
    greedy = run("greedy", max_len=3)
    ids, length = greedy.ids.numpy()[0, 0], greedy.lengths.numpy()[0, 0]
    assert length == 3 and ids[length - 1] == EOS_ID


def real_model() -> tuple[Seq2Seq, dict, dict, tf.Tensor]:
    tf.random.set_seed(3)
    model = Seq2Seq(20, 25, 8, encoder={"cell": "gru", "units": 8}, decoder={"cell": "lstm", "units": 8})
    model.build_weights()
    source = tf.constant([[4, 5, 6, 7, 8], [9, 10, 0, 0, 0], [11, 0, 0, 0, 0]])
    lengths = tf.constant([5, 2, 1])
    context, state = model.encode(source, lengths)
    return model, context, state, decoding.max_output_lengths(lengths, 2.0, 3)


def test_beam_of_one_equals_greedy_on_a_real_model() -> None:
    model, context, state, max_lengths = real_model()
    greedy = decoding.greedy_search(model.step, state, context, max_lengths)
    beam = decoding.beam_search(model.step, state, context, max_lengths, beam_size=1, alpha=0.0)
    np.testing.assert_array_equal(beam.ids.numpy(), greedy.ids.numpy())
    np.testing.assert_array_equal(beam.lengths.numpy(), greedy.lengths.numpy())
    np.testing.assert_allclose(beam.scores.numpy(), greedy.scores.numpy(), atol=1e-4)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_attention_is_a_distribution_over_the_real_source_for_every_output_step(beam_size: int) -> None:
    model, context, state, max_lengths = real_model()
    if beam_size == 1:
        result = decoding.greedy_search(model.step, state, context, max_lengths, with_attention=True)
    else:
        result = decoding.beam_search(model.step, state, context, max_lengths, beam_size=beam_size,
                                      with_attention=True)
    attention, lengths = result.attention.numpy(), result.lengths.numpy()
    assert attention.shape == (*result.ids.shape, 5)  # [batch, hypotheses, output steps, source]
    for b, source_length in enumerate([5, 2, 1]):
        for n in range(beam_size):
            steps = attention[b, n, : lengths[b, n]]
            np.testing.assert_allclose(steps.sum(-1), 1.0, atol=1e-5)
            assert np.all(steps >= 0) and np.all(steps[:, source_length:] == 0)  # padding gets nothing


def test_outputs_respect_limits_and_attention_shapes() -> None:
    model, context, state, max_lengths = real_model()
    result = decoding.beam_search(model.step, state, context, max_lengths, beam_size=4, alpha=0.6,
                                  with_attention=True)
    assert result.ids.shape[:2] == (3, 4)
    assert np.all(result.lengths.numpy() <= max_lengths.numpy()[:, None])
    attention = result.attention.numpy()
    assert attention.shape[:3] == result.ids.shape and attention.shape[3] == 5
    for b, n in [(0, 0), (1, 2), (2, 3)]:
        steps = result.lengths.numpy()[b, n]
        np.testing.assert_allclose(attention[b, n, :steps].sum(-1), np.ones(steps), atol=1e-5)
    # Every hypothesis ends with EOS, then padding.
    for b in range(3):
        for n in range(4):
            row, length = result.ids.numpy()[b, n], result.lengths.numpy()[b, n]
            assert row[length - 1] == EOS_ID and not np.any(row[length:])


@pytest.mark.parametrize("input_feeding", [False, True])
def test_a_mixed_precision_model_decodes(input_feeding: bool) -> None:
    """encode() and step() are called directly, outside Keras' autocasting __call__: a model built
    under mixed_float16 (a training's dev evaluation) must still decode, as it does in float32."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = Seq2Seq(20, 25, 8, encoder={"cell": "gru", "units": 8},
                        decoder={"cell": "lstm", "units": 8, "input_feeding": input_feeding})
        model.build_weights()
        context, state = model.encode(tf.constant([[4, 5, 6], [7, 0, 0]]), tf.constant([3, 1]))
        result = decoding.beam_search(model.step, state, context, tf.constant([6, 4]), 3, with_attention=True)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.compute_dtype == "float16" and result.ids.shape[:2] == (2, 3)
    assert np.all(np.isfinite(result.scores.numpy())) and result.attention.dtype == tf.float32


def test_decoding_runs_inside_tf_function() -> None:
    model, context, state, max_lengths = real_model()

    @tf.function
    def run_beam(context, state, max_lengths):
        return decoding.beam_search(model.step, state, context, max_lengths, beam_size=3)

    eager = decoding.beam_search(model.step, state, context, max_lengths, beam_size=3)
    graph = run_beam(context, state, max_lengths)
    np.testing.assert_array_equal(graph.ids.numpy(), eager.ids.numpy())
    ops = {op.type for op in run_beam.get_concrete_function(context, state, max_lengths).graph.get_operations()}
    assert "EagerPyFunc" not in ops and "PyFunc" not in ops


def test_beam_attention_follows_each_hypothesis() -> None:
    """Attention is the one-hot of the token fed in, so hypothesis h's attention at step t must
    point at its own token t-1 (BOS at t=0), however the beams were reordered."""
    log_table = tf.constant(np.log(trap_table()), tf.float32)

    def step(ids, state, context):
        return tf.gather(log_table, ids), state, tf.one_hot(ids, V)

    result = decoding.beam_search(step, {"dummy": tf.zeros([1, 1])}, {"memory": tf.zeros([1, V, 1])},
                                  tf.constant([6]), beam_size=4, alpha=0.6, with_attention=True)
    ids, lengths, attention = result.ids.numpy()[0], result.lengths.numpy()[0], result.attention.numpy()[0]
    for n in range(4):
        fed = [BOS_ID] + list(ids[n, : lengths[n] - 1])
        assert list(attention[n, : lengths[n]].argmax(-1)) == fed


def test_beam_search_forces_eos_at_the_length_limit() -> None:
    beam = run("beam", beam=3, max_len=3)
    ids, lengths = beam.ids.numpy()[0], beam.lengths.numpy()[0]
    assert np.all(lengths <= 3)
    for n in range(3):
        assert ids[n, lengths[n] - 1] == EOS_ID


def test_greedy_and_beam_scores_use_the_same_length_penalty() -> None:
    model, context, state, max_lengths = real_model()
    greedy = decoding.greedy_search(model.step, state, context, max_lengths, alpha=0.6)
    beam = decoding.beam_search(model.step, state, context, max_lengths, beam_size=1, alpha=0.6)
    np.testing.assert_array_equal(beam.ids.numpy(), greedy.ids.numpy())
    np.testing.assert_allclose(beam.scores.numpy(), greedy.scores.numpy(), atol=1e-4)


# --- early stopping and the per-step history ------------------------------------------------------

SOURCE_LENGTHS = [7, 3, 1, 5]


def random_step_fn(seed: int, vocab: int = 12, units: int = 6):
    """A random recurrent 'model' with attention over a padded source; EOS's logit is raised so
    that hypotheses end before the limit, as a trained model's do, and early stopping has work."""
    rng = np.random.default_rng(seed)
    embedding = tf.constant(rng.normal(size=(vocab, units)), tf.float32)
    recurrent = tf.constant(rng.normal(size=(units, units)) * 0.7, tf.float32)
    output = tf.constant(rng.normal(size=(units, vocab)) * 1.5, tf.float32)
    bias = tf.constant(np.eye(vocab)[EOS_ID] * 1.5, tf.float32)

    def step(ids, state, context):
        h = tf.tanh(tf.gather(embedding, ids) + state["h"] @ recurrent)
        energies = tf.einsum("bu,bsu->bs", h, context["memory"])
        weights = tf.nn.softmax(tf.where(context["mask"], energies, -np.inf))
        attended = tf.einsum("bs,bsu->bu", weights, context["memory"])
        return (h + attended) @ output + bias, {"h": h}, weights

    memory = tf.constant(rng.normal(size=(len(SOURCE_LENGTHS), max(SOURCE_LENGTHS), units)), tf.float32)
    mask = tf.sequence_mask(SOURCE_LENGTHS, max(SOURCE_LENGTHS))
    state = {"h": tf.constant(rng.normal(size=(len(SOURCE_LENGTHS), units)), tf.float32)}
    return step, state, {"memory": memory, "mask": mask}


def random_seq2seq(seed: int):
    """A tiny untrained model of the project, its output layer scaled up and EOS raised: an
    untrained model's next-token distributions are nearly flat and the same at every step, a
    trained one's are peaked, and end sentences."""
    keras.utils.set_random_seed(seed)  # Keras 3 initializers draw from their own seed
    model = Seq2Seq(20, 25, 8, encoder={"cell": "lstm", "units": 8, "bidirectional": True},
                    decoder={"cell": "lstm", "units": 8, "attention": "luong", "attention_score": "general"})
    model.build_weights()
    projection = model.decoder.output_projection
    projection.kernel.assign(projection.kernel * 60.0)
    projection.bias.assign(projection.bias + np.eye(25, dtype="float32")[EOS_ID])
    source = tf.constant([[4 + i for i in range(n)] + [0] * (max(SOURCE_LENGTHS) - n) for n in SOURCE_LENGTHS])
    context, state = model.encode(source, tf.constant(SOURCE_LENGTHS))
    return model.step, state, context


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
@pytest.mark.parametrize("make", [random_step_fn, random_seq2seq])
def test_early_stopping_never_changes_the_best_hypothesis(make, alpha: float) -> None:
    max_lengths = decoding.max_output_lengths(tf.constant(SOURCE_LENGTHS), 2.0, 3)
    steps = {"early": 0, "full": 0}
    for seed in range(3):
        step, state, context = make(seed)
        early = decoding.beam_search(step, state, context, max_lengths, beam_size=4, alpha=alpha, with_attention=True)
        full = decoding._beam_search(step, state, context, max_lengths, 4, alpha, None, stop_early=False,
                                     with_attention=True)
        steps["early"] += early.ids.shape[2]
        steps["full"] += full.ids.shape[2]
        width = early.ids.shape[2]
        np.testing.assert_array_equal(early.ids.numpy()[:, 0], full.ids.numpy()[:, 0, :width])
        assert not full.ids.numpy()[:, 0, width:].any()
        np.testing.assert_array_equal(early.lengths.numpy()[:, 0], full.lengths.numpy()[:, 0])
        np.testing.assert_array_equal(early.scores.numpy()[:, 0], full.scores.numpy()[:, 0])
        np.testing.assert_array_equal(early.attention.numpy()[:, 0], full.attention.numpy()[:, 0, :width])
        # The hypotheses cut short still end with EOS, within the limit.
        ids, lengths = early.ids.numpy(), early.lengths.numpy()
        assert np.all(lengths <= max_lengths.numpy()[:, None])
        for b, n in np.ndindex(*lengths.shape):
            assert ids[b, n, lengths[b, n] - 1] == EOS_ID and not ids[b, n, lengths[b, n]:].any()
    if make is random_step_fn or alpha < 1.0:  # a large alpha favours long hypotheses: the untrained
        assert steps["early"] < steps["full"], steps  # models' beams rarely settle before the limit


def rescore(step, state, context, ids: np.ndarray, length: int, row: int, limit: int):
    """Feeds one hypothesis' tokens back through ``step``: its log-probability and attention.
    The EOS forced at the length limit costs nothing."""
    state = tf.nest.map_structure(lambda t: t[row : row + 1], state)
    context = tf.nest.map_structure(lambda t: t[row : row + 1], context)
    fed, total, weights = BOS_ID, 0.0, []
    for t, token in enumerate(ids[:length]):
        logits, state, attention = step(tf.constant([fed]), state, context)
        total += 0.0 if t + 1 == limit else float(tf.nn.log_softmax(logits)[0, token])
        weights.append(attention.numpy()[0])
        fed = token
    return total, np.array(weights)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_every_hypothesis_is_what_the_model_scores_and_attends(alpha: float) -> None:
    """The backtrace through the parent pointers returns, for every hypothesis, tokens whose model
    log-probability is its score and the attention the model gave at each of its steps."""
    step, state, context = random_step_fn(7)
    max_lengths = decoding.max_output_lengths(tf.constant(SOURCE_LENGTHS), 2.0, 3)
    result = decoding.beam_search(step, state, context, max_lengths, beam_size=4, alpha=alpha, with_attention=True)
    ids, lengths, scores = result.ids.numpy(), result.lengths.numpy(), result.scores.numpy()
    for b, n in np.ndindex(*lengths.shape):
        log_prob, weights = rescore(step, state, context, ids[b, n], lengths[b, n], b, max_lengths.numpy()[b])
        penalty = decoding.length_penalty(tf.constant(lengths[b, n]), alpha).numpy()
        np.testing.assert_allclose(scores[b, n], log_prob / penalty, rtol=1e-5)
        np.testing.assert_allclose(result.attention.numpy()[b, n, : lengths[b, n]], weights, atol=1e-6)


def carried_ranks(function, *args) -> list[tuple[tf.DType, int]]:
    """dtype and rank of the tensors that the graph's loops carry from step to step: those whose
    every dimension may change (tensors the loops only read keep their static shapes here)."""
    graph = function.get_concrete_function(*args).graph
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    return [(t.dtype, t.shape.rank) for op in loops for t in op.outputs
            if t.shape.rank and all(d is None for d in t.shape.as_list())]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_search_loop_carries_no_growing_history(beam_size: int) -> None:
    """Tokens and attention are written once per step (TensorArrays), not carried as
    [rows, time] and [rows, time, source] tensors copied and regathered at every step."""
    step, state, context = random_step_fn(0)
    max_lengths = decoding.max_output_lengths(tf.constant(SOURCE_LENGTHS), 2.0, 3)
    search = tf.function(lambda: decoding.decode(step, state, context, max_lengths, beam_size, with_attention=True),
                         autograph=False)
    ranks = carried_ranks(search)
    assert (tf.float32, 2) in ranks  # the state "h" [rows, units]
    assert all(rank <= 1 for dtype, rank in ranks if dtype in (tf.int32, tf.bool)), ranks
    assert all(rank <= 2 for dtype, rank in ranks if dtype == tf.float32), ranks
    assert search().attention.shape.rank == 4


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_limit_of_zero_runs_no_step(beam_size: int) -> None:
    step, state, context = random_step_fn(0)
    search = tf.function(lambda m: decoding.decode(step, state, context, m, beam_size, with_attention=True),
                         autograph=False, input_signature=[tf.TensorSpec([None], tf.int32)])
    result = search(tf.zeros([4], tf.int32))
    assert result.ids.shape == (4, beam_size, 0) and result.attention.shape == (4, beam_size, 0, 7)
    assert not result.lengths.numpy().any()


def recorded_steps(function) -> int:
    """How many per-step values the graph's loops write (TensorArray writes, TensorList items in
    TF2's control flow), counted in every function of the graph: the loop bodies are functions."""
    graph = function.get_concrete_function().graph
    nodes = [*graph.as_graph_def().node, *(n for f in graph.as_graph_def().library.function for n in f.node_def)]
    return sum(node.op in ("TensorListSetItem", "TensorArrayWriteV3") for node in nodes)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_attention_is_recorded_only_when_asked(beam_size: int) -> None:
    """Without ``with_attention`` the search writes no attention per step and returns None; the
    hypotheses are the same either way."""
    step, state, context = random_step_fn(0)
    max_lengths = decoding.max_output_lengths(tf.constant(SOURCE_LENGTHS), 2.0, 3)
    searches = {asked: tf.function(lambda asked=asked: decoding.decode(step, state, context, max_lengths, beam_size,
                                                                        with_attention=asked), autograph=False)
                for asked in (False, True)}
    plain, with_attention = searches[False](), searches[True]()
    assert plain.attention is None and with_attention.attention.shape.rank == 4
    for name in ("ids", "lengths", "scores"):
        np.testing.assert_array_equal(getattr(plain, name).numpy(), getattr(with_attention, name).numpy())
    # A history is written twice in the graph (its placeholder step, then in the loop): one more
    # history with attention, none without.
    assert recorded_steps(searches[True]) == recorded_steps(searches[False]) + 2


@pytest.mark.parametrize("width", [1280, 2000, 8000, 8001])
@pytest.mark.parametrize("k", [1, 5])
def test_row_top_k_is_top_k_with_its_tie_order(width: int, k: int) -> None:
    """The blockwise top-k gives tf.math.top_k's values and indices, ties to the lower index,
    also with the best values in the last, padded block and on rows of equal values."""
    rng = np.random.default_rng(width + k)
    values = rng.normal(size=(9, width)).astype(np.float32)
    values[1] = np.round(values[1])  # many ties
    values[2] = 0.0  # one value throughout
    values[3, -3:] = 9.0  # the best in the last block
    values[4, ::97] = 5.0  # ties in many blocks
    values[5] = -np.inf
    got, want = decoding._row_top_k(tf.constant(values), k), tf.math.top_k(values, k=k)
    np.testing.assert_array_equal(got[0].numpy(), want.values.numpy())
    np.testing.assert_array_equal(got[1].numpy(), want.indices.numpy())
    empty = decoding._row_top_k(tf.zeros([0, width]), k)
    assert empty[0].shape == (0, k) and empty[1].shape == (0, k)


@pytest.mark.parametrize("vocab", [4, 10, 2000, 8001])
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_a_beam_step_chooses_what_the_whole_vocabulary_ranking_chooses(vocab: int, alpha: float) -> None:
    """Per-row candidates pick the same tokens, parents and scores as one top-k over k * vocab:
    rows finished, at the limit, settled and dead (the first step's LOG_ZERO), near-uniform
    distributions whose sums tie after rounding, and exact ties."""
    k, batch, settled_rows = 5, 8, 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        logits = rng.normal(size=(batch * k, vocab)) * rng.choice([1e-3, 1.0, 8.0], size=(batch * k, 1))
        logits[::7] = np.round(logits[::7])
        log_probs = tf.nn.log_softmax(tf.constant(logits, tf.float32))
        scores = -rng.uniform(0, 40, batch * k).astype(np.float32)
        scores[rng.random(batch * k) < 0.2] = LOG_ZERO
        finished = tf.constant(rng.random(batch * k) < 0.4)
        lengths = tf.constant(rng.integers(1, 9, batch * k), tf.int32)
        max_lengths = tf.constant(rng.integers(2, 12, batch), tf.int32)
        beam = decoding._Beam(max_lengths, k, alpha, stop_early=True)
        t = tf.constant(int(rng.integers(0, 10)))
        settled_rows += int(tf.reduce_sum(tf.cast(decoding._settled(
            finished, lengths, tf.constant(scores), beam.max_lengths, k, alpha), tf.int32)))
        got = beam.choose(t, log_probs, finished, lengths, tf.constant(scores), ())
        # The reference: the step before per-row candidates, as bench/beam_profile.py keeps it.
        want = _WholeVocabularyBeam(max_lengths, k, alpha, stop_early=True).choose(
            t, log_probs, finished, lengths, tf.constant(scores), ())
        for name, g, w in zip(("token", "parent", "score"), got[:3], want[:3]):
            np.testing.assert_array_equal(g.numpy(), w.numpy(), err_msg=f"{name}, seed {seed}")
    assert settled_rows > 0  # the settled case was exercised

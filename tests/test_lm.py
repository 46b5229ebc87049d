"""Language models: learning, truncated BPTT, next whole words, sampling, perplexity, the CLI verbs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.cli import main
from nmt.config import config_from_dict, load_config
from nmt.constants import EOS_ID
from nmt.errors import NmtError
from nmt.language_model import LanguageModelPredictor
from nmt.models import LanguageModel
from nmt.next_word import next_word_search
from nmt.perplexity import Perplexity, evaluate_perplexity
from nmt.pipeline import EncodedCorpus, make_stream_dataset, token_stream
from nmt.samplers import Sampler
from nmt.tokenizer import Tokenizer
from nmt.training import Trainer

from conftest import CYCLE, cycle_text, lm_config

ROOT = Path(__file__).resolve().parent.parent


# --- learning ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_lm_learns_a_deterministic_sequence(cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    assert isinstance(lm, LanguageModelPredictor) and lm.running_text
    stream = token_stream(EncodedCorpus(np.zeros(0, np.int32), np.zeros(20, np.int32),
                                        *_flat(lm.tokenizer.encode([" ".join(CYCLE)] * 20))))
    logits, _ = lm.model.forward(tf.constant(stream[None, :-1]), lm.model.initial_state(1))
    predicted = tf.argmax(logits[0], axis=-1).numpy()
    accuracy = float(np.mean(predicted[8:] == stream[1:][8:]))  # after the first line, all is determined
    assert accuracy >= 0.99
    # Greedy generation continues the cycle across line breaks (EOS = newline in running text).
    text = lm.generate("north east", max_tokens=12, temperature=0.0)
    assert text.split("\n")[0] == " ".join(CYCLE)
    assert text.split("\n")[1].startswith("north east south")
    assert lm.next_words("north east south", k=1)[0][0] == "west"
    # A sentence model would stop at EOS; running text writes exactly max_tokens tokens.
    # 6 words, the line break (EOS) and 1 more word: 8 tokens.
    assert lm.generate("north east", max_tokens=8, temperature=0.0) == " ".join(CYCLE) + "\nnorth"
    assert evaluate_perplexity(lm, [" ".join(CYCLE)] * 10).word_perplexity < 1.2


def _flat(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([i for x in ids for i in x], np.int32), np.array([len(x) for x in ids], np.int32)


@pytest.mark.slow
def test_sentence_mode_lm_trains_and_stops_at_eos(tmp_path: Path) -> None:
    config = load_config(lm_config(tmp_path, "sentences", cycle_text(200), {"train.bptt_steps": None,
                                                                             "train.batch_size": 16}))
    Trainer(config).train()
    lm = nmt.load(tmp_path / "sentences")
    assert not lm.running_text
    # A sentence model starts at BOS and ends at EOS: the whole line, then nothing more.
    assert lm.generate("", max_tokens=30, temperature=0.0) == " ".join(CYCLE)
    assert lm.generate("", max_tokens=3, temperature=0.0) == "north east south"  # EOS is not counted


# --- truncated backpropagation through time ----------------------------------------------------


def test_stream_windows_continue_each_row_and_cover_every_token_once() -> None:
    corpus = EncodedCorpus(np.zeros(0, np.int32), np.zeros(3, np.int32),
                           np.arange(10, 21, dtype=np.int32), np.array([4, 0, 7], np.int32))
    stream = token_stream(corpus)
    assert stream.tolist() == [EOS_ID, 10, 11, 12, 13, EOS_ID, EOS_ID, 14, 15, 16, 17, 18, 19, 20, EOS_ID]
    batches = list(make_stream_dataset(stream, streams=3, steps=2, repeat=False))
    assert [bool(b["first"]) for b in batches] == [True, False, False]
    rows_in = np.concatenate([b["target_in"].numpy() for b in batches], axis=1)
    rows_out = np.concatenate([b["target_out"].numpy() for b in batches], axis=1)
    # Row r is a contiguous part of the stream; read row after row, every prediction appears once.
    targets = [t for row in rows_out for t in row if t != 0]
    assert targets == stream[1:].tolist()
    for row_in, row_out in zip(rows_in, rows_out):
        n = int(np.sum(row_out != 0))
        assert row_in[1:n].tolist() == row_out[: n - 1].tolist()  # the input is the previous target


def test_stateful_windows_give_the_loss_of_one_long_sequence() -> None:
    model = LanguageModel(30, embedding_dim=8, decoder={"cell": "lstm", "units": 16, "layers": 2})
    model.build_weights()
    stream = np.random.default_rng(0).integers(4, 30, size=61).astype(np.int32)
    logits, _ = model.forward(tf.constant(stream[None, :-1]), model.initial_state(1))
    whole = tf.nn.sparse_softmax_cross_entropy_with_logits(stream[None, 1:], logits).numpy().sum()
    state, total, count = model.initial_state(1), 0.0, 0
    for batch in make_stream_dataset(stream, streams=1, steps=7, repeat=False):
        logits, state = model.forward(batch["target_in"], state)
        mask = batch["target_out"].numpy() != 0
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(batch["target_out"], logits).numpy()
        total += float(nll[mask].sum())
        count += int(mask.sum())
    assert count == 60
    np.testing.assert_allclose(total, whole, rtol=1e-5)


@pytest.mark.slow
def test_interrupted_stream_run_resumes_with_the_same_carried_state(tmp_path: Path) -> None:
    text = cycle_text(50)
    straight = lm_config(tmp_path, "straight", text, {"train.steps": 20, "model.decoder.dropout": 0.2})
    Trainer(load_config(straight)).train()
    halves = lm_config(tmp_path, "halves", text, {"train.steps": 20, "model.decoder.dropout": 0.2,
                                                  "train.checkpoint_every": 10})
    Trainer(load_config(halves, ["train.steps=10"])).train()
    Trainer(load_config(halves)).train()
    a, b = nmt.load(tmp_path / "straight", weights="latest"), nmt.load(tmp_path / "halves", weights="latest")
    for x, y in zip(a.model.weights, b.model.weights):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)


def test_plain_sgd_trains_a_language_model(tmp_path: Path) -> None:
    path = lm_config(tmp_path, "sgd", cycle_text(300), {"train.optimizer": "sgd", "train.learning_rate": 1.0})
    Trainer(load_config(path)).train()
    lm = nmt.load(tmp_path / "sgd")
    assert lm.next_words("north east south", k=1)[0][0] == "west"
    assert evaluate_perplexity(lm, [" ".join(CYCLE)] * 10).word_perplexity < 1.5


@pytest.mark.parametrize("first, then", [("sgd", "adam"), ("adam", "sgd")])
def test_a_run_resumes_only_with_its_own_optimizer(tmp_path: Path, first: str, then: str) -> None:
    # Adam's moments are in the checkpoint, SGD has none: neither restores into the other.
    path = lm_config(tmp_path, "run", cycle_text(30), {"train.optimizer": first, "train.steps": 10})
    Trainer(load_config(path)).train()
    with pytest.raises(NmtError, match=rf"was trained with train.optimizer='{first}' \(now '{then}'\)"):
        Trainer(load_config(path, [f"train.optimizer={then}", "train.steps=20"])).train()


# --- next words ---------------------------------------------------------------------------------

PIECES = ["<pad>", "<spm-unk>", "<s>", "</s>", "▁pi", "zza", "▁sushi", "▁pizza", ".", "▁", "ピザ", "▁(x"]


def table_step(table: np.ndarray):
    """A step function whose next-token distribution depends only on the previous token."""
    with np.errstate(divide="ignore"):
        log_table = tf.constant(np.log(table), tf.float32)  # impossible pieces at -inf

    def step(ids, state, context):
        return tf.gather(log_table, ids), state, tf.zeros([tf.shape(ids)[0], 0])

    return step


def test_next_word_search_sums_segmentations_exactly() -> None:
    v = len(PIECES)
    table = np.zeros((v, v))
    table[:, EOS_ID] = 1.0  # by default a piece is followed by the end of the sentence
    table[2] = 0
    table[2, [4, 6, 7, 9, 11, 3]] = [0.2, 0.3, 0.25, 0.1, 0.1, 0.05]  # after BOS: first pieces
    table[4] = 0
    table[4, [5, 8]] = [0.5, 0.5]  # "▁pi" -> "zza" or "." (then "pi" ends)
    for ended in (5, 6, 7, 10):  # after a complete body: "." ends it with 0.6, "▁sushi" with 0.4
        table[ended] = 0
        table[ended, [8, 6]] = [0.6, 0.4]
    table[9] = 0
    table[9, 10] = 1.0  # "▁" then "ピザ"
    step = table_step(table)
    state = tf.zeros([2, 1])
    result = next_word_search(step, state, {}, tf.constant([2, 2]), tf.constant(PIECES), k=5, beam_size=6,
                                       max_pieces=4)
    words = [w.decode() for w in result.words.numpy()[0]]
    probs = result.probabilities.numpy()[0]
    expected = {"sushi": 0.3, "pizza": 0.25 + 0.2 * 0.5, "pi": 0.2 * 0.5, "ピザ": 0.1}
    assert {w: pytest.approx(p, abs=1e-6) for w, p in zip(words, probs) if w} == expected
    assert words[:2] == ["pizza", "sushi"] and set(words[2:4]) == {"pi", "ピザ"}  # "(x" and EOS are no words
    assert words[4] == "" and probs[4] == 0.0  # fewer than k words exist
    assert result.words.shape == (2, 5)


@pytest.mark.slow
def test_next_words_on_a_subword_model_are_whole_words(subword_run: Path) -> None:
    lm = nmt.load(subword_run)
    assert lm.config.tokenizer.model_type == "unigram"
    for prompt in ("I love eating", "I love eating   ", "", "Zyxqv blorfs"):
        words = lm.next_words(prompt, k=5)
        assert len(words) == 5
        probs = [p for _, p in words]
        assert probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1.0 + 1e-6
        for word, _ in words:
            assert word and "▁" not in word and " " not in word
            assert word[0].isalnum()
    assert lm.next_words("I love eating", k=5) == lm.next_words("I love eating  ", k=5)
    batch = lm.next_words(["I love eating", "Where is"], k=3)
    alone = lm.next_words("I love eating", k=3)
    assert len(batch) == 2 and [w for w, _ in batch[0]] == [w for w, _ in alone]
    np.testing.assert_allclose([p for _, p in batch[0]], [p for _, p in alone], rtol=1e-4)


# --- sampling --------------------------------------------------------------------------------


def test_sampler_top_k_and_top_p_stay_inside_their_sets() -> None:
    logits = tf.math.log(tf.constant([[0.05, 0.4, 0.1, 0.3, 0.15]]))
    top_k = Sampler(temperature=1.0, top_k=2)
    top_p = Sampler(temperature=1.0, top_p=0.75)  # 0.4 + 0.3 = 0.7 < 0.75: needs 0.15 too
    k_draws = {int(top_k(logits, s, 0)[0]) for s in range(200)}
    p_draws = {int(top_p(logits, s, 0)[0]) for s in range(200)}
    assert k_draws == {1, 3}
    assert p_draws == {1, 3, 4}


def test_sampler_rows_have_their_own_settings_and_seeds() -> None:
    logits = tf.math.log(tf.random.stateless_uniform([6, 40], [1, 2]))
    temperature, top_k, top_p = [0.0, 0.7, 1.0, 1.5, 1.0, 0.9], [0, 3, 0, 1, 0, 5], [1.0, 1.0, 0.5, 1.0, 1.0, 0.8]
    seeds = [3, 4, 5, 6, 7, 8]
    sampler = Sampler(tf.constant(temperature), tf.constant(top_k), tf.constant(top_p))
    batched = sampler(logits, tf.constant(seeds), 9)
    for row in range(6):
        alone = Sampler(temperature[row], top_k[row], top_p[row])(logits[row : row + 1], seeds[row], 9)
        assert int(batched[row]) == int(alone[0])  # a row's draw does not depend on its batch
    assert int(batched[0]) == int(tf.argmax(logits[0]))  # temperature 0 is greedy
    assert int(batched[3]) == int(tf.argmax(logits[3]))  # top_k 1 is greedy


def test_sampling_is_reproducible_with_a_seed(subword_run: Path) -> None:
    lm = nmt.load(subword_run)
    first = lm.generate(["I think", "The"], max_tokens=20, temperature=1.0, top_p=0.9, seed=7)
    again = lm.generate(["I think", "The"], max_tokens=20, temperature=1.0, top_p=0.9, seed=7)
    other = [lm.generate(["I think", "The"], max_tokens=20, temperature=1.0, seed=s) for s in range(8, 12)]
    assert first == again
    assert any(o != first for o in other)
    assert all(text.startswith("I think") for text in (first[0], *[o[0] for o in other]))


# --- perplexity ---------------------------------------------------------------------------------


def test_uniform_model_perplexity_equals_the_vocabulary_size() -> None:
    tokenizer = Tokenizer.train(["a cat sat", "a dog ran", "the end"] * 20, model_type="char", vocab_size=30,
                                character_coverage=1.0)
    config = config_from_dict({"task": "lm", "tokenizer": {"model_type": "char"},
                               "model": {"embedding_dim": 8, "decoder": {"units": 8, "attention": "none"}}})
    model = LanguageModel(tokenizer.vocab_size, embedding_dim=8, decoder={"units": 8})
    model.build_weights()
    for weight in model.decoder.output_projection.weights:
        weight.assign(tf.zeros_like(weight))
    lm = LanguageModelPredictor(model, tokenizer, config)
    result = evaluate_perplexity(lm, ["a cat", "the dog sat", "a"])
    assert result.token_perplexity == pytest.approx(tokenizer.vocab_size, rel=1e-5)
    # Per word and per character only renormalise the same log-likelihood.
    assert result.words == 2 + 3 + 1 + 3 and result.characters == 5 + 11 + 1 + 3
    assert math.log(result.word_perplexity) * result.words == pytest.approx(result.nll, rel=1e-6)


def test_perplexity_normalisations() -> None:
    p = Perplexity(nll=100.0, tokens=50, words=20, characters=80)
    assert p.loss == 2.0
    assert p.word_perplexity == pytest.approx(math.exp(5.0))
    assert p.nats_per_character == 1.25
    assert p.bits_per_character == pytest.approx(1.25 / math.log(2))  # 100 / 80 nats per character


# --- configuration and bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"model.decoder.attention": "luong"}, "model.decoder.attention: a language model has no encoder"),
        ({"model.encoder": {"units": 8}}, "model.encoder: a language model has no encoder"),
        ({"train.bptt_steps": 0}, "train.bptt_steps: must be positive"),
    ],
)
def test_lm_config_errors(tmp_path: Path, extra: dict, message: str) -> None:
    with pytest.raises(NmtError, match=message):
        load_config(lm_config(tmp_path, "bad", cycle_text(3), extra))


def test_bptt_steps_is_for_language_models_only() -> None:
    with pytest.raises(NmtError, match="train.bptt_steps: only for language models"):
        load_config(ROOT / "configs" / "en-ja-tiny.yaml", ["train.bptt_steps=20"])


def test_a_language_model_reads_one_tsv_column(tmp_path: Path) -> None:
    from nmt.config import DataSourceConfig
    from nmt.data import read_corpus

    path = tmp_path / "one.tsv"
    path.write_text("first line\n\nsecond\tignored\n", encoding="utf-8")
    corpus = read_corpus(DataSourceConfig(format="tsv", path=str(path)), with_target=False)
    assert corpus.sources == ["first line", "second"] and corpus.targets is None and corpus.dropped_empty == 1


def test_shipped_lm_configs_load() -> None:
    for name in ("lm-en", "char-shakespeare"):
        assert load_config(name).task == "lm"


def test_lm_prompt_and_argument_errors(cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    with pytest.raises(
        NmtError, match=r"prompt is longer than this model's 200 tokens \(decode.max_source_length\): prompt 1 has 201"
    ):
        lm.next_words(" ".join(["north"] * 201))
    with pytest.raises(NmtError, match="k must be an integer between 1 and 8"):  # 8 words in the vocabulary
        lm.next_words("north", k=0)
    with pytest.raises(NmtError, match="seed must be an integer between 0 and 2"):
        lm.generate("north", seed=2**31)
    with pytest.raises(NmtError, match="top_p must be in"):
        lm.generate("north", top_p=0.0)
    with pytest.raises(NmtError, match="nothing to evaluate"):
        evaluate_perplexity(lm, [])


def test_cli_next_word_generate_and_evaluate(cycle_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["next-word", "--run", str(cycle_run), "north east", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] == "south"
    assert float(lines[0].split("\t")[1]) >= float(lines[1].split("\t")[1])

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("north\nup down\n", encoding="utf-8")
    assert main(["next-word", "--run", str(cycle_run), "-i", str(prompts), "-k", "1"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["east", "left"]

    args = ["generate", "--run", str(cycle_run), "--prompt", "up", "--max-tokens", "6", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("up")

    held_out = tmp_path / "held-out.txt"
    held_out.write_text(cycle_text(5), encoding="utf-8")
    assert main(["evaluate", "--run", str(cycle_run), "--text", str(held_out)]) == 0
    out = capsys.readouterr().out
    assert "word perplexity" in out and "bits/char" in out and "(45 tokens, 45 words, " in out


def test_cli_lm_bad_input(cycle_run: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["next-word", "--run", str(tiny_run), "hello"]) == 2
    assert "holds a translation model, but this needs a language model" in capsys.readouterr().err
    assert main(["translate", "--run", str(cycle_run), "-i", str(tmp_path / "missing")]) == 2
    assert "holds a language model (task: lm), but this needs a translation model" in capsys.readouterr().err
    assert main(["next-word", "--run", str(cycle_run), "north", "-k", "9"]) == 2
    assert "-k must be an integer between 1 and 8, got 9" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"north east\nsouth \xff west\n")
    assert main(["next-word", "--run", str(cycle_run), "-i", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(cycle_run), "--text", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert main(["generate", "--run", str(cycle_run), "--max-tokens", "0"]) == 2
    assert "--max-tokens must be an integer between 1 and 2000, got 0" in capsys.readouterr().err

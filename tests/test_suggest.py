"""suggest: completing the word being typed (checked against brute-force enumeration on tiny word and
character models), else next words; the CIFG cell and the output projection of a keyboard's model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.config import load_config
from nmt.constants import EOS_ID, NUM_SPECIAL
from nmt.errors import NmtError
from nmt.layers.recurrent import Recurrent
from nmt.next_word import Prefix, Spellings, _piece_kinds, next_word_search, spellings_of
from nmt.pipeline import pad_batch
from nmt.text_policy import prefix_chars, prompt_ids, split_typed_word
from nmt.training import Trainer

from conftest import lm_config


def _trained(tmp_path: Path, name: str, text: str, extra: dict) -> Path:
    Trainer(load_config(lm_config(tmp_path, name, text, {
        "train.bptt_steps": None, "train.batch_size": 16, "train.steps": 120, **extra}))).train()
    return tmp_path / name


@pytest.fixture(scope="module")
def word_run(keyboard_run: Path) -> Path:
    return keyboard_run


@pytest.fixture(scope="module")
def char_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A character model over words of a and b only: few enough that a beam can hold every word."""
    rng = np.random.default_rng(0)
    lines = [" ".join("".join(rng.choice(list("ab"), rng.integers(1, 4))) for _ in range(3)) for _ in range(300)]
    return _trained(tmp_path_factory.mktemp("chars"), "chars", "\n".join(lines) + "\n",
                    {"tokenizer.model_type": "char", "tokenizer.vocab_size": 8})


def _spelled(pieces: list[str]) -> list[str]:
    """What Tokenizer.spellings gives for a hand-made vocabulary."""
    return ["" if i < NUM_SPECIAL else piece.removeprefix("▁") for i, piece in enumerate(pieces)]


def _table_step(table: np.ndarray):
    """A step function whose next-piece distribution depends only on the previous piece."""
    with np.errstate(divide="ignore"):
        log_table = tf.constant(np.log(table), tf.float32)

    def step(ids, state, context):
        return tf.gather(log_table, ids), state, tf.zeros([tf.shape(ids)[0], 0])

    return step


def _state_after(lm, context: str) -> tuple:
    ids, length = pad_batch(prompt_ids(lm.tokenizer, [context], lm.max_prompt_tokens))
    return lm.prime(tf.constant(ids), tf.constant(length))


def _log_probs(lm, state, last: int) -> tuple[np.ndarray, object]:
    logits, state, _ = lm.model.step(tf.constant([last]), state, {})
    return tf.nn.log_softmax(logits).numpy()[0], state


def _brute_force_words(lm, context: str, prefix: str, max_chars: int) -> dict[str, float]:
    """P(word | context, word starts with prefix) by enumerating every word: each vocabulary word
    (word model), or each string of the character model's letters up to ``max_chars`` (char model),
    each as P(its pieces) x P(a boundary follows), renormalised over the words that start with the prefix."""
    whole = lm.config.tokenizer.model_type == "word"
    boundary = _piece_kinds(lm.pieces, whole)[4].numpy()
    pieces = [p.decode() for p in lm.pieces.numpy()]
    state, last = _state_after(lm, context)
    first, state = _log_probs(lm, state, int(last.numpy()[0]))
    found = {}
    if whole:
        for v in range(NUM_SPECIAL, len(pieces)):
            word = pieces[v].removeprefix("▁")
            if word.startswith(prefix):
                after, _ = _log_probs(lm, state, v)
                found[word] = np.exp(first[v]) * np.exp(after[boundary]).sum()
    else:
        letters = [v for v in range(NUM_SPECIAL, len(pieces)) if pieces[v].isalpha()]
        space = pieces.index("▁")
        for n in range(1, max_chars + 1):
            for spelled in itertools.product(letters, repeat=n):
                word = "".join(pieces[v] for v in spelled)
                if not word.startswith(prefix):
                    continue
                log_p, s, previous = first[space], state, space
                for v in spelled:
                    step, s = _log_probs(lm, s, previous)
                    log_p, previous = log_p + step[v], v
                after, _ = _log_probs(lm, s, previous)
                found[word] = np.exp(log_p) * np.exp(after[boundary]).sum()
    total = sum(found.values())
    return {word: p / total for word, p in found.items()}


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["pi", "P", "Pi", "pizz", "pa"])
def test_word_model_completion_is_the_vocabulary_filtered_by_prefix(word_run: Path, prefix: str) -> None:
    lm = nmt.load(word_run)
    spelled = lm.tokenizer.spellings()
    assert spelled[:NUM_SPECIAL] == [""] * NUM_SPECIAL and "pizza" in spelled and "▁pizza" not in spelled
    expected = _brute_force_words(lm, "I love", prefix, 0)
    assert expected and all(word.startswith(prefix) for word in expected)  # upper-case prefixes too
    got = lm.suggest(f"I love {prefix}", k=len(expected))
    assert got.completing == prefix
    assert {w: pytest.approx(p, abs=1e-5) for w, p in got.words} == expected
    assert [p for _, p in got.words] == sorted((p for _, p in got.words), reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize(("prefix", "max_pieces"), [("a", 4), ("ab", 5), ("b", 4)])
def test_char_model_completion_equals_brute_force(char_run: Path, prefix: str, max_pieces: int) -> None:
    lm = nmt.load(char_run)
    assert lm.config.tokenizer.model_type == "char"
    # Every partial word fits the beam (7 pieces, at most 4 consistent words of up to 4 letters), so the
    # search is exact over the words of up to max_pieces - 1 letters after the "▁" piece.
    expected = _brute_force_words(lm, "ab ba", prefix, max_pieces - 1)
    state, last = _state_after(lm, "ab ba")
    chars, lengths = pad_batch(prefix_chars([prefix])[0])
    found = next_word_search(lm.model.step, state, {}, last, lm.pieces, len(expected),
                             beam_size=lm.tokenizer.vocab_size, max_pieces=max_pieces,
                             prefix=Prefix(tf.constant(chars), tf.constant(lengths)),
                             spellings=lm.spellings)
    got = {w.decode(): float(p) for w, p in zip(found.words.numpy()[0], found.probabilities.numpy()[0]) if w}
    assert {w: pytest.approx(p, abs=1e-5) for w, p in got.items()} == expected


@pytest.mark.slow
def test_suggest_says_which_case_and_next_words_after_a_boundary(word_run: Path) -> None:
    lm = nmt.load(word_run)
    after_space = lm.suggest("I love ", k=3)
    assert after_space.completing == ""
    assert after_space.words == lm.next_words("I love", k=3)
    assert lm.suggest("I love zq", k=3) == ("zq", [])  # no word starts so: nothing, not an error
    batch = lm.suggest(["I love pi", "we ", "Pa", "I love zq"], k=2)
    assert [s.completing for s in batch] == ["pi", "", "Pa", "zq"]
    assert batch[0] == lm.suggest("I love pi", k=2) and batch[3].words == []
    assert all(w.startswith("Pa") for w, _ in batch[2].words)
    assert batch[0].to_json()["words"][0].keys() == {"word", "probability"}


@pytest.mark.slow
def test_japanese_prefix_with_a_character_model(tmp_path: Path) -> None:
    text = "".join(line + "\n" for line in ["猫 が 好き", "犬 が 好き", "好物 は 寿司", "寿司 が 好き"] * 40)
    lm = nmt.load(_trained(tmp_path, "ja", text, {"tokenizer.model_type": "char", "tokenizer.vocab_size": 14}))
    got = lm.suggest("猫 が 好", k=3)
    assert got.completing == "好"
    words = [w for w, _ in got.words]
    assert words and all(w.startswith("好") for w in words)
    assert words[0] == "好き"  # after "が" the corpus only ever has 好き
    assert sum(p for _, p in got.words) == pytest.approx(1.0, abs=1e-3)


def test_split_typed_word_cases() -> None:
    from nmt.text_policy import words_of

    assert words_of("I don't like 'pizza', Tom's.") == [(0, "I"), (2, "don't"), (8, "like"), (14, "pizza'"),
                                                        (22, "Tom's")]
    assert split_typed_word("I love piz") == ("I love ", "piz")
    assert split_typed_word("I love ") == ("I love ", "")
    assert split_typed_word("Hello, wor") == ("Hello, ", "wor")
    assert split_typed_word("I don'") == ("I ", "don'")
    assert split_typed_word("end.") == ("end.", "")
    assert split_typed_word("猫 が 好") == ("猫 が ", "好")


# --- the keyboard model's cell and projection ----------------------------------------------------


def test_cifg_step_equals_a_hand_written_step() -> None:
    layer = Recurrent("cifg", 5)
    x = tf.random.stateless_normal([3, 4], seed=[1, 2])
    h0, c0 = tf.random.stateless_normal([3, 5], seed=[3, 4]), tf.random.stateless_normal([3, 5], seed=[5, 6])
    out, (h, c) = layer.step(x, (h0, c0))
    kernel, recurrent, bias = (w.numpy() for w in (layer.kernel, layer.recurrent_kernel, layer.bias))
    assert kernel.shape == (4, 15) and recurrent.shape == (5, 15)  # three gates, not four

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    z = x.numpy() @ kernel + h0.numpy() @ recurrent + bias
    f, g, o = z[:, :5], z[:, 5:10], z[:, 10:]
    c_expected = sigmoid(f) * c0.numpy() + (1 - sigmoid(f)) * np.tanh(g)  # input gate = 1 - forget gate
    h_expected = sigmoid(o) * np.tanh(c_expected)
    np.testing.assert_allclose(c.numpy(), c_expected, atol=1e-5)
    np.testing.assert_allclose(h.numpy(), h_expected, atol=1e-5)
    np.testing.assert_allclose(out.numpy(), h_expected, atol=1e-5)
    np.testing.assert_array_equal(bias, [0] * 0 + [1] * 5 + [0] * 10)  # forget bias 1, then g and o
    # The whole-sequence loop runs the same step (lengths masked as for every cell).
    sequence = tf.random.stateless_normal([3, 6, 4], seed=[7, 8])
    outputs, final = layer(sequence, tf.constant([6, 2, 0]), initial_state=(h0, c0))
    state = (h0[:1], c0[:1])
    for t in range(6):
        _, state = layer.step(sequence[:1, t], state)
    np.testing.assert_allclose(final[0][0].numpy(), state[0][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(final[0][2].numpy(), h0[2].numpy())  # length 0: the initial state
    assert outputs.shape == (3, 6, 5)


def test_output_projection_shrinks_the_tied_softmax() -> None:
    from nmt.models import LanguageModel

    def parameters(**decoder: object) -> int:
        model = LanguageModel(vocab_size=1000, embedding_dim=16, tie_embeddings=True,
                              decoder={"cell": "cifg", "units": 64, **decoder})
        logits, _ = model.forward(tf.constant([[5, 6, 7]]), model.initial_state(1))
        assert logits.shape == (1, 3, 1000)
        return sum(int(np.prod(w.shape)) for w in model.weights)

    # embedding 1000 x 16 (also the softmax), CIFG 3 x (16 + 64 + 1) x 64, projection 64 x 16, output bias
    assert parameters(output_projection=16) == 1000 * 16 + 3 * (16 + 64 + 1) * 64 + 64 * 16 + 1000
    with pytest.raises(ValueError, match="output_projection"):
        parameters()  # tied embeddings of 16 cannot read 64 units without the projection


def test_keyboard_config_meets_its_size() -> None:
    from nmt.tasks import task_for

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "keyboard-en.yaml")
    assert config.model.decoder.cell == "cifg" and config.model.decoder.output_projection == 96
    model = task_for(config).build_model(0, config.tokenizer.vocab_size)
    assert sum(int(np.prod(w.shape)) for w in model.weights) <= 1_500_000


def test_completion_is_impossible_past_the_last_piece() -> None:
    """A hand-made step: "▁pi" + "zza" and "▁pizza" both spell pizza; "▁pi" alone cannot cover "piz"."""
    pieces = ["<pad>", "<spm-unk>", "<s>", "</s>", "▁pi", "zza", "▁pizza", "▁pie", "."]
    table = np.zeros((9, 9))
    table[:, EOS_ID] = 1.0  # a finished word is followed by the end of the sentence
    table[2] = 0
    table[2, [4, 6, 7]] = [0.5, 0.3, 0.2]  # after BOS
    table[4] = 0
    table[4, [5, EOS_ID]] = [0.4, 0.6]  # "▁pi" -> "zza", or "pi" ends
    step = _table_step(table)
    spellings = Spellings(*(tf.constant(t) for t in spellings_of(_spelled(pieces))))
    chars, lengths = pad_batch(prefix_chars(["piz", "pi", "x"])[0])
    found = next_word_search(step, tf.zeros([3, 1]), {}, tf.constant([2, 2, 2]), tf.constant(pieces), k=3,
                             beam_size=4, max_pieces=3, prefix=Prefix(tf.constant(chars), tf.constant(lengths)),
                             spellings=spellings)
    rows = [{w.decode(): pytest.approx(float(p), abs=1e-6) for w, p in zip(ws, ps) if w} for ws, ps in
            zip(found.words.numpy(), found.probabilities.numpy())]
    assert rows[0] == {"pizza": 1.0}  # ▁pi zza (0.2) and ▁pizza (0.3), and nothing else spells piz...
    assert rows[1] == {"pizza": 0.5, "pi": 0.3, "pie": 0.2}  # ... while pi, pie and pizza all start with pi
    assert rows[2] == {}


# --- the CLI and the lexicon -----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_suggest_prints_which_case_and_the_words(word_run: Path, tmp_path: Path, capsys) -> None:
    from nmt.cli import main

    lm = nmt.load(word_run)
    assert main(["suggest", "--run", str(word_run), "I love piz"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "completing: piz"
    assert [line.split("\t")[0] for line in lines[1:]] == [w for w, _ in lm.suggest("I love piz").words]
    assert main(["suggest", "--run", str(word_run), "I love ", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "next words" and len(lines) == 3
    typed = tmp_path / "typed.txt"
    typed.write_text("I love pi\nwe \nI love zq\n", encoding="utf-8")  # the trailing space is kept
    out = tmp_path / "suggestions.jsonl"
    assert main(["suggest", "--run", str(word_run), "-i", str(typed), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["completing"] for row in rows] == ["pi", "", "zq"] and rows[2]["words"] == []
    assert rows[0] == lm.suggest("I love pi").to_json()
    assert main(["suggest", "--run", str(word_run), "I love", "-k", "0"]) == 2
    assert "-k must be an integer between 1 and" in capsys.readouterr().err


@pytest.mark.slow
def test_a_lexicon_keeps_suggest_to_its_words_in_python_savedmodel_and_tflite(
        word_run: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    import shutil
    import subprocess
    import sys

    from nmt.cli import main
    from nmt.export import export
    from nmt.run_dir import RunDir

    run = tmp_path / "run"
    shutil.copytree(word_run, run)
    before = nmt.load(run).suggest("I love piz", k=3)
    assert {w for w, _ in before.words} == {"pizza", "pizzas"}
    assert main(["lexicon", "--run", str(run)]) == 0
    assert "words" in capsys.readouterr().out
    lexicon = RunDir(run).lexicon
    counts = dict(line.split("\t") for line in lexicon.read_text(encoding="utf-8").splitlines())
    assert counts["pizza"] == "60" and counts["Paris"] == "40" and counts["I"] == "100"  # the corpus' own counts
    # A lexicon without "pizzas": suggest offers pizza alone, renormalised; next_words does not change.
    lexicon.write_text("".join(f"{w}\t{c}\n" for w, c in counts.items() if w != "pizzas"), encoding="utf-8")
    lm = nmt.load(run)
    assert lm.suggest("I love piz", k=3) == ("piz", [("pizza", pytest.approx(1.0, abs=1e-6))])
    assert lm.next_words("I love", k=3) == nmt.load(word_run).next_words("I love", k=3)
    exported = export(run, tmp_path / "export")
    import tensorflow as tf

    found = tf.saved_model.load(str(exported)).signatures["suggest"](text=tf.constant(["I love piz", "I love pi"]),
                                                                     k=tf.constant([3, 3]))
    words = [[w.decode() for w in row if w] for row in found["words"].numpy()]
    assert words[0] == ["pizza"] and "pizzas" not in words[1]
    assert words[1] == [w for w, _ in lm.suggest("I love pi", k=3).words]
    assert main(["export", "--run", str(run), "--format", "tflite", "--out", str(tmp_path / "phone")]) == 0
    script = ("import json, sys\nfrom nmt.tflite import TfliteNextWords\n"
              "found = TfliteNextWords(sys.argv[1]).suggest(['I love piz', 'I love pi'])\n"
              "print(json.dumps([s._asdict() for s in found]))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "phone")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    phone = json.loads(done.stdout.strip().splitlines()[-1])
    assert [[w for w, _ in row["words"]] for row in phone] == words
    # Errors: a translation run has no lexicon; a damaged file names its line.
    assert main(["lexicon", "--run", str(tiny_run)]) == 2
    assert "language model" in capsys.readouterr().err
    assert main(["lexicon", "--run", str(run), "--min-count", "0"]) == 2
    assert "--min-count must be at least 1, got 0" in capsys.readouterr().err
    lexicon.write_text("pizza\t60\nbroken line\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"lexicon.txt:2: expected 'word<TAB>count'"):
        nmt.load(run)


def test_an_apostrophe_piece_continues_the_word() -> None:
    """SentencePiece may keep an apostrophe as a piece of its own (▁don ' t): the word is don't, in next
    words and in completions alike."""
    pieces = ["<pad>", "<spm-unk>", "<s>", "</s>", "▁don", "'", "t", "▁done", "."]
    table = np.zeros((9, 9))
    table[:, EOS_ID] = 1.0
    table[2] = 0
    table[2, [4, 7]] = [0.6, 0.4]
    table[4] = 0
    table[4, [5, EOS_ID]] = [0.9, 0.1]  # "▁don" then "'" (or "don" ends)
    table[5] = 0
    table[5, 6] = 1.0
    step = _table_step(table)
    found = next_word_search(step, tf.zeros([1, 1]), {}, tf.constant([2]), tf.constant(pieces), k=3, beam_size=3,
                             max_pieces=4)
    assert {w.decode(): pytest.approx(float(p)) for w, p in zip(*(t.numpy()[0] for t in found)) if w} == {
        "don't": 0.54, "done": 0.4, "don": 0.06}
    spellings = Spellings(*(tf.constant(t) for t in spellings_of(_spelled(pieces))))
    chars, lengths = pad_batch(prefix_chars(["don'"])[0])
    found = next_word_search(step, tf.zeros([1, 1]), {}, tf.constant([2]), tf.constant(pieces), k=3, beam_size=3,
                             max_pieces=4, prefix=Prefix(tf.constant(chars), tf.constant(lengths)), spellings=spellings)
    assert [w.decode() for w in found.words.numpy()[0] if w] == ["don't"]

"""Vocabulary shortlists: the lexical table, the allowed ids of a batch, and decoding over them in
Python, the CLI and a SavedModel reloaded in a fresh process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nmt.cli import main
from nmt.constants import EOS_ID, NUM_SPECIAL, SHORTLIST_BLOCK
from nmt.errors import NmtError
from nmt.run_dir import RunDir
from nmt.shortlist import Shortlist, build_shortlist, coverage

SENTENCES = ["Good morning.", "", "Where is the station?", "I like tea very much.", "Thank you."]


def test_ibm1_finds_each_source_words_translation() -> None:
    # Source word 10+i always comes with target word 20+i, beside a frequent target word 5 in every
    # pair: co-occurrence alone would rank 5 first for every source word; IBM-1 explains it away
    # by the source word that is in every pair too (4).
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(300):
        words = rng.choice(8, size=3, replace=False)
        pairs.append((np.array([4, *(10 + words)]), np.array([5, *(20 + rng.permutation(words))])))
    shortlist = build_shortlist(pairs, source_vocab_size=30, target_vocab_size=40, first=1, best=2)
    for i in range(8):
        assert shortlist.table[10 + i, 0] == 20 + i
    assert shortlist.table[4, 0] == 5
    assert shortlist.frequency_order[0] == 5  # the most frequent target piece
    assert list(shortlist.frequency_order[-NUM_SPECIAL:]) == list(range(NUM_SPECIAL))
    assert (shortlist.table[0:NUM_SPECIAL] == EOS_ID).all()  # never-seen pieces list nothing
    assert not np.isin(shortlist.table[10:18], range(NUM_SPECIAL)).all()


def test_allowed_ids_are_the_union_padded_to_a_block_and_sorted() -> None:
    vocab = 300
    order = np.concatenate([np.arange(vocab - 1, NUM_SPECIAL - 1, -1), np.arange(NUM_SPECIAL)]).astype(np.int32)
    table = np.full([50, 2], EOS_ID, np.int32)
    table[7] = [100, 101]
    table[8] = [102, EOS_ID]
    shortlist = Shortlist(order, table, first=3)
    allowed = shortlist.allowed_for([[7, 8], [8]])
    assert len(allowed) == SHORTLIST_BLOCK and (np.diff(allowed) > 0).all()
    assert list(allowed[:NUM_SPECIAL]) == list(range(NUM_SPECIAL))  # position i holds id i: EOS is EOS
    listed = {100, 101, 102, 299, 298, 297}
    assert listed <= set(allowed.tolist())
    # The top-up is the next most frequent pieces: 296, 295, ... down to fill the block.
    rest = sorted(set(allowed.tolist()) - listed - set(range(NUM_SPECIAL)), reverse=True)
    assert rest == list(range(296, 296 - len(rest), -1))
    # Padding positions past a row's length do not count: piece 7 in row 2's padding adds nothing.
    assert 100 not in shortlist.allowed_for([[8, 7][:1]]).tolist()
    # Never more than the vocabulary.
    whole = Shortlist(order, table, first=vocab)
    assert whole.allowed_for([[7]]).tolist() == list(range(vocab))


def test_coverage_counts_reference_pieces_inside_their_batch() -> None:
    order = np.arange(NUM_SPECIAL, 200).tolist()[::-1] + list(range(NUM_SPECIAL))
    table = np.full([20, 1], EOS_ID, np.int32)
    table[5] = [10]
    shortlist = Shortlist(np.array(order, np.int32), table, first=0)
    allowed = set(shortlist.allowed_for([[5]]).tolist())
    assert 10 in allowed and 11 not in allowed  # 11 is the least frequent piece but one
    covered = coverage(shortlist, [[5]], [[10, 11, 199]], batch_size=8)
    assert (covered.inside, covered.total) == (2, 3) and covered.mean_size == SHORTLIST_BLOCK


@pytest.fixture(scope="module")
def translator(tiny_run: Path):
    from nmt.inference import load

    return load(tiny_run)


def _whole_vocabulary(translator) -> Shortlist:
    vocab = translator.target_tokenizer.vocab_size
    order = np.concatenate([np.arange(NUM_SPECIAL, vocab), np.arange(NUM_SPECIAL)]).astype(np.int32)
    table = np.full([translator.source_tokenizer.vocab_size, 1], EOS_ID, np.int32)
    return Shortlist(order, table, first=vocab)


def test_a_shortlist_of_the_whole_vocabulary_decodes_bit_identically(translator) -> None:
    listed = translator.with_shortlist(_whole_vocabulary(translator))
    for beam in (1, 3):
        plain = translator.translate(SENTENCES, beam_size=beam, nbest=beam, with_attention=True)
        short = listed.translate(SENTENCES, beam_size=beam, nbest=beam, with_attention=True)
        for a_list, b_list in zip(plain, short):
            for a, b in zip(a_list, b_list):
                assert (a.text, a.score, a.tokens) == (b.text, b.score, b.tokens)  # scores bit for bit
                if a.attention is not None:
                    assert np.array_equal(a.attention, b.attention)


def test_a_piece_outside_the_shortlist_is_never_output(translator) -> None:
    # The tiny model's best outputs are mostly empty; its n-best lists hold pieces.
    tokenizer = translator.target_tokenizer
    piece_id = {tokenizer.id_to_piece(i): i for i in range(tokenizer.vocab_size)}
    plain = translator.translate(SENTENCES, beam_size=3, nbest=3, with_attention=True)
    produced = [piece_id[p] for hs in plain for h in hs for p in h.tokens]
    banned = int(np.bincount(produced).argmax())  # the piece the full search outputs most
    assert banned >= NUM_SPECIAL
    whole = _whole_vocabulary(translator)
    vocab = translator.target_tokenizer.vocab_size
    # `banned` least frequent; the first vocabulary - specials - 1 - a block are always allowed, so
    # the top-up to a block's multiple stops before it.
    order = np.array([i for i in range(NUM_SPECIAL, vocab) if i != banned] + [banned, *range(NUM_SPECIAL)], np.int32)
    cut = Shortlist(order, whole.table, first=vocab - NUM_SPECIAL - 1 - SHORTLIST_BLOCK)
    allowed = cut.allowed_for([[5]])
    assert banned not in allowed.tolist()
    listed = translator.with_shortlist(cut)
    for beam in (1, 3):
        outputs = 0
        for hypotheses in listed.translate(SENTENCES, beam_size=beam, nbest=beam, with_attention=True):
            for hypothesis in hypotheses:
                ids = [piece_id[p] for p in hypothesis.tokens]
                assert banned not in ids and set(ids) <= set(allowed.tolist())
                outputs += len(ids)
        assert outputs or beam == 1  # the n-best lists still hold pieces, other ones


@pytest.fixture(scope="module")
def shortlisted(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the tiny run with its shortlist built by the CLI (the fixture run stays without),
    and what the CLI printed."""
    import contextlib
    import io
    import shutil

    run = tmp_path_factory.mktemp("shortlisted") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(".lock"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["shortlist", "--run", str(run), "--first", "50", "--best", "10"]) == 0
    return run, printed.getvalue()


@pytest.fixture(scope="module")
def shortlisted_run(shortlisted: tuple[Path, str]) -> Path:
    return shortlisted[0]


def test_the_cli_builds_and_decodes_with_the_shortlist(shortlisted: tuple[Path, str], tmp_path: Path) -> None:
    shortlisted_run, out = shortlisted
    assert re.search(r"dev: [\d,]+ of [\d,]+ reference pieces \([\d.]+%\) inside their batch's shortlist", out)
    meta = json.loads((RunDir(shortlisted_run).shortlist / "meta.json").read_text())
    assert (meta["first"], meta["best"]) == (50, 10) and meta["pairs"] > 1000
    source = tmp_path / "in.en"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    for flag, name in (("--shortlist", "short.ja"), ("--no-shortlist", "plain.ja")):
        assert main(["translate", "--run", str(shortlisted_run), "-i", str(source), "-o", str(tmp_path / name),
                     "--beam", "3", flag]) == 0
    from nmt.inference import load

    translator = load(shortlisted_run, shortlist=True)
    assert translator.shortlist is not None and translator.shortlist.first == 50
    expected = [h[0].text for h in translator.translate(SENTENCES, beam_size=3)]
    assert (tmp_path / "short.ja").read_text(encoding="utf-8").splitlines() == expected
    assert load(shortlisted_run).shortlist is None  # decode.shortlist is false: the whole vocabulary


def test_asking_a_run_without_a_shortlist_for_one_is_a_clear_error(tiny_run: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in.en"
    source.write_text("Hello.\n", encoding="utf-8")
    assert main(["translate", "--run", str(tiny_run), "-i", str(source), "--shortlist"]) == 2
    err = capsys.readouterr().err
    assert "has no vocabulary shortlist" in err and f"nmt shortlist --run {tiny_run}" in err
    from nmt.inference import load

    with pytest.raises(NmtError, match="has no vocabulary shortlist"):
        load(tiny_run, shortlist=True)


def test_a_language_model_has_no_shortlist(cycle_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["shortlist", "--run", str(cycle_run)]) == 2
    assert "holds a language model (task: lm), but this needs a translation model" in capsys.readouterr().err


FRESH = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
path, sentences = json.loads(sys.stdin.read())
m = tf.saved_model.load(path)
out = {}
for name in ("translate", "translate_greedy"):
    r = m.signatures[name](text=tf.constant(sentences))
    out[name] = [[t.decode() for t in r["translations"].numpy()], r["scores"].numpy().tolist()]
print(json.dumps(out))
"""


def test_the_export_decodes_with_the_shortlist_in_its_graph(shortlisted_run: Path, tmp_path: Path) -> None:
    from nmt.export import export
    from nmt.inference import load

    path = export(shortlisted_run, tmp_path / "model", shortlist=True)
    done = subprocess.run([sys.executable, "-c", FRESH], input=json.dumps([str(path), SENTENCES]),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    translator = load(shortlisted_run, shortlist=True)
    for name, beam in (("translate", translator.config.decode.beam_size), ("translate_greedy", 1)):
        expected = translator.translate(SENTENCES, beam_size=beam)
        assert got[name][0] == [h[0].text for h in expected]
        np.testing.assert_allclose(got[name][1], [h[0].score for h in expected], rtol=1e-5, atol=1e-6)

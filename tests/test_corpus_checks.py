"""Tests for the corpus checks (nmt/corpus_checks.py), the leak-free split (nmt/corpus_split.py), the
training data's dedup option, and their commands: nmt data check, nmt data split, and the overlap line
nmt train logs before its first step."""

from __future__ import annotations

import gzip
import json
import logging
import random
from pathlib import Path

import pytest
import yaml

from nmt.cli import main
from nmt.config import DataSourceConfig, load_config
from nmt.corpus_checks import Overlap, SplitChecker, check_corpus, count_overlap
from nmt.data import CorpusStream, normalize_side, read_tsv
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

from conftest import ROOT, write_config
from test_data import tsv_bytes, write_bytes

EN_JA = ROOT / "data" / "en-ja"


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tsv(path: Path, rows: list[tuple[str, ...]], gz: bool = False) -> Path:
    return write_bytes(path, tsv_bytes(rows), gz=gz)


def stream(path: Path, **kwargs) -> CorpusStream:
    return CorpusStream(DataSourceConfig(format="tsv", path=str(path), **kwargs))


# --- normalisation and overlap ----------------------------------------------------------------


def test_normalize_side_ignores_case_width_punctuation_and_spaces() -> None:
    assert normalize_side("Tom's here!") == normalize_side("toms here") == "tomshere"
    assert normalize_side("ＡＢＣ　１２３。") == "abc123"  # NFKC: full-width letters, digits and space
    assert normalize_side("東京駅は、どこですか？") == "東京駅はどこですか"
    assert normalize_side("...!?") == ""


def test_count_overlap_counts_sources_targets_and_pairs() -> None:
    train = [("Hello.", "こんにちは。"), ("Good night.", "おやすみ。"), ("Thanks!", "ありがとう。")]
    dev = [("hello", "やあ。"),            # source in train
           ("Hi.", "おやすみ"),             # target in train (punctuation differs)
           ("THANKS", "ありがとう！"),      # both sides in train: a pair
           ("Bye.", "さようなら。")]         # nothing
    overlap = count_overlap(train, dev)
    assert overlap == Overlap(examples=4, sources=2, targets=2, pairs=1)
    assert overlap.summary("dev") == (
        "dev: 2 of 4 sources (50 %), 2 of 4 targets (50 %) and 1 of 4 pairs (25 %) also appear in the training "
        "data: dev scores will overstate quality (nmt data split makes a clean split)")


def test_overlap_summary_one_side_and_none() -> None:
    assert Overlap(789, 0, 205, 0).summary() == (
        "dev: 205 of 789 targets (26 %) also appear in the training data: dev scores will overstate quality "
        "(nmt data split makes a clean split)")
    assert Overlap(3000, 1).summary() == (
        "dev: 1 of 3,000 lines (0.0 %) also appears in the training data: dev scores will overstate quality "
        "(nmt data split makes a clean split)")
    assert Overlap(2000, 0, 0, 0).summary() == \
        "dev: none of its 2,000 sources, targets or pairs appears in the training data"
    assert count_overlap([("a b", None)], [("A B!", None), ("c", None)]) == Overlap(2, 1)


def test_shipped_en_ja_dev_shares_nothing_with_train() -> None:
    train = read_tsv(EN_JA / "train.tsv.gz", 0, 1)
    dev = read_tsv(EN_JA / "dev.tsv.gz", 0, 1)
    assert (len(train), len(dev)) == (70_878, 2_000)
    assert count_overlap(zip(train.sources, train.targets), list(zip(dev.sources, dev.targets))) == \
        Overlap(2000, 0, 0, 0)
    # dev.en / dev.ja are the dev set's own two columns.
    assert (EN_JA / "dev.en").read_text(encoding="utf-8").splitlines() == dev.sources
    assert (EN_JA / "dev.ja").read_text(encoding="utf-8").splitlines() == dev.targets


# --- the report of nmt data check -------------------------------------------------------------


def planted_corpus(tmp_path: Path) -> tuple[Path, Path, Path]:
    rows = [
        ("Hello.", "こんにちは。"),                                   # 1
        ("Hello.", "こんにちは。"),                                   # 2 exact duplicate of 1
        ("hello", "こんにちは"),                                      # 3 normalised duplicate of 1
        ("", "空です。"),                                             # 4 empty source
        ("I love you.", "I love you."),                              # 5 target in the wrong script
        ("Yes.", "はい、そうです。ところで、昨日の会議の議事録をまとめて皆さんに送っていただけますか？"),  # 6 ratio
        ("Facebook?", "Facebookやってる？"),                          # 7 mixed script: fine
        ("Where is the station?", "駅はどこですか。"),                 # 8 fine
        ("See you.", "またね。"),                                      # 9 fine
    ]
    train = tsv(tmp_path / "train.tsv", rows)
    raw = train.read_bytes() + b"Bad \xff byte.\t\xe3\x81\x82\n"  # line 10: invalid UTF-8
    train.write_bytes(raw)
    dev = tsv(tmp_path / "dev.tsv", [("Where is the station?", "駅はどこですか？"), ("Good luck.", "またね！"),
                                     ("New one.", "新しい。")])
    test = tsv(tmp_path / "test.tsv", [("New one!", "新品。"), ("Unseen.", "見たことない。")])
    return train, dev, test


def test_check_corpus_finds_each_planted_problem(tmp_path: Path) -> None:
    train, dev, test = planted_corpus(tmp_path)
    report = check_corpus(stream(train), {"dev": stream(dev), "test": stream(test)}, ("en", "ja"))
    split = report.splits[0]
    assert split.name == "train" and split.examples == 9
    assert (split.empty.count, split.empty.lines) == (1, [4])
    assert (split.invalid_utf8.count, split.invalid_utf8.lines) == (1, [10])
    assert (split.duplicates_exact.count, split.duplicates_exact.lines) == (1, [2])
    assert (split.duplicates_normalized.count, split.duplicates_normalized.lines) == (2, [2, 3])
    assert split.wrong_script_target.lines == [5] and split.wrong_script_source.count == 0
    assert split.ratio_outliers.lines == [6]
    assert split.too_long_source is None  # no tokenizer given: not counted
    assert report.overlaps["dev"] == Overlap(3, 1, 2, 1)
    assert report.overlaps["test"] == Overlap(2, 0, 0, 0)
    assert report.overlaps["test vs dev"] == Overlap(2, 1, 0, 0)
    shown = "\n".join(report.lines())
    assert "duplicates normalized: 2 (lines 2, 3)" in shown
    assert "test: 1 of 2 sources (50 %) also appears in the dev data" in shown


def test_data_check_cli_json_and_text(tmp_path: Path, capsys) -> None:
    train, dev, test = planted_corpus(tmp_path)
    code, out, _ = run_main(["data", "check", "--train", str(train), "--dev", str(dev), "--test", str(test),
                             "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["overlap"]["dev"] == {"examples": 3, "sources": 1, "targets": 2, "pairs": 1}
    assert report["splits"]["train"]["invalid_utf8"] == {"count": 1, "lines": [10]}
    code, out, _ = run_main(["data", "check", "--train", str(train), "--dev", str(dev)], capsys)
    assert code == 0 and "dev: 1 of 3 sources (33 %), 2 of 3 targets (67 %) and 1 of 3 pairs (33 %)" in out


def test_too_long_lines_counted_in_pieces(tmp_path: Path) -> None:
    tokenizer = Tokenizer.train(["a b c d e f g h"] * 50, model_type="char", vocab_size=20, character_coverage=1.0)
    checker = SplitChecker("train", "x", ("en", "en"), has_targets=True, tokenizers=(tokenizer, tokenizer),
                           max_lengths=(5, 3))
    train = tsv(tmp_path / "t.tsv", [("abc", "ab"), ("abcdefg", "ab"), ("ab", "abcd")])
    for row in stream(train).rows():
        checker.add(row)
    report = checker.report()
    assert report.too_long_source.lines == [2] and report.too_long_target.lines == [3]


@pytest.mark.parametrize(("argv", "message"), [
    (["--train", "a", "b", "c"], "--train: one file, or two parallel files (source, target); got 3"),
    (["--train", "missing.tsv"], "--train: file not found: missing.tsv"),
    (["--train", "{train}", "--columns", "x"], "--columns: expected two column numbers like 0,1, got 'x'"),
    (["--config", "en-ja.yaml", "--dev", "{train}"], "--dev and --test go with --train; --config reads data.dev"),
    ([], "give --config, or --train (with --dev, --test), not both"),
    (["--train", "{train}", "--format", "parallel"], "--train: --format parallel reads two files"),
])
def test_data_check_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    train = tsv(tmp_path / "train.tsv", [("a", "b")])
    code, _, err = run_main(["data", "check", *[a.format(train=train) for a in argv]], capsys)
    assert code == 2 and err.strip() == f"nmt: error: {message}"


def test_data_check_reports_a_corrupt_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.tsv.gz"
    whole = gzip.compress("".join(f"{i}\t{i * 7919 % 10007}\n" for i in range(2000)).encode())
    bad.write_bytes(whole[:len(whole) // 2])
    code, _, err = run_main(["data", "check", "--train", str(bad)], capsys)
    assert code == 2 and err.startswith(f"nmt: error: {bad}: corrupt or truncated file")


# --- nmt train's overlap line -----------------------------------------------------------------


@pytest.mark.slow
def test_train_logs_and_records_a_planted_leak(tmp_path: Path, capsys, caplog) -> None:
    train_rows = read_tsv(EN_JA / "train.tsv.gz", 0, 1, limit=300)
    pairs = list(zip(train_rows.sources, train_rows.targets))
    leaked = [(f"Leak number {i}.", pairs[100 + i][1]) for i in range(3)]  # 3 targets taken from training
    leaked.append((pairs[200][0].upper(), pairs[201][1]))                   # both sides: a pair
    clean = read_tsv(EN_JA / "dev.tsv.gz", 0, 1, limit=6)
    dev = tsv(tmp_path / "dev.tsv", leaked + list(zip(clean.sources, clean.targets)))
    train = tsv(tmp_path / "train.tsv", pairs)
    tiny = yaml.safe_load((ROOT / "configs" / "en-ja-tiny.yaml").read_text(encoding="utf-8"))
    config = write_config(tiny, tmp_path / "leak.yaml", {
        "run_dir": str(tmp_path / "run"), "data.train.path": str(train), "data.train.limit": None,
        "data.dev.path": str(dev), "data.dev.limit": None, "tokenizer.vocab_size": 300,
        "train.steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2, "decode.beam_size": 1})
    with caplog.at_level(logging.WARNING, logger="nmt"):
        code, _, _ = run_main(["train", "--config", str(config)], capsys)
    assert code == 0
    line = ("dev: 1 of 10 sources (10 %), 4 of 10 targets (40 %) and 1 of 10 pairs (10 %) also appear in the "
            "training data: dev scores will overstate quality (nmt data split makes a clean split)")
    assert line in [record.getMessage() for record in caplog.records]
    recorded = json.loads((tmp_path / "run" / "data_checks.json").read_text(encoding="utf-8"))
    assert recorded == {"dev_overlap": {"examples": 10, "sources": 1, "targets": 4, "pairs": 1}}
    # nmt data check says the same, and counts the pieces of over-long lines with the run's tokenizers.
    code, out, _ = run_main(["data", "check", "--config", str(config), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["overlap"]["dev"] == recorded["dev_overlap"]
    assert report["splits"]["train"]["too_long_source"]["count"] == 0  # the tiny config's limit: 32 pieces
    # nmt report shows it above the evaluations.
    code, out, _ = run_main(["report", "--run", str(tmp_path / "run")], capsys)
    assert code == 0 and out.startswith(line + "\n")


@pytest.mark.slow
def test_tiny_run_records_a_clean_dev(tiny_run: Path, capsys) -> None:
    recorded = json.loads((tiny_run / "data_checks.json").read_text(encoding="utf-8"))
    assert recorded == {"dev_overlap": {"examples": 50, "sources": 0, "targets": 0, "pairs": 0}}
    code, out, _ = run_main(["report", "--run", str(tiny_run)], capsys)
    assert code == 0 and out.startswith("dev: none of its 50 sources, targets or pairs appears in the training data")


# --- dedup --------------------------------------------------------------------------------------


def test_dedup_drops_repeated_pairs_the_same_way_each_pass(tmp_path: Path) -> None:
    path = tsv(tmp_path / "t.tsv", [("Hi.", "やあ。"), ("Hi.", "やあ。"), ("hi", "やあ"), ("Bye.", "じゃあ。"),
                                    ("", "x"), ("Hi.", "こんにちは。")])
    none, exact, normalized = (stream(path, dedup=mode) for mode in ("none", "exact", "normalized"))
    assert len(list(none)) == 5 and none.dropped_duplicates == 0 and none.dropped_empty == 1
    assert list(exact) == [("Hi.", "やあ。"), ("hi", "やあ"), ("Bye.", "じゃあ。"), ("Hi.", "こんにちは。")]
    assert exact.dropped_duplicates == 1
    first = list(normalized)
    assert first == [("Hi.", "やあ。"), ("Bye.", "じゃあ。"), ("Hi.", "こんにちは。")]
    assert normalized.dropped_duplicates == 2 and list(normalized) == first and normalized.dropped_duplicates == 2
    limited = stream(path, dedup="normalized", limit=2)
    assert list(limited) == first[:2]  # the limit counts kept examples


def test_dedup_is_for_training_data_only(tmp_path: Path) -> None:
    with pytest.raises(NmtError, match="data.dev.dedup: only the training data is deduplicated"):
        load_config(ROOT / "configs" / "en-ja-tiny.yaml", ["data.dev.dedup=exact"])
    with pytest.raises(NmtError, match="data.train.dedup"):
        load_config(ROOT / "configs" / "en-ja-tiny.yaml", ["data.train.dedup=fuzzy"])


@pytest.mark.slow
def test_train_logs_dropped_duplicates(tmp_path: Path, caplog) -> None:
    from nmt.training import Trainer

    rows = read_tsv(EN_JA / "train.tsv.gz", 0, 1, limit=200)
    pairs = list(zip(rows.sources, rows.targets))
    train = tsv(tmp_path / "train.tsv", pairs + pairs[:30])
    config = load_config(ROOT / "configs" / "en-ja-tiny.yaml", [
        f"run_dir={tmp_path / 'run'}", f"data.train.path={train}", "data.train.limit=null", "data.dev=null",
        "data.train.dedup=exact", "tokenizer.vocab_size=300", "train.steps=1", "train.checkpoint_every=1"])
    with caplog.at_level(logging.INFO, logger="nmt"):
        Trainer(config).train()
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("train: 200 pairs read from") and m.endswith("(0 empty, 30 duplicates (exact) dropped)")
               for m in messages), messages


# --- nmt data split ---------------------------------------------------------------------------


def synthetic_corpus(tmp_path: Path, count: int = 600) -> tuple[Path, list[tuple[str, str, str]]]:
    """Pairs with planted shared sides: every 5th pair repeats an earlier target with a new source, every
    7th an earlier source (cased and punctuated differently) with a new target, so groups chain."""
    rnd = random.Random(3)
    rows: list[tuple[str, str, str]] = []
    for i in range(count):
        source, target = f"sentence {i} here.", f"文{i}です。"
        if i % 5 == 4:
            target = rows[rnd.randrange(len(rows))][1].replace("。", "！")
        if i % 7 == 6:
            source = rows[rnd.randrange(len(rows))][0].upper().rstrip(".")
        rows.append((source, target, f"#{i}"))
    return tsv(tmp_path / "corpus.tsv.gz", rows, gz=True), rows


def gunzip(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8")


def sides(path: Path) -> tuple[set[str], set[str]]:
    corpus = read_tsv(path, 0, 1)
    return {normalize_side(s) for s in corpus.sources}, {normalize_side(t) for t in corpus.targets}


def test_split_shares_no_side_sizes_exact_and_rerun_identical(tmp_path: Path, capsys) -> None:
    corpus, rows = synthetic_corpus(tmp_path)
    argv = ["data", "split", str(corpus), "--dev", "50", "--test", "40", "--seed", "5"]
    code, out, _ = run_main([*argv, "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "went with another example of their group" in out
    code, _, _ = run_main([*argv, "--out", str(tmp_path / "b")], capsys)
    names = ["train.tsv.gz", "dev.tsv.gz", "test.tsv.gz"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    parts = {name: sides(tmp_path / "a" / name) for name in names}
    assert [len(read_tsv(tmp_path / "a" / n, 0, 1)) for n in names] == [510, 50, 40]
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not parts[first][0] & parts[second][0], (first, second)
            assert not parts[first][1] & parts[second][1], (first, second)
    # Lines are kept whole (the attribution column) and in the corpus's order.
    written = sorted(line for n in names for line in gunzip(tmp_path / "a" / n).splitlines(keepends=True))
    assert written == sorted("\t".join(row) + "\n" for row in rows)
    dev_lines = gunzip(tmp_path / "a" / "dev.tsv.gz").splitlines()
    assert dev_lines == sorted(dev_lines, key=lambda line: int(line.rsplit("#", 1)[1]))
    # The check agrees: nothing shared.
    code, out, _ = run_main(["data", "check", "--train", str(tmp_path / "a" / names[0]), "--dev",
                             str(tmp_path / "a" / names[1]), "--test", str(tmp_path / "a" / names[2]), "--json"],
                            capsys)
    overlap = json.loads(out)["overlap"]
    assert all(o["sources"] == o["targets"] == 0 for o in overlap.values()), overlap
    # Another seed draws other groups.
    code, _, _ = run_main([*argv[:-1], "6", "--out", str(tmp_path / "c")], capsys)
    assert (tmp_path / "c" / "dev.tsv.gz").read_bytes() != (tmp_path / "a" / "dev.tsv.gz").read_bytes()


def test_split_groups_chain_through_shared_sides(tmp_path: Path) -> None:
    from nmt.corpus_split import plan_split

    # 1-2 share a target, 2-3 a source, 3-4 a target: one group of four; 5 alone.
    path = tsv(tmp_path / "c.tsv", [("a", "x"), ("b", "x!"), ("B.", "y"), ("c", "y"), ("d", "z")])
    plan = plan_split(stream(path), dev=1, seed=0)
    assert plan.groups.tolist() == [0, 0, 0, 0, 4]
    assert plan.sizes() == {"train": 4, "dev": 1, "test": 0}  # only the lone pair fits a dev of 1
    assert plan.assignment.tolist() == [0, 0, 0, 0, 1]
    with pytest.raises(NmtError, match="dev 4 \\+ test 2 is more than the 5 examples"):
        plan_split(stream(path), dev=4, test=2)


def test_split_parallel_files_keep_their_suffixes(tmp_path: Path, capsys) -> None:
    _, rows = synthetic_corpus(tmp_path, 100)
    (tmp_path / "c.en").write_text("".join(r[0] + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "c.ja").write_text("".join(r[1] + "\n" for r in rows), encoding="utf-8")
    code, _, _ = run_main(["data", "split", str(tmp_path / "c.en"), str(tmp_path / "c.ja"), "--dev", "10",
                           "--out", str(tmp_path / "out")], capsys)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dev.en", "dev.ja", "train.en", "train.ja"]
    dev_en = (tmp_path / "out" / "dev.en").read_text(encoding="utf-8").splitlines()
    dev_ja = (tmp_path / "out" / "dev.ja").read_text(encoding="utf-8").splitlines()
    assert len(dev_en) == len(dev_ja) == 10
    assert set(zip(dev_en, dev_ja)) <= {(r[0], r[1]) for r in rows}  # the pairs stay aligned


@pytest.mark.parametrize(("extra", "message"), [
    (["--dev", "-1"], "--dev must not be negative, got -1"),
    (["--dev", "0"], "--dev (and --test) must ask for at least one example"),
    (["--dev", "5000"], "dev 5,000 + test 0 is more than the 600 examples of the corpus"),
])
def test_split_errors(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    corpus, _ = synthetic_corpus(tmp_path)
    code, _, err = run_main(["data", "split", str(corpus), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and err.strip() == f"nmt: error: {message}"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())

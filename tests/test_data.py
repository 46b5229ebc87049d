"""Tests for nmt/data.py (corpus readers) and nmt/pipeline.py (encoding, tf.data batches)."""

from __future__ import annotations

import collections
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from nmt.config import DataSourceConfig
from nmt.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.data import Corpus, read_corpus, read_hf, read_lines, read_parallel, read_text, read_tsv
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

ROWS = [
    ("Hello.", "こんにちは。", "CC-BY 1"),
    ("Thank you.", "ありがとう。", "CC-BY 2"),
    ("Good night.", "おやすみなさい。", "CC-BY 3"),
]


def write_bytes(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def tsv_bytes(rows) -> bytes:
    return "".join("\t".join(row) + "\n" for row in rows).encode("utf-8")


# --- TSV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "gz"), [("c.tsv", False), ("c.tsv.gz", True), ("gzipped-without-suffix.tsv", True)])
def test_read_tsv_plain_and_gzip(tmp_path, name, gz):
    path = write_bytes(tmp_path / name, tsv_bytes(ROWS), gz=gz)
    corpus = read_tsv(path, 0, 1)
    assert corpus == Corpus([r[0] for r in ROWS], [r[1] for r in ROWS], 0)
    assert len(corpus) == 3


def test_read_tsv_chosen_columns(tmp_path):
    path = write_bytes(tmp_path / "c.tsv.gz", tsv_bytes(ROWS), gz=True)
    corpus = read_tsv(path, source_column=1, target_column=2)
    assert corpus.sources == [r[1] for r in ROWS]
    assert corpus.targets == [r[2] for r in ROWS]
    swapped = read_tsv(path, source_column=1, target_column=0)
    assert swapped.sources == [r[1] for r in ROWS]
    assert swapped.targets == [r[0] for r in ROWS]


def test_read_tsv_strips_crlf_and_spaces(tmp_path):
    path = write_bytes(tmp_path / "c.tsv", b"  Hello. \t\xe3\x82\x84\xe3\x81\x82\r\nBye.\tx\r\n")
    assert read_tsv(path, 0, 1) == Corpus(["Hello.", "Bye."], ["やあ", "x"], 0)


def test_read_tsv_too_few_columns_names_file_and_line(tmp_path):
    path = write_bytes(tmp_path / "c.tsv", tsv_bytes(ROWS[:2]) + b"only two\tcolumns\n" + tsv_bytes(ROWS[2:]))
    with pytest.raises(NmtError) as info:
        read_tsv(path, 0, 2)
    assert str(info.value) == f"{path}:3: expected at least 3 tab-separated columns, found 2"


def test_read_tsv_too_few_columns_in_gzip(tmp_path):
    path = write_bytes(tmp_path / "c.tsv.gz", b"a\tb\nno tab here\n", gz=True)
    with pytest.raises(NmtError) as info:
        read_tsv(path, 0, 1)
    assert f"{path}:2:" in str(info.value)
    assert "found 1" in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_line(tmp_path, gz):
    data = b"a\tb\nc\td\ne\xff\xfe\tf\ng\th\n"
    path = write_bytes(tmp_path / ("c.tsv.gz" if gz else "c.tsv"), data, gz=gz)
    with pytest.raises(NmtError) as info:
        read_tsv(path, 0, 1)
    message = str(info.value)
    assert f"{path}:3:" in message
    assert "invalid UTF-8" in message
    assert message == f"{path}:3: invalid UTF-8 at byte 1 of the line"


def test_read_lines_numbers_from_one(tmp_path):
    path = write_bytes(tmp_path / "t.txt", b"one\ntwo\r\n\nfour")
    assert list(read_lines(path)) == [(1, "one"), (2, "two"), (3, ""), (4, "four")]


def test_missing_file(tmp_path):
    with pytest.raises(NmtError) as info:
        read_tsv(tmp_path / "nope.tsv", 0, 1)
    assert str(info.value).startswith(f"{tmp_path / 'nope.tsv'}: cannot open:")


def test_truncated_gzip(tmp_path):
    full = gzip.compress(tsv_bytes(ROWS * 50))
    path = write_bytes(tmp_path / "c.tsv.gz", full[: len(full) // 2])
    with pytest.raises(NmtError) as info:
        read_tsv(path, 0, 1)
    assert str(info.value).startswith(f"{path}: corrupt or truncated file:")


def test_read_tsv_drops_and_counts_empty_pairs(tmp_path):
    data = b"a\tA\n\n   \n\tB\nc\t  \nd\tD\n"
    path = write_bytes(tmp_path / "c.tsv", data)
    corpus = read_tsv(path, 0, 1)
    assert corpus.sources == ["a", "d"]
    assert corpus.targets == ["A", "D"]
    assert corpus.dropped_empty == 4


def test_read_tsv_limit(tmp_path):
    path = write_bytes(tmp_path / "c.tsv", b"a\tA\n\tempty\nb\tB\nc\tC\nthis line\thas\ttoo\tmany\n")
    corpus = read_tsv(path, 0, 1, limit=2)
    # The limit counts kept examples, not lines; reading stops before the rest of the file.
    assert corpus == Corpus(["a", "b"], ["A", "B"], 1)
    assert read_tsv(path, 0, 1, limit=0) == Corpus([], [], 0)
    # The limit stops reading before a bad line further down.
    bad = write_bytes(tmp_path / "bad.tsv", b"a\tA\nb\tB\nbroken\n")
    assert read_tsv(bad, 0, 1, limit=2).sources == ["a", "b"]
    with pytest.raises(NmtError, match=r":3: expected at least 2"):
        read_tsv(bad, 0, 1, limit=3)


# --- parallel and text -------------------------------------------------------------------------


def test_read_parallel(tmp_path):
    src = write_bytes(tmp_path / "p.en", b"Hello.\n\nGood night.\nYes.\n")
    tgt = write_bytes(tmp_path / "p.ja.gz", "こんにちは。\n空\n\nはい。\n".encode(), gz=True)
    corpus = read_parallel(src, tgt)
    assert corpus == Corpus(["Hello.", "Yes."], ["こんにちは。", "はい。"], 2)
    assert read_parallel(src, tgt, limit=1) == Corpus(["Hello."], ["こんにちは。"], 0)


def test_read_parallel_length_mismatch_names_both_files(tmp_path):
    src = write_bytes(tmp_path / "p.en", b"a\nb\nc\n")
    tgt = write_bytes(tmp_path / "p.ja", b"A\nB\n")
    with pytest.raises(NmtError) as info:
        read_parallel(src, tgt)
    assert str(info.value) == (
        f"parallel files differ in length: {tgt} ends at line 2, {src} goes on at line 3"
    )
    with pytest.raises(NmtError) as info:
        read_parallel(tgt, src)
    assert str(info.value) == (
        f"parallel files differ in length: {tgt} ends at line 2, {src} goes on at line 3"
    )


def test_read_parallel_invalid_utf8_names_file(tmp_path):
    src = write_bytes(tmp_path / "p.en", b"a\nb\nc\n")
    tgt = write_bytes(tmp_path / "p.ja", b"A\nB\n\xc3(\n")
    with pytest.raises(NmtError) as info:
        read_parallel(src, tgt)
    assert str(info.value).startswith(f"{tgt}:3: invalid UTF-8")


def test_read_text(tmp_path):
    path = write_bytes(tmp_path / "t.txt", b" one \n\ntwo\nthree\n")
    assert read_text(path) == Corpus(["one", "two", "three"], None, 1)
    assert read_text(path, limit=2) == Corpus(["one", "two"], None, 1)


def test_read_corpus_dispatches_on_format(tmp_path):
    tsv = write_bytes(tmp_path / "c.tsv", tsv_bytes(ROWS))
    src = write_bytes(tmp_path / "p.en", b"a\nb\n")
    tgt = write_bytes(tmp_path / "p.ja", b"A\nB\n")
    corpus = read_corpus(DataSourceConfig(format="tsv", path=str(tsv), source_column=2, target_column=0, limit=2))
    assert corpus == Corpus(["CC-BY 1", "CC-BY 2"], ["Hello.", "Thank you."], 0)
    corpus = read_corpus(DataSourceConfig(format="parallel", source_path=str(src), target_path=str(tgt)))
    assert corpus == Corpus(["a", "b"], ["A", "B"], 0)
    corpus = read_corpus(DataSourceConfig(format="text", path=str(src)))
    assert corpus == Corpus(["a", "b"], None, 0)


# --- HuggingFace datasets (offline) ------------------------------------------------------------


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import datasets

    # datasets reads these at import time; an earlier test may already have imported it.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    datasets.disable_progress_bars()
    return datasets


def write_jsonl(path: Path, pairs) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for en, ja in pairs:
            handle.write(json.dumps({"translation": {"en": en, "ja": ja}, "id": 0}, ensure_ascii=False) + "\n")
    return path


def test_read_hf_json_offline(tmp_path, hf_offline):
    data = write_jsonl(tmp_path / "train.jsonl", [("Hello.", "こんにちは。"), (" ", "空"), ("Bye. ", " さようなら。")])
    source = DataSourceConfig(
        format="hf",
        path="json",
        data_files=str(data),
        hf_split="train",
        source_field="translation.en",
        target_field="translation.ja",
    )
    assert read_hf(source) == Corpus(["Hello.", "Bye."], ["こんにちは。", "さようなら。"], 1)
    assert read_corpus(source) == read_hf(source)
    source.limit = 1
    assert read_hf(source) == Corpus(["Hello."], ["こんにちは。"], 0)
    assert read_hf(source, with_target=False) == Corpus(["Hello."], None, 0)
    assert (tmp_path / "hf_cache").is_dir()


def test_read_hf_missing_field(tmp_path, hf_offline):
    data = write_jsonl(tmp_path / "train.jsonl", [("Hello.", "こんにちは。")])
    source = DataSourceConfig(format="hf", path="json", data_files=str(data), target_field="translation.fr")
    with pytest.raises(NmtError) as info:
        read_hf(source)
    message = str(info.value)
    assert message.startswith("dataset json record 0: record has no field 'translation.fr'")
    assert "en, ja" in message  # what is available there


def test_read_hf_missing_data_file(tmp_path, hf_offline):
    source = DataSourceConfig(format="hf", path="json", data_files=str(tmp_path / "gone.jsonl"))
    with pytest.raises(NmtError) as info:
        read_hf(source)
    assert str(info.value).startswith("dataset json: cannot load:")
    assert "gone.jsonl" in str(info.value)


def test_read_hf_save_to_disk(tmp_path, hf_offline):
    folder = tmp_path / "saved"
    hf_offline.Dataset.from_dict({"en": ["a cat", "", "a dog"], "ja": ["猫", "x", "犬"]}).save_to_disk(str(folder))
    source = DataSourceConfig(format="hf", path=str(folder), source_field="en", target_field="ja")
    assert read_hf(source) == Corpus(["a cat", "a dog"], ["猫", "犬"], 1)
    with pytest.raises(
        NmtError, match=r"record 0: record has no field 'translation\.en' \(available at 'translation': en, ja\)"
    ):
        read_hf(DataSourceConfig(format="hf", path=str(folder)))


def test_read_hf_non_string_field(tmp_path, hf_offline):
    folder = tmp_path / "saved"
    hf_offline.Dataset.from_dict({"en": ["a"], "ja": [3]}).save_to_disk(str(folder))
    with pytest.raises(NmtError, match=r"record 0: fields must be strings"):
        read_hf(DataSourceConfig(format="hf", path=str(folder), source_field="en", target_field="ja"))


def test_read_hf_dataset_dict_split(tmp_path, hf_offline):
    folder = tmp_path / "dd"
    hf_offline.DatasetDict(
        {
            "train": hf_offline.Dataset.from_dict({"en": ["a", "b"], "ja": ["A", "B"]}),
            "validation": hf_offline.Dataset.from_dict({"en": ["c"], "ja": ["C"]}),
        }
    ).save_to_disk(str(folder))
    source = DataSourceConfig(
        format="hf", path=str(folder), hf_split="validation", source_field="en", target_field="ja"
    )
    assert read_hf(source) == Corpus(["c"], ["C"], 0)


# --- pipeline: encode_corpus -------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_tok() -> Tokenizer:
    rng = random.Random(0)
    words = "the a cat dog sees likes big small red house tree".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(200)]
    return Tokenizer.train(texts, model_type="word", vocab_size=50)


def test_encode_corpus_drops_and_counts_too_long(word_tok):
    from nmt.pipeline import encode_corpus

    sources = ["the cat", "the big red cat", "a dog", "a big dog sees the cat", "", "tree"]
    targets = ["a dog", "a cat", "the big red house", "the tree", "the cat", "the small tree"]
    # Word model: one id per known word, so the lengths are the word counts.
    assert [len(x) for x in word_tok.encode(sources)] == [2, 4, 2, 6, 0, 1]
    assert UNK_ID not in sum(word_tok.encode(sources + targets), [])
    encoded = encode_corpus(sources, targets, word_tok, word_tok, max_source_length=4, max_target_length=4)
    # Kept: 0 (2 / 2+EOS), 1 (4 / 2+EOS), 5 (1 / 3+EOS). Dropped: 2 (target 4+EOS > 4),
    # 3 (source 6 > 4), 4 (empty source).
    assert encoded.dropped_too_long == 3
    assert len(encoded) == 3
    assert encoded.source_lengths.tolist() == [2, 4, 1]
    assert encoded.target_lengths.tolist() == [2, 2, 3]
    kept = [0, 1, 5]
    assert encoded.source_values.tolist() == sum(word_tok.encode([sources[i] for i in kept]), [])
    assert encoded.target_values.tolist() == sum(word_tok.encode([targets[i] for i in kept]), [])
    assert encoded.source_values.dtype == np.int32 and encoded.target_lengths.dtype == np.int32


def test_encode_corpus_limit_is_inclusive(word_tok):
    from nmt.pipeline import encode_corpus

    def kept(max_source, max_target):
        encoded = encode_corpus(["the cat dog"], ["a big"], word_tok, word_tok, max_source, max_target)
        assert len(encoded) + encoded.dropped_too_long == 1
        return len(encoded)

    assert kept(3, 3) == 1  # source 3 <= 3, target 2 + EOS <= 3
    assert kept(2, 3) == 0  # source 3 > 2
    assert kept(3, 2) == 0  # target 2 + EOS > 2


def test_encode_corpus_drops_target_without_tokens(word_tok):
    from nmt.pipeline import encode_corpus

    assert word_tok.encode(["\u200b"]) == [[]]
    encoded = encode_corpus(["the cat", "a dog"], ["\u200b", "the dog"], word_tok, word_tok, 10, 10)
    assert encoded.target_lengths.tolist() == [2]
    assert encoded.dropped_too_long == 1


def word_pairs(n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = "the a cat dog sees likes big small red house tree".split()
    sentence = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))  # noqa: E731
    return [sentence() for _ in range(n)], [sentence() for _ in range(n)]


def test_token_cache_streams_the_same_batches_as_memory(word_tok, tmp_path, monkeypatch):
    from nmt import pipeline

    # Small chunks and files, so that the corpus spans several records and files.
    monkeypatch.setattr(pipeline, "CHUNK_EXAMPLES", 7)
    monkeypatch.setattr(pipeline, "RECORDS_PER_FILE", 3)
    sources, targets = word_pairs(100)

    def encode(s, t):
        return pipeline.encode_corpus(s, t, word_tok, word_tok, max_source_length=6, max_target_length=6)

    in_memory = encode(sources, targets)
    cache = pipeline.build_token_cache(tmp_path / "cache", zip(sources, targets), encode)
    assert len(cache.files) == 5 and len(cache) == len(in_memory)
    assert cache.dropped_too_long == in_memory.dropped_too_long
    assert pipeline.TokenCache.load(tmp_path / "cache") == cache
    back = cache.to_corpus()
    for name in ("source_values", "source_lengths", "target_values", "target_lengths"):
        np.testing.assert_array_equal(getattr(back, name), getattr(in_memory, name))
    # Shuffled, bucketed, repeated: batch for batch the same (order, padding, bucket sizes).
    options = dict(batch_size=8, bucket_width=2, shuffle_buffer=30, seed=5)
    streamed = batches(pipeline.make_dataset(cache, **options).take(40))
    expected = batches(pipeline.make_dataset(in_memory, **options).take(40))
    for a, b in zip(streamed, expected, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_token_cache_is_written_whole_or_not_at_all(word_tok, tmp_path):
    from nmt import pipeline

    sources, targets = word_pairs(50_000)
    calls = []

    def failing_encode(s, t):
        calls.append(len(s))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return pipeline.encode_corpus(s, t, word_tok, word_tok, 10, 10)

    with pytest.raises(KeyboardInterrupt):
        pipeline.build_token_cache(tmp_path / "cache", zip(sources, targets), failing_encode)
    assert list(tmp_path.iterdir()) == [] and pipeline.TokenCache.load(tmp_path / "cache") is None


# --- pipeline: make_dataset --------------------------------------------------------------------


def synthetic_corpus(n: int = 200, max_len: int = 20, seed: int = 0):
    """Distinct pairs of random ids >= 4 (never a special id), lengths 1..max_len."""
    from nmt.pipeline import EncodedCorpus

    rng = random.Random(seed)
    sources, targets = [], []
    for i in range(n):
        source = [4 + i] + [rng.randint(4, 99) for _ in range(rng.randint(0, max_len - 1))]
        target = [rng.randint(4, 99) for _ in range(rng.randint(1, max_len))]
        sources.append(source)
        targets.append(target)
    flat = lambda xs: np.array([i for x in xs for i in x], dtype=np.int32)  # noqa: E731
    lengths = lambda xs: np.array([len(x) for x in xs], dtype=np.int32)  # noqa: E731
    corpus = EncodedCorpus(flat(sources), lengths(sources), flat(targets), lengths(targets))
    return corpus, sources, targets


def batches(dataset):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


def unpad(batch):
    """-> list of (source, target) id tuples, checking the layout of every row."""
    pairs = []
    for row in range(batch["source"].shape[0]):
        n = int(batch["source_length"][row])
        source = batch["source"][row]
        assert n >= 1 and (source[:n] != PAD_ID).all() and (source[n:] == PAD_ID).all()
        target_out = batch["target_out"][row]
        target_in = batch["target_in"][row]
        m = int((target_out != PAD_ID).sum())  # target length + 1 (EOS)
        assert (target_out[m:] == PAD_ID).all() and (target_in[m:] == PAD_ID).all()
        assert target_out[m - 1] == EOS_ID
        assert EOS_ID not in target_out[: m - 1]
        assert target_in[0] == BOS_ID
        np.testing.assert_array_equal(target_in[1:m], target_out[: m - 1])
        pairs.append((tuple(source[:n].tolist()), tuple(target_out[: m - 1].tolist())))
    return pairs


def test_bucket_boundaries():
    from nmt.pipeline import bucket_boundaries

    assert bucket_boundaries(10, 4) == [5, 9, 13]
    assert bucket_boundaries(8, 4) == [5, 9]
    assert bucket_boundaries(3, 1) == [2, 3, 4]


def test_make_dataset_layout_and_every_pair_once():
    from nmt.pipeline import make_dataset

    corpus, sources, targets = synthetic_corpus()
    result = batches(make_dataset(corpus, batch_size=16, bucket_width=4, repeat=False, shuffle=False))
    seen = []
    for batch in result:
        assert set(batch) == {"source", "source_length", "target_in", "target_out"}
        assert all(v.dtype == np.int32 for v in batch.values())
        assert batch["source"].shape[0] == batch["target_in"].shape[0] == batch["source_length"].shape[0]
        assert batch["target_in"].shape == batch["target_out"].shape
        assert batch["source"].shape[0] <= 16
        seen.extend(unpad(batch))
    expected = [(tuple(s), tuple(t)) for s, t in zip(sources, targets)]
    assert collections.Counter(seen) == collections.Counter(expected)
    assert len(seen) == len(expected) == 200


def test_make_dataset_buckets_by_longer_side():
    from nmt.pipeline import make_dataset

    width = 4
    corpus, _, _ = synthetic_corpus()
    result = batches(make_dataset(corpus, batch_size=8, bucket_width=width, repeat=False, shuffle=False))
    assert len(result) > 200 // 8  # several buckets, so more batches than a plain split
    for batch in result:
        # The bucketing length is max(source length, target length + 1) = max(source, target_in).
        target_in_lengths = (batch["target_in"] != PAD_ID).sum(axis=1)
        lengths = np.maximum(batch["source_length"], target_in_lengths)
        assert lengths.max() - lengths.min() < width
        # Buckets are [1, 5), [5, 9), ...: all lengths of a batch fall in the same one.
        assert len({(int(n) - 1) // width for n in lengths}) == 1
        # Padding goes no further than the longest row.
        assert batch["source"].shape[1] == batch["source_length"].max()
        assert batch["target_in"].shape[1] == target_in_lengths.max()


def test_make_dataset_pads_to_the_bucket_bound_for_xla():
    """pad_to_bucket (used with train.jit_compile): one shape per bucket, same rows as without."""
    from nmt.pipeline import bucket_boundaries, make_dataset

    corpus, _, _ = synthetic_corpus()
    options = dict(batch_size=8, bucket_width=4, repeat=False, shuffle=False)
    padded = batches(make_dataset(corpus, pad_to_bucket=True, **options))
    plain = batches(make_dataset(corpus, **options))
    bounds = bucket_boundaries(int(max(corpus.source_lengths.max(), corpus.target_lengths.max() + 1)), 4)
    assert {b["source"].shape[1] for b in padded} <= {bound - 1 for bound in bounds}
    assert len({(b["source"].shape[1], b["target_in"].shape[1]) for b in padded}) < len(
        {(b["source"].shape[1], b["target_in"].shape[1]) for b in plain})
    for a, b in zip(padded, plain):
        assert a["source"].shape[1] == a["target_in"].shape[1] == a["target_out"].shape[1]
        np.testing.assert_array_equal(a["source"][:, : b["source"].shape[1]], b["source"])
        np.testing.assert_array_equal(a["target_out"][:, : b["target_out"].shape[1]], b["target_out"])
        assert not a["source"][:, b["source"].shape[1]:].any() and not a["target_in"][:, b["target_in"].shape[1]:].any()


def test_make_dataset_source_only_bucketing_when_targets_short():
    """With all targets of length 1, buckets group the source lengths themselves."""
    from nmt.pipeline import EncodedCorpus, make_dataset

    rng = random.Random(1)
    lengths = [rng.randint(1, 30) for _ in range(120)]
    corpus = EncodedCorpus(
        np.full(sum(lengths), 7, dtype=np.int32),
        np.array(lengths, dtype=np.int32),
        np.full(120, 9, dtype=np.int32),
        np.ones(120, dtype=np.int32),
    )
    result = batches(make_dataset(corpus, batch_size=10, bucket_width=3, repeat=False, shuffle=False))
    assert sum(b["source"].shape[0] for b in result) == 120
    for batch in result:
        assert batch["source_length"].max() - batch["source_length"].min() < 3


def test_make_dataset_batch_tokens_bounds_padded_size():
    from nmt.pipeline import make_dataset

    corpus, sources, targets = synthetic_corpus()
    budget = 40
    result = batches(
        make_dataset(corpus, batch_size=1, batch_tokens=budget, bucket_width=4, repeat=False, shuffle=False)
    )
    seen = []
    for batch in result:
        rows, width = batch["target_in"].shape
        assert rows * width <= budget
        seen.extend(unpad(batch))
    assert collections.Counter(seen) == collections.Counter((tuple(s), tuple(t)) for s, t in zip(sources, targets))
    # Short sentences come in bigger batches than long ones.
    short = max(b["target_in"].shape[0] for b in result if b["target_in"].shape[1] <= 4)
    long = max(b["target_in"].shape[0] for b in result if b["target_in"].shape[1] >= 17)
    assert short > long


def test_make_dataset_shuffle_still_yields_every_pair_once():
    from nmt.pipeline import make_dataset

    corpus, sources, targets = synthetic_corpus(n=60)
    plain = [p for b in batches(make_dataset(corpus, 8, repeat=False, shuffle=False)) for p in unpad(b)]
    shuffled = [p for b in batches(make_dataset(corpus, 8, repeat=False, shuffle=True, seed=3)) for p in unpad(b)]
    assert collections.Counter(shuffled) == collections.Counter(plain)
    assert len(shuffled) == 60
    assert shuffled != plain


def test_make_dataset_repeat_goes_on():
    from nmt.pipeline import make_dataset

    corpus, _, _ = synthetic_corpus(n=20)
    rows = sum(b["source"].shape[0] for b in batches(make_dataset(corpus, 4, repeat=True, shuffle=True).take(20)))
    assert rows > 20


def test_make_dataset_from_encoded_text(word_tok):
    from nmt.pipeline import encode_corpus, make_dataset

    sources = ["the cat", "a big dog", "the red house", "tree"]
    targets = ["a cat", "the dog", "house", "the big tree"]
    encoded = encode_corpus(sources, targets, word_tok, word_tok, 10, 10)
    result = batches(make_dataset(encoded, batch_size=8, repeat=False, shuffle=False))
    pairs = [p for b in result for p in unpad(b)]
    decoded = sorted((word_tok.decode(s), word_tok.decode(t)) for s, t in pairs)
    assert decoded == sorted(zip(sources, targets))
    assert all(UNK_ID not in s + t for s, t in pairs)


def test_pad_batch():
    from nmt.pipeline import pad_batch

    batch, lengths = pad_batch([[5, 6, 7], [8], []])
    np.testing.assert_array_equal(batch, [[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    assert batch.dtype == np.int32 and lengths.dtype == np.int32
    empty, _ = pad_batch([[], []])
    assert empty.shape == (2, 1)

"""Token ids -> ``tf.data`` training batches: bucketed by length, shuffled, prefetched.

Tokenization happens once (SentencePiece's C++ batch encoder, a chunk of the corpus at a time) into
a :class:`TokenCache` on disk, which training streams from: memory does not grow with the corpus.
Small sets (dev, tests) stay in memory as an :class:`EncodedCorpus`; both give the same batches.
After tokenization every per-step operation is a TensorFlow op.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

from nmt.constants import BOS_ID, EOS_ID, PAD_ID
from nmt.tokenizer import Tokenizer


@dataclasses.dataclass
class EncodedCorpus:
    """Token ids of a corpus in memory as flat arrays (values + lengths)."""

    source_values: np.ndarray
    source_lengths: np.ndarray
    target_values: np.ndarray
    target_lengths: np.ndarray
    dropped_too_long: int = 0

    def __len__(self) -> int:
        return len(self.source_lengths)


def _flatten(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
    values = np.fromiter((i for x in ids for i in x), dtype=np.int32, count=int(lengths.sum()))
    return values, lengths


def encode_corpus(
    sources: list[str],
    targets: list[str],
    source_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    max_source_length: int,
    max_target_length: int,
) -> EncodedCorpus:
    """Tokenizes pairs and drops those longer than the limits, or with a side that tokenizes to
    nothing (the count is kept for reporting).

    The target limit counts the EOS token the model appends.
    """
    source_ids = source_tokenizer.encode(sources)
    target_ids = target_tokenizer.encode(targets)
    keep = [
        i
        for i, (s, t) in enumerate(zip(source_ids, target_ids))
        if 0 < len(s) <= max_source_length and 0 < len(t) and len(t) + 1 <= max_target_length
    ]
    source_values, source_lengths = _flatten([source_ids[i] for i in keep])
    target_values, target_lengths = _flatten([target_ids[i] for i in keep])
    return EncodedCorpus(
        source_values, source_lengths, target_values, target_lengths, dropped_too_long=len(sources) - len(keep)
    )


def encode_texts(texts: list[str], tokenizer: Tokenizer, max_length: int | None = None) -> EncodedCorpus:
    """Language-model lines -> an :class:`EncodedCorpus` with empty sources (the translation
    pipeline then batches them unchanged). With ``max_length`` (counting EOS), longer or empty lines
    are dropped and counted; without, every line is kept (running text, evaluation)."""
    ids = tokenizer.encode(texts)
    if max_length is not None:
        ids = [x for x in ids if 0 < len(x) and len(x) + 1 <= max_length]
    values, lengths = _flatten(ids)
    empty = np.zeros(len(ids), np.int32)
    return EncodedCorpus(np.zeros(0, np.int32), empty, values, lengths, dropped_too_long=len(texts) - len(ids))


@dataclasses.dataclass
class TokenCache:
    """A tokenized corpus on disk: TFRecord files whose records each hold a chunk of examples as
    flat id arrays (``source_values``, ``source_lengths``, ``target_values``, ``target_lengths``),
    in corpus order, and ``meta.json`` with the counts. Read back a chunk at a time."""

    path: Path
    examples: int
    max_source_length: int
    max_target_length: int
    dropped_too_long: int = 0

    META = "meta.json"

    def __len__(self) -> int:
        return self.examples

    @property
    def files(self) -> list[str]:
        return sorted(str(p) for p in self.path.glob("part-*.tfrecord"))

    @classmethod
    def load(cls, path: Path) -> TokenCache | None:
        """The cache at ``path``, or None if there is none (a cache is complete or absent)."""
        meta = path / cls.META
        if not meta.is_file():
            return None
        return cls(path=path, **json.loads(meta.read_text(encoding="utf-8")))

    def chunks(self) -> tf.data.Dataset:
        """(source, target) ragged [chunk, None] int32 per record, in corpus order."""
        features = {name: tf.io.RaggedFeature(tf.int64) for name in _CHUNK_FIELDS}

        def parse(record: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
            chunk = {k: tf.cast(v, tf.int32) for k, v in tf.io.parse_single_example(record, features).items()}
            return (tf.RaggedTensor.from_row_lengths(chunk["source_values"], chunk["source_lengths"]),
                    tf.RaggedTensor.from_row_lengths(chunk["target_values"], chunk["target_lengths"]))

        return tf.data.TFRecordDataset(self.files).map(parse)

    def to_corpus(self) -> EncodedCorpus:
        """The whole corpus in memory (running text, whose token stream is laid out at once)."""
        parts: dict[str, list[np.ndarray]] = {name: [] for name in _CHUNK_FIELDS}
        for source, target in self.chunks():
            for prefix, ragged in (("source", source), ("target", target)):
                parts[f"{prefix}_values"].append(ragged.flat_values.numpy())
                parts[f"{prefix}_lengths"].append(ragged.row_lengths().numpy().astype(np.int32))
        arrays = {k: np.concatenate(v) if v else np.zeros(0, np.int32) for k, v in parts.items()}
        return EncodedCorpus(**arrays, dropped_too_long=self.dropped_too_long)


_CHUNK_FIELDS = ("source_values", "source_lengths", "target_values", "target_lengths")
CHUNK_EXAMPLES = 20_000  # examples tokenized, and stored per record, at a time
RECORDS_PER_FILE = 50  # 1M examples per TFRecord file


def build_token_cache(
    path: Path,
    examples: Iterable[tuple[str, str | None]],
    encode: Callable[[list[str], list[str | None]], EncodedCorpus],
    progress: Callable[[int], None] | None = None,
) -> TokenCache:
    """Tokenizes ``examples`` a chunk at a time with ``encode`` (which also filters by length:
    :func:`encode_corpus` or :func:`encode_texts`) into a :class:`TokenCache` at ``path``. Written
    under a temporary name and renamed when complete: an interrupted run leaves no half cache."""
    staging = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    totals = {"examples": 0, "max_source_length": 0, "max_target_length": 0, "dropped_too_long": 0}
    writer, records, files = None, 0, 0

    def write(sources: list[str], targets: list[str | None]) -> None:
        nonlocal writer, records, files
        chunk = encode(sources, targets)
        if records % RECORDS_PER_FILE == 0:
            if writer is not None:
                writer.close()
            writer = tf.io.TFRecordWriter(str(staging / f"part-{files:05d}.tfrecord"))
            files += 1
        feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=getattr(chunk, name).tolist()))
                   for name in _CHUNK_FIELDS}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        records += 1
        totals["examples"] += len(chunk)
        totals["dropped_too_long"] += chunk.dropped_too_long
        totals["max_source_length"] = max(totals["max_source_length"], int(chunk.source_lengths.max(initial=0)))
        totals["max_target_length"] = max(totals["max_target_length"], int(chunk.target_lengths.max(initial=0)))
        if progress:
            progress(len(sources))

    try:
        sources: list[str] = []
        targets: list[str | None] = []
        for source, target in examples:
            sources.append(source)
            targets.append(target)
            if len(sources) == CHUNK_EXAMPLES:
                write(sources, targets)
                sources, targets = [], []
        if sources or not records:
            write(sources, targets)
        writer.close()
        (staging / TokenCache.META).write_text(json.dumps(totals), encoding="utf-8")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TokenCache(path=path, **totals)


def token_stream(corpus: EncodedCorpus) -> np.ndarray:
    """Lines as one stream of running text: EOS, line 1, EOS, line 2, EOS, ... (the leading EOS is
    the "previous line ended" context of the first token, so every token and every line end is
    predicted once)."""
    lengths = corpus.target_lengths.astype(np.int64)
    stream = np.full(int(lengths.sum()) + len(lengths) + 1, EOS_ID, dtype=np.int32)
    line_of_token = np.repeat(np.arange(len(lengths)), lengths)
    stream[np.arange(len(corpus.target_values)) + line_of_token + 1] = corpus.target_values
    return stream


def make_stream_dataset(stream: np.ndarray, streams: int, steps: int, repeat: bool = True) -> tf.data.Dataset:
    """Truncated-BPTT batches over running text: ``{"target_in", "target_out"}`` [streams, steps]
    and ``"first"`` (true for the first window of a pass, where the carried state restarts).

    The stream is cut into ``streams`` contiguous parts read side by side, ``steps`` tokens at a
    time, so row r of batch i+1 continues row r of batch i. The tail is padded (PAD targets are not
    scored): every token is predicted exactly once per pass.
    """
    predictions = len(stream) - 1
    per_stream = -(-predictions // streams)
    windows = -(-per_stream // steps)
    width = windows * steps

    def lay_out(values: np.ndarray) -> np.ndarray:
        padded = np.full(streams * per_stream, PAD_ID, np.int32)
        padded[: len(values)] = values
        rows = np.full((streams, width), PAD_ID, np.int32)
        rows[:, :per_stream] = padded.reshape(streams, per_stream)
        return rows.reshape(streams, windows, steps).transpose(1, 0, 2)  # [windows, streams, steps]

    inputs, targets = lay_out(stream[:-1]), lay_out(stream[1:])
    first = np.arange(windows) == 0
    dataset = tf.data.Dataset.from_tensor_slices({"target_in": inputs, "target_out": targets, "first": first})
    if repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


def bucket_boundaries(max_length: int, width: int) -> list[int]:
    """Upper bounds (exclusive) of the length buckets: width+1, 2*width+1, ... past max_length."""
    return list(range(width + 1, max_length + width + 1, width))


def make_dataset(
    corpus: EncodedCorpus | TokenCache,
    batch_size: int,
    batch_tokens: int | None = None,
    bucket_width: int = 4,
    shuffle_buffer: int = 100_000,
    seed: int = 1234,
    repeat: bool = True,
    shuffle: bool = True,
    pad_to_bucket: bool = False,
) -> tf.data.Dataset:
    """Batches of ``{"source", "source_length", "target_in", "target_out"}``, int32, 0-padded.

    ``target_in`` is BOS + target, ``target_out`` is target + EOS. Pairs go to buckets by their
    longer side, so a batch holds sentences of similar length and little compute goes to padding.
    With ``batch_tokens``, each bucket's batch size is chosen so a batch holds about that many
    target tokens (long sentences, small batches). ``pad_to_bucket`` pads source and target to their
    bucket's upper length: a few shapes for XLA to compile, instead of one per pair of lengths.

    An in-memory :class:`EncodedCorpus` and the same examples in a :class:`TokenCache` (read from
    disk a chunk at a time; memory is the shuffle buffer, not the corpus) give the same batches.
    """
    if isinstance(corpus, TokenCache):
        dataset = corpus.chunks().flat_map(lambda source, target: tf.data.Dataset.from_tensor_slices((source, target)))
        max_length = max(corpus.max_source_length, corpus.max_target_length + 1, 1)
    else:
        source = tf.RaggedTensor.from_row_lengths(corpus.source_values, corpus.source_lengths)
        target = tf.RaggedTensor.from_row_lengths(corpus.target_values, corpus.target_lengths)
        dataset = tf.data.Dataset.from_tensor_slices((source, target))
        max_length = int(max(corpus.source_lengths.max(initial=1), corpus.target_lengths.max(initial=0) + 1))
    if shuffle:
        dataset = dataset.shuffle(max(1, min(shuffle_buffer, len(corpus))), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def to_example(src: tf.Tensor, tgt: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "source": src,
            "source_length": tf.shape(src)[0],
            "target_in": tf.concat([[BOS_ID], tgt], axis=0),
            "target_out": tf.concat([tgt, [EOS_ID]], axis=0),
        }

    dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    boundaries = bucket_boundaries(max_length, bucket_width)
    if batch_tokens:
        sizes = [max(1, batch_tokens // (b - 1)) for b in boundaries] + [max(1, batch_tokens // max_length)]
    else:
        sizes = [batch_size] * (len(boundaries) + 1)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda ex: tf.maximum(ex["source_length"], tf.shape(ex["target_in"])[0]),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=sizes,
        padding_values={"source": PAD_ID, "source_length": 0, "target_in": PAD_ID, "target_out": PAD_ID},
        drop_remainder=False,
        pad_to_bucket_boundary=pad_to_bucket,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def pad_batch(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> (int32 [batch, max_len] zero-padded, int32 lengths) for inference."""
    lengths = np.array([len(x) for x in ids], dtype=np.int32)
    batch = np.full((len(ids), max(1, int(lengths.max(initial=1)))), PAD_ID, dtype=np.int32)
    for row, x in enumerate(ids):
        batch[row, : len(x)] = x
    return batch, lengths

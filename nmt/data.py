"""Corpus readers: TSV (plain or gzip), parallel files, plain text, HuggingFace ``datasets``.

Each reader returns a :class:`Corpus` of raw (untokenized) strings. Bad data is an error that names
the file and the line; empty examples are dropped and counted, never silently.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from nmt.config import DataSourceConfig
from nmt.errors import NmtError


@dataclasses.dataclass
class Corpus:
    sources: list[str]
    targets: list[str] | None  # None for a language-model corpus (one text per example)
    dropped_empty: int = 0

    def __len__(self) -> int:
        return len(self.sources)


def _open_binary(path: Path):
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except OSError as error:
        raise NmtError(f"{path}: cannot open: {error.strerror or error}") from None


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, text without the line break); gzip is detected by content."""
    path = Path(path)
    with _open_binary(path) as handle:
        try:
            yield from decode_lines(handle, str(path))
        except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as error:
            raise NmtError(f"{path}: corrupt or truncated file: {error}") from None


def decode_lines(handle: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """Decodes a binary stream line by line (only \\n separates lines); errors name ``name:line``."""
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise NmtError(f"{name}:{number}: invalid UTF-8 at byte {error.start} of the line") from None
        yield number, text.rstrip("\r\n")


# A reader yields (source, target) for each kept example and None for each dropped empty one.
Examples = Iterator["tuple[str, str | None] | None"]


def _tsv_examples(path: str | Path, source_column: int, target_column: int | None) -> Examples:
    """Tab-separated columns; ``target_column`` None reads the source column only."""
    need = max(source_column, target_column if target_column is not None else -1) + 1
    for number, line in read_lines(path):
        if not line.strip():
            yield None
            continue
        columns = line.split("\t")
        if len(columns) < need:
            raise NmtError(
                f"{path}:{number}: expected at least {need} tab-separated columns, found {len(columns)}"
            )
        source = columns[source_column].strip()
        target = columns[target_column].strip() if target_column is not None else None
        yield (source, target) if source and target != "" else None


def _parallel_examples(source_path: str | Path, target_path: str | Path) -> Examples:
    source_lines, target_lines = read_lines(source_path), read_lines(target_path)
    while True:
        source_item = next(source_lines, None)
        target_item = next(target_lines, None)
        if source_item is None and target_item is None:
            return
        if source_item is None or target_item is None:
            longer, shorter = (target_path, source_path) if source_item is None else (source_path, target_path)
            number = (target_item or source_item)[0]
            raise NmtError(
                f"parallel files differ in length: {shorter} ends at line {number - 1}, "
                f"{longer} goes on at line {number}"
            )
        source, target = source_item[1].strip(), target_item[1].strip()
        yield (source, target) if source and target else None


def _text_examples(path: str | Path, keep_empty: bool) -> Examples:
    """One text per line, stripped. ``keep_empty`` keeps blank lines (as ""): in running text
    (a language model's stream) they are paragraph breaks."""
    for _, line in read_lines(path):
        text = line.strip()
        yield (text, None) if text or keep_empty else None


def _field(record: dict[str, Any], dotted: str, where: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            keys = ", ".join(value) if isinstance(value, dict) else type(value).__name__
            raise NmtError(f"{where}: record has no field {dotted!r} (available at {part!r}: {keys})")
        value = value[part]
    return value


def _hf_examples(source: DataSourceConfig, with_target: bool) -> Examples:
    """A HuggingFace dataset: a folder written by ``save_to_disk``, a local builder (``path: json``
    with ``data_files``), or a hub name when online. Both are memory-mapped Arrow tables, read a
    record at a time."""
    import datasets

    where = f"dataset {source.path}"
    try:
        if Path(str(source.path)).is_dir() and (Path(str(source.path)) / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(str(source.path))
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded[source.hf_split]
        else:
            loaded = datasets.load_dataset(
                str(source.path), name=source.hf_config, split=source.hf_split, data_files=source.data_files
            )
    except (FileNotFoundError, ValueError, ConnectionError, KeyError) as error:
        raise NmtError(f"{where}: cannot load: {error}") from None
    for index, record in enumerate(loaded):
        text = _field(record, source.source_field, f"{where} record {index}")
        target = _field(record, source.target_field, f"{where} record {index}") if with_target else None
        if not isinstance(text, str) or not isinstance(target, str | None):
            raise NmtError(f"{where} record {index}: fields must be strings")
        if not text.strip() or (with_target and not target.strip()):
            yield None
            continue
        yield text.strip(), target.strip() if with_target else None


_END = object()


class CorpusStream:
    """One configured split read lazily, an example at a time (memory does not grow with the
    corpus): iterating yields (source, target) pairs (target None for a language model) up to
    ``source.limit``, and counts the empty examples dropped on the way in ``dropped_empty``.
    Each iteration reads the files again from the start.

    A language model reads the source side only (``with_target`` False: no target field needed
    from a HuggingFace dataset) and may keep the blank lines of a text file (``keep_empty``).
    """

    def __init__(self, source: DataSourceConfig, with_target: bool = True, keep_empty: bool = False) -> None:
        if source.format not in ("tsv", "parallel", "text", "hf"):
            raise NmtError(f"unknown data format {source.format!r}")
        self.source, self.with_target, self.keep_empty = source, with_target, keep_empty
        self.dropped_empty = 0

    def _examples(self) -> Examples:
        source = self.source
        if source.format == "tsv":
            return _tsv_examples(source.path, source.source_column, source.target_column if self.with_target else None)
        if source.format == "parallel":
            return _parallel_examples(source.source_path, source.target_path)
        if source.format == "text":
            return _text_examples(source.path, self.keep_empty)
        return _hf_examples(source, self.with_target)

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        self.dropped_empty, kept = 0, 0
        examples = self._examples()
        # The limit is checked before reading on: lines past it are never parsed.
        while self.source.limit is None or kept < self.source.limit:
            example = next(examples, _END)
            if example is _END:
                return
            if example is None:
                self.dropped_empty += 1
                continue
            kept += 1
            yield example


def read_corpus(source: DataSourceConfig, with_target: bool = True, keep_empty: bool = False) -> Corpus:
    """A split read whole into memory (dev sets, small corpora): see :class:`CorpusStream`."""
    stream = CorpusStream(source, with_target, keep_empty)
    pairs = list(stream)
    targets = [t for _, t in pairs] if with_target and source.format != "text" else None
    return Corpus([s for s, _ in pairs], targets, stream.dropped_empty)


# Shorthands for one file or pair of files (as in an experiment file's data section).


def read_tsv(path: str | Path, source_column: int, target_column: int | None, limit: int | None = None) -> Corpus:
    """Tab-separated columns; ``target_column`` None reads the source column only (targets None)."""
    source = DataSourceConfig(format="tsv", path=str(path), source_column=source_column,
                              target_column=target_column if target_column is not None else 1, limit=limit)
    return read_corpus(source, with_target=target_column is not None)


def read_parallel(source_path: str | Path, target_path: str | Path, limit: int | None = None) -> Corpus:
    return read_corpus(DataSourceConfig(format="parallel", source_path=str(source_path),
                                        target_path=str(target_path), limit=limit))


def read_text(path: str | Path, limit: int | None = None, keep_empty: bool = False) -> Corpus:
    return read_corpus(DataSourceConfig(format="text", path=str(path), limit=limit), False, keep_empty)


def read_hf(source: DataSourceConfig, with_target: bool = True) -> Corpus:
    return read_corpus(source, with_target)

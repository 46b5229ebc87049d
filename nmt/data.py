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


def _take(limit: int | None, count: int) -> bool:
    return limit is None or count < limit


def read_tsv(path: str | Path, source_column: int, target_column: int | None, limit: int | None = None) -> Corpus:
    """Tab-separated columns; ``target_column`` None reads the source column only (targets None)."""
    need = max(source_column, target_column if target_column is not None else -1) + 1
    sources, targets, dropped = [], [], 0
    for number, line in read_lines(path):
        if not _take(limit, len(sources)):
            break
        if not line.strip():
            dropped += 1
            continue
        columns = line.split("\t")
        if len(columns) < need:
            raise NmtError(
                f"{path}:{number}: expected at least {need} tab-separated columns, found {len(columns)}"
            )
        source = columns[source_column].strip()
        target = columns[target_column].strip() if target_column is not None else "-"
        if not source or not target:
            dropped += 1
            continue
        sources.append(source)
        targets.append(target)
    return Corpus(sources, targets if target_column is not None else None, dropped)


def read_parallel(source_path: str | Path, target_path: str | Path, limit: int | None = None) -> Corpus:
    sources, targets, dropped = [], [], 0
    source_lines, target_lines = read_lines(source_path), read_lines(target_path)
    while True:
        source_item = next(source_lines, None)
        target_item = next(target_lines, None)
        if source_item is None and target_item is None:
            break
        if source_item is None or target_item is None:
            longer, shorter = (target_path, source_path) if source_item is None else (source_path, target_path)
            number = (target_item or source_item)[0]
            raise NmtError(
                f"parallel files differ in length: {shorter} ends at line {number - 1}, "
                f"{longer} goes on at line {number}"
            )
        if not _take(limit, len(sources)):
            break
        source, target = source_item[1].strip(), target_item[1].strip()
        if not source or not target:
            dropped += 1
            continue
        sources.append(source)
        targets.append(target)
    return Corpus(sources, targets, dropped)


def read_text(path: str | Path, limit: int | None = None, keep_empty: bool = False) -> Corpus:
    """One text per line, stripped. ``keep_empty`` keeps blank lines (as ""): in running text
    (a language model's stream) they are paragraph breaks."""
    texts, dropped = [], 0
    for _, line in read_lines(path):
        if not _take(limit, len(texts)):
            break
        if not line.strip() and not keep_empty:
            dropped += 1
            continue
        texts.append(line.strip())
    return Corpus(texts, None, dropped)


def _field(record: dict[str, Any], dotted: str, where: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            keys = ", ".join(value) if isinstance(value, dict) else type(value).__name__
            raise NmtError(f"{where}: record has no field {dotted!r} (available at {part!r}: {keys})")
        value = value[part]
    return value


def read_hf(source: DataSourceConfig, with_target: bool = True) -> Corpus:
    """Reads a HuggingFace dataset: a folder written by ``save_to_disk``, a local builder
    (``path: json`` with ``data_files``), or a hub name when online."""
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
    sources, targets, dropped = [], [], 0
    for index, record in enumerate(loaded):
        if not _take(source.limit, len(sources)):
            break
        text = _field(record, source.source_field, f"{where} record {index}")
        target = _field(record, source.target_field, f"{where} record {index}") if with_target else ""
        if not isinstance(text, str) or not isinstance(target, str):
            raise NmtError(f"{where} record {index}: fields must be strings")
        if not text.strip() or (with_target and not target.strip()):
            dropped += 1
            continue
        sources.append(text.strip())
        targets.append(target.strip())
    return Corpus(sources, targets if with_target else None, dropped)


def read_corpus(source: DataSourceConfig, with_target: bool = True, keep_empty: bool = False) -> Corpus:
    """Reads one configured split. A language model reads the source side only (``with_target``
    False: no target field needed from a HuggingFace dataset) and may keep the blank lines of a
    text file (``keep_empty``)."""
    if source.format == "tsv":
        return read_tsv(source.path, source.source_column, source.target_column if with_target else None, source.limit)
    if source.format == "parallel":
        return read_parallel(source.source_path, source.target_path, source.limit)
    if source.format == "text":
        return read_text(source.path, source.limit, keep_empty)
    if source.format == "hf":
        return read_hf(source, with_target)
    raise NmtError(f"unknown data format {source.format!r}")

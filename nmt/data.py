"""Corpus readers: TSV (plain or gzip), parallel files, plain text, HuggingFace ``datasets``.

Each reader returns a :class:`Corpus` of raw (untokenized) strings. Bad data is an error that names
the file and the line; empty examples (and, with ``dedup``, repeated ones) are dropped and counted,
never silently. :func:`normalize_side` and :func:`side_key` are how every check compares sentences
(:mod:`nmt.corpus_checks`, :mod:`nmt.corpus_split`): by a digest of the normalised text.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from nmt.config import Config, DataSourceConfig
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


def read_lines(path: str | Path, invalid: list[int] | None = None) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, text without the line break); gzip is detected by content. Invalid
    UTF-8 is an error naming the line, unless ``invalid`` is given: then its line numbers are appended
    there and the line is read with U+FFFD for the bad bytes (a report wants every bad line)."""
    path = Path(path)
    with _open_binary(path) as handle:
        try:
            yield from decode_lines(handle, str(path), invalid)
        except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as error:
            raise NmtError(f"{path}: corrupt or truncated file: {error}") from None


def decode_lines(handle: BinaryIO, name: str, invalid: list[int] | None = None) -> Iterator[tuple[int, str]]:
    """Decodes a binary stream line by line (only \\n separates lines); errors name ``name:line``
    (see :func:`read_lines` for ``invalid``)."""
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            if invalid is None:
                raise NmtError(f"{name}:{number}: invalid UTF-8 at byte {error.start} of the line") from None
            invalid.append(number)
            text = raw.decode("utf-8", errors="replace")
        yield number, text.rstrip("\r\n")


# --- comparing sides ---------------------------------------------------------------------------

_NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")


def normalize_side(text: str) -> str:
    """The form two sentences are compared in for duplicates and dev/train overlap: NFKC, lower-cased,
    punctuation, symbols and spaces removed, so "Tom's here!" and "toms here" are one sentence."""
    return _NOT_LETTER_OR_DIGIT.sub("", unicodedata.normalize("NFKC", text).lower())


def side_key(text: str | None, normalized: bool = True) -> int | None:
    """A 64-bit digest of a side (normalised, or exact): what the checks keep instead of the text, so
    their memory does not grow with the length of the lines. None for a side that is empty once
    normalised (a line of punctuation), which matches nothing."""
    if text is None:
        return None
    if normalized:
        text = normalize_side(text)
    if not text:
        return None
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def pair_key(source: str, target: str | None, normalized: bool = True) -> int | None:
    """One digest for a whole example (both sides; the source alone for a language model)."""
    if target is None:
        return side_key(source, normalized)
    return side_key(f"{source}\t{target}" if not normalized else
                    f"{normalize_side(source)}\t{normalize_side(target)}", normalized=False)


# --- readers -----------------------------------------------------------------------------------

# A reader yields (number, source, target) for every line or record, stripped, empty ones included:
# ``number`` is the 1-based line (a HuggingFace dataset: record), target None for one side only.
RawRows = Iterator[tuple[int, str, "str | None"]]


def _tsv_rows(path: str | Path, source_column: int, target_column: int | None, invalid: list[int] | None) -> RawRows:
    """Tab-separated columns; ``target_column`` None reads the source column only."""
    need = max(source_column, target_column if target_column is not None else -1) + 1
    for number, line in read_lines(path, invalid):
        if not line.strip():
            yield number, "", "" if target_column is not None else None
            continue
        columns = line.split("\t")
        if len(columns) < need:
            raise NmtError(
                f"{path}:{number}: expected at least {need} tab-separated columns, found {len(columns)}"
            )
        target = columns[target_column].strip() if target_column is not None else None
        yield number, columns[source_column].strip(), target


def _parallel_rows(source_path: str | Path, target_path: str | Path, invalid: list[int] | None) -> RawRows:
    source_lines, target_lines = read_lines(source_path, invalid), read_lines(target_path, invalid)
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
        yield source_item[0], source_item[1].strip(), target_item[1].strip()


def _text_rows(path: str | Path, invalid: list[int] | None) -> RawRows:
    for number, line in read_lines(path, invalid):
        yield number, line.strip(), None


def _field(record: dict[str, Any], dotted: str, where: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            keys = ", ".join(value) if isinstance(value, dict) else type(value).__name__
            raise NmtError(f"{where}: record has no field {dotted!r} (available at {part!r}: {keys})")
        value = value[part]
    return value


def _hf_rows(source: DataSourceConfig, with_target: bool) -> RawRows:
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
        yield index + 1, text.strip(), target.strip() if with_target else None


class Row(NamedTuple):
    """One line (or record) of a split as read: ``dropped`` says why training skips it ("empty",
    "duplicate" under ``dedup``), None for a kept example."""

    number: int
    source: str
    target: str | None
    dropped: str | None


class CorpusStream:
    """One configured split read lazily, an example at a time (memory does not grow with the
    corpus): iterating yields (source, target) pairs (target None for a language model) up to
    ``source.limit``, and counts the examples dropped on the way in ``dropped_empty`` and
    ``dropped_duplicates`` (``source.dedup``: an example whose exact or normalised pair came before;
    the digests of the pairs seen are kept, 8 bytes and a set entry each, not the text). Each
    iteration reads the files again from the start, and drops the same examples.

    A language model reads the source side only (``with_target`` False: no target field needed
    from a HuggingFace dataset) and may keep the blank lines of a text file (``keep_empty``).
    ``invalid_utf8``: a list that collects the numbers of lines that are not UTF-8 instead of
    failing on the first (for reports; training fails).
    """

    def __init__(self, source: DataSourceConfig, with_target: bool = True, keep_empty: bool = False,
                 invalid_utf8: list[int] | None = None) -> None:
        if source.format not in ("tsv", "parallel", "text", "hf"):
            raise NmtError(f"unknown data format {source.format!r}")
        self.source, self.with_target, self.keep_empty = source, with_target, keep_empty
        self.invalid_utf8 = invalid_utf8
        self.dropped_empty = self.dropped_duplicates = 0

    @property
    def has_targets(self) -> bool:
        return self.with_target and self.source.format != "text"

    def _raw_rows(self) -> RawRows:
        source, invalid = self.source, self.invalid_utf8
        if source.format == "tsv":
            return _tsv_rows(source.path, source.source_column, source.target_column if self.with_target else None,
                             invalid)
        if source.format == "parallel":
            return _parallel_rows(source.source_path, source.target_path, invalid)
        if source.format == "text":
            return _text_rows(source.path, invalid)
        return _hf_rows(source, self.with_target)

    def rows(self) -> Iterator[Row]:
        """Every line or record up to the ``limit``-th kept one, the dropped ones marked."""
        kept, limit = 0, self.source.limit
        dedup = self.source.dedup
        seen: set[int] | None = None if dedup == "none" else set()
        keep_blank = self.keep_empty and self.source.format == "text"  # running text: paragraph breaks
        rows = self._raw_rows()
        # The limit is checked before reading on: lines past it are never parsed.
        while limit is None or kept < limit:
            raw = next(rows, None)
            if raw is None:
                return
            number, text, target = raw
            if not self.has_targets:
                target = None
            dropped = None
            if (not text and not keep_blank) or target == "":
                dropped = "empty"
            elif seen is not None and text:
                key = pair_key(text, target, normalized=dedup == "normalized")
                if key is not None and key in seen:
                    dropped = "duplicate"
                elif key is not None:
                    seen.add(key)
            if dropped is None:
                kept += 1
            yield Row(number, text, target, dropped)

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        self.dropped_empty = self.dropped_duplicates = 0
        for row in self.rows():
            if row.dropped is None:
                yield row.source, row.target
            elif row.dropped == "empty":
                self.dropped_empty += 1
            else:
                self.dropped_duplicates += 1


def configured_stream(config: Config, split: str = "train") -> CorpusStream:
    """``data.train`` (or ``data.dev``) as the config's task reads it: a language model one side only,
    running text (``train.bptt_steps``) with its blank lines kept as paragraph breaks."""
    language_model = config.task == "lm"
    return CorpusStream(getattr(config.data, split), with_target=not language_model,
                        keep_empty=language_model and config.train.bptt_steps is not None)


def read_corpus(source: DataSourceConfig, with_target: bool = True, keep_empty: bool = False) -> Corpus:
    """A split read whole into memory (dev sets, small corpora): see :class:`CorpusStream`."""
    stream = CorpusStream(source, with_target, keep_empty)
    pairs = list(stream)
    targets = [t for _, t in pairs] if stream.has_targets else None
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

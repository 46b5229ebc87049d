"""What a corpus holds before anything trains on it: dev (and test) sentences that are also in the
training data, duplicates, empty sides, over-long lines, length-ratio outliers, invalid UTF-8 and
sides in the wrong script.

Sentences are compared as :func:`nmt.data.normalize_side` writes them (NFKC, lower-cased, without
punctuation and spaces). The training data is read as a stream, a line at a time: the overlap count
holds only the held-out splits' normalised sides (dev-sized), the full report a 64-bit digest and a
few integers per training line, never its text. ``nmt train`` logs :class:`Overlap` before the first
step and keeps it in the run directory; ``nmt data check`` prints :class:`CorpusReport`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt.data import CorpusStream, Row, normalize_side, pair_key

if TYPE_CHECKING:
    from nmt.tokenizer import Tokenizer

# Line numbers a finding lists (its count is always whole).
EXAMPLE_LINES = 5

# A pair is a length-ratio outlier when its characters per side differ from the corpus's median
# ratio by more than this factor, and its longer side (scaled by that median) has at least
# RATIO_MIN_CHARS characters: "No way!" against "とんでもございません！" is no outlier, a sentence against a
# paragraph is.
RATIO_FACTOR = 3.0
RATIO_MIN_CHARS = 20

# The letters a side's language is written in, by language code (character ranges of its Unicode
# scripts, full- and half-width forms included). A side is in the wrong script when it has letters and
# none of them is of its language's scripts: "I love you" on a Japanese side, not "Facebookやってる？".
_LATIN = "A-Za-z\u00c0-\u024f\u1e00-\u1eff\uff21-\uff3a\uff41-\uff5a"
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_SCRIPT_LETTERS = {
    "ja": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f" + _HAN, "zh": _HAN, "ko": "\uac00-\ud7af\u1100-\u11ff" + _HAN,
    "ru": "\u0400-\u04ff", "uk": "\u0400-\u04ff", "bg": "\u0400-\u04ff", "el": "\u0370-\u03ff\u1f00-\u1fff",
    "ar": "\u0600-\u06ff", "he": "\u0590-\u05ff", "hi": "\u0900-\u097f", "th": "\u0e00-\u0e7f",
    **dict.fromkeys("en fr de es it pt nl sv da no fi pl cs tr id vi ro hu et lv lt sk sl hr ca eu".split(), _LATIN),
}
SCRIPTS: dict[str, re.Pattern] = {code: re.compile(f"[{letters}]") for code, letters in _SCRIPT_LETTERS.items()}
_LETTER = re.compile(r"[^\W\d_]")

CLEAN_SPLIT_HINT = "nmt data split makes a clean split"


def _share(count: int, total: int) -> str:
    percent = 100 * count / total if total else 0.0
    return f"{percent:.0f} %" if percent >= 10 or percent == 0 else f"{percent:.1f} %"


@dataclasses.dataclass
class Overlap:
    """How many of a held-out split's examples the training data already holds: its sources that are
    also training sources, its targets that are also training targets, and its pairs whose source
    and target both are (not necessarily in one training pair). ``targets`` and ``pairs`` are None
    for one side only (a language model's lines)."""

    examples: int
    sources: int
    targets: int | None = None
    pairs: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @property
    def any(self) -> bool:
        return bool(self.sources or self.targets or self.pairs)

    def summary(self, name: str = "dev", against: str = "the training data") -> str:
        """One line: ``dev: 205 of 789 targets (26 %) also appear in the training data: ...``."""
        total = f"{self.examples:,}"
        one_side = self.targets is None
        if not self.any:
            sides = "lines" if one_side else "sources, targets or pairs"
            return f"{name}: none of its {total} {sides} appears in {against}"
        parts = [(self.sources, "lines" if one_side else "sources"), (self.targets, "targets"), (self.pairs, "pairs")]
        counts = [(count, what) for count, what in parts if count]
        said = [f"{count:,} of {total} {what} ({_share(count, self.examples)})" for count, what in counts]
        listed = said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1]
        verb = "appears" if len(counts) == 1 and counts[0][0] == 1 else "appear"
        return (f"{name}: {listed} also {verb} in {against}: {name} scores will overstate quality "
                f"({CLEAN_SPLIT_HINT})")


class OverlapCounter:
    """Counts a held-out split's overlap with examples fed one at a time (:meth:`add`): the split's
    normalised sides are held in sets, the fed examples are only looked up."""

    def __init__(self, held_out: Sequence[tuple[str, str | None]]) -> None:
        self.sources = [normalize_side(s) for s, _ in held_out]
        self.targets = None if not held_out or held_out[0][1] is None else [normalize_side(t) for _, t in held_out]
        self._wanted_sources = {s for s in self.sources if s}
        self._wanted_targets = {t for t in self.targets or () if t}
        self._found_sources: set[str] = set()
        self._found_targets: set[str] = set()

    def add(self, source: str, target: str | None) -> None:
        key = normalize_side(source)
        if key in self._wanted_sources:
            self._found_sources.add(key)
        if target is not None and self._wanted_targets:
            key = normalize_side(target)
            if key in self._wanted_targets:
                self._found_targets.add(key)

    def result(self) -> Overlap:
        in_sources = [s in self._found_sources for s in self.sources]
        if self.targets is None:
            return Overlap(len(self.sources), sum(in_sources))
        in_targets = [t in self._found_targets for t in self.targets]
        return Overlap(len(self.sources), sum(in_sources), sum(in_targets),
                       sum(s and t for s, t in zip(in_sources, in_targets)))


def count_overlap(train: Iterable[tuple[str, str | None]], held_out: Sequence[tuple[str, str | None]]) -> Overlap:
    """The overlap of ``held_out`` (in memory) with ``train`` (streamed once, nothing of it kept)."""
    counter = OverlapCounter(held_out)
    for source, target in train:
        counter.add(source, target)
    return counter.result()


@dataclasses.dataclass
class Finding:
    """A count, and the first few line numbers it was found at."""

    count: int = 0
    lines: list[int] = dataclasses.field(default_factory=list)

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.lines) < EXAMPLE_LINES:
            self.lines.append(line)

    def __str__(self) -> str:
        if not self.count:
            return "0"
        more = ", ..." if self.count > len(self.lines) else ""
        return f"{self.count:,} (line{'s' if self.count > 1 else ''} {', '.join(map(str, self.lines))}{more})"


def in_wrong_script(text: str, script: re.Pattern) -> bool:
    """Whether ``text`` has letters and none of them matches ``script`` (see :data:`SCRIPTS`)."""
    return script.search(text) is None and _LETTER.search(text) is not None


_PAIR_FINDINGS = ("too_long_target", "ratio_outliers", "wrong_script_target")


@dataclasses.dataclass
class SplitReport:
    """The findings of one split (see :class:`SplitChecker`)."""

    name: str
    where: str
    examples: int = 0  # kept: what training would read (empty lines dropped, up to the limit)
    empty: Finding = dataclasses.field(default_factory=Finding)
    invalid_utf8: Finding = dataclasses.field(default_factory=Finding)
    duplicates_exact: Finding = dataclasses.field(default_factory=Finding)
    duplicates_normalized: Finding = dataclasses.field(default_factory=Finding)
    too_long_source: Finding | None = None  # None: not counted (no tokenizer)
    too_long_target: Finding | None = None
    ratio_outliers: Finding | None = None  # None: one side only (a language model's lines)
    wrong_script_source: Finding | None = None  # None: no script known for the language
    wrong_script_target: Finding | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """The findings, one a line (a split of one side: none of the second side's)."""
        one_side = self.ratio_outliers is None
        rows = [f"{self.name}: {self.examples:,} examples ({self.where})"]
        for field in dataclasses.fields(self)[3:]:
            if one_side and field.name in _PAIR_FINDINGS:
                continue
            value = getattr(self, field.name)
            name = field.name.removesuffix("_source") if one_side else field.name
            rows.append(f"  {name.replace('_', ' ')}: {'not counted' if value is None else value}")
        return rows


class SplitChecker:
    """The per-split checks, fed :class:`nmt.data.Row` by row (:meth:`add`) and finished by :meth:`report`.

    ``languages`` are the (source, target) language codes for the script check; ``tokenizers`` and
    ``max_lengths`` count the lines over the length limits (in the tokenizers' pieces) when given.
    """

    def __init__(self, name: str, where: str, languages: tuple[str, str], has_targets: bool,
                 tokenizers: tuple[Tokenizer, Tokenizer] | None = None,
                 max_lengths: tuple[int, int] | None = None) -> None:
        self.result = SplitReport(name, where)
        self.has_targets = has_targets
        self.scripts = tuple(SCRIPTS.get(language.lower().split("-")[0]) for language in languages)
        self.tokenizers = tokenizers if max_lengths is not None else None
        self.max_lengths = max_lengths
        r = self.result
        if self.tokenizers is not None:
            r.too_long_source = Finding()
            r.too_long_target = Finding() if has_targets else None
        if has_targets:
            r.ratio_outliers = Finding()
        r.wrong_script_source = Finding() if self.scripts[0] else None
        r.wrong_script_target = Finding() if has_targets and self.scripts[1] else None
        # Per kept example: its line, its exact and normalised digests, its sides' lengths in characters.
        self._lines = array("q")
        self._exact = array("Q")
        self._normalized = array("Q")
        self._source_chars = array("l")
        self._target_chars = array("l")

    def add(self, row: Row) -> None:
        r = self.result
        if row.dropped == "empty":
            r.empty.add(row.number)
            return
        r.examples += 1
        source, target = row.source, row.target
        self._lines.append(row.number)
        self._exact.append(pair_key(source, target, normalized=False) or 0)
        self._normalized.append(pair_key(source, target) or 0)
        if self.tokenizers is not None:
            if len(self.tokenizers[0].encode([source])[0]) > self.max_lengths[0]:
                r.too_long_source.add(row.number)
            if target is not None and len(self.tokenizers[1].encode([target])[0]) > self.max_lengths[1]:
                r.too_long_target.add(row.number)
        for text, scripts, finding in ((source, self.scripts[0], r.wrong_script_source),
                                       (target, self.scripts[1], r.wrong_script_target)):
            if finding is not None and text and in_wrong_script(text, scripts):
                finding.add(row.number)
        if self.has_targets:
            self._source_chars.append(len(source))
            self._target_chars.append(len(target or ""))

    def add_invalid_utf8(self, lines: Iterable[int]) -> None:
        for line in sorted(set(lines)):
            self.result.invalid_utf8.add(line)

    def report(self) -> SplitReport:
        r = self.result
        lines = np.frombuffer(self._lines, dtype=np.int64) if len(self._lines) else np.zeros(0, np.int64)
        for digests, finding in ((self._exact, r.duplicates_exact), (self._normalized, r.duplicates_normalized)):
            keys = np.frombuffer(digests, dtype=np.uint64) if len(digests) else np.zeros(0, np.uint64)
            _, first = np.unique(keys, return_index=True)
            repeated = np.ones(len(keys), bool)
            repeated[first] = False
            repeated &= keys != 0  # 0: a pair empty once normalised, which matches nothing
            for line in lines[repeated]:
                finding.add(int(line))
        if r.ratio_outliers is not None and len(self._source_chars):
            source = np.frombuffer(self._source_chars, dtype=np.int64).astype(float)
            target = np.frombuffer(self._target_chars, dtype=np.int64).astype(float)
            ratio = np.log(np.maximum(target, 1) / np.maximum(source, 1))
            median = float(np.median(ratio))
            longer = np.maximum(source * math.exp(median), target)
            outliers = (np.abs(ratio - median) > math.log(RATIO_FACTOR)) & (longer >= RATIO_MIN_CHARS)
            for line in lines[outliers]:
                r.ratio_outliers.add(int(line))
        return r


def check_split(name: str, stream: CorpusStream, checker_args: dict[str, Any], keep: bool = False,
                counters: Sequence[OverlapCounter] = ()) -> tuple[SplitReport, list[tuple[str, str | None]]]:
    """One pass over ``stream``: its report, and (``keep``: a held-out split) its kept examples. Every
    kept example is also fed to ``counters``."""
    checker = SplitChecker(name, stream_location(stream), has_targets=stream.has_targets, **checker_args)
    stream.invalid_utf8 = invalid = []  # reported, not fatal
    kept: list[tuple[str, str | None]] = []
    for row in stream.rows():
        checker.add(row)
        if row.dropped is None:
            for counter in counters:
                counter.add(row.source, row.target)
            if keep:
                kept.append((row.source, row.target))
    checker.add_invalid_utf8(invalid)
    return checker.report(), kept


def stream_location(stream: CorpusStream) -> str:
    source = stream.source
    if source.format == "parallel":
        return f"{source.source_path} + {source.target_path}"
    return str(source.path)


@dataclasses.dataclass
class CorpusReport:
    """``nmt data check``'s answer: each split's findings, and the overlap of each held-out split
    with the training data (and of later held-out splits with earlier ones: test against dev)."""

    splits: list[SplitReport]
    overlaps: dict[str, Overlap]  # "dev", "test", "test vs dev", ...

    def to_dict(self) -> dict[str, Any]:
        return {"splits": {s.name: s.to_dict() for s in self.splits},
                "overlap": {name: o.to_dict() for name, o in self.overlaps.items()}}

    def lines(self) -> list[str]:
        rows: list[str] = []
        for split in self.splits:
            rows.extend(split.lines())
        for name, overlap in self.overlaps.items():
            held_out, _, against = name.partition(" vs ")
            rows.append(overlap.summary(held_out, f"the {against} data" if against else "the training data"))
        return rows


def check_corpus(train: CorpusStream, held_out: dict[str, CorpusStream], languages: tuple[str, str],
                 tokenizers: tuple[Tokenizer, Tokenizer] | None = None,
                 max_lengths: tuple[int, int] | None = None) -> CorpusReport:
    """Reads each held-out split into memory and checks it, then streams the training data once."""
    checker_args = dict(languages=languages, tokenizers=tokenizers, max_lengths=max_lengths)
    reports: list[SplitReport] = []
    kept: dict[str, list[tuple[str, str | None]]] = {}
    overlaps: dict[str, Overlap] = {}
    for name, stream in held_out.items():
        report, kept[name] = check_split(name, stream, checker_args, keep=True)
        reports.append(report)
        for earlier in list(kept)[:-1]:
            overlaps[f"{name} vs {earlier}"] = count_overlap(kept[earlier], kept[name])
    counters = {name: OverlapCounter(pairs) for name, pairs in kept.items()}
    train_report, _ = check_split("train", train, checker_args, counters=list(counters.values()))
    overlaps = {**{name: counter.result() for name, counter in counters.items()}, **overlaps}
    return CorpusReport([train_report, *reports], overlaps)

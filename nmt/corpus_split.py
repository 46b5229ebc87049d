"""Train/dev/test splits that share no sentence: ``nmt data split``.

Two examples that share a side (compared normalised, :func:`nmt.data.normalize_side`) are one group,
and so, transitively, is everything linked through shared sides: the Japanese line that comes with
three English ones, and the other translations of those. Whole groups are assigned to a split, so no
source or target of dev or test appears in another split. The groups are drawn in an order fixed by
the seed; a group goes to dev (then test) while it fits in what is left of the size asked, so the
sizes are exact unless the groups run out. Every split keeps the corpus's own order and its lines
as they were (all columns of a TSV: its attribution stays), so a rerun writes the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
from pathlib import Path

import numpy as np

from nmt.data import CorpusStream, read_lines, side_key
from nmt.errors import NmtError
from nmt.io import atomic_path

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


def connected_groups(*sides: np.ndarray) -> np.ndarray:
    """For each example, the smallest index of its group: examples are linked when any of ``sides``
    (arrays of side digests, 0 for a side that matches nothing) holds the same digest for both.
    Label propagation over the shared digests with pointer jumping: memory is a few integers per
    example, and the rounds grow with the longest chain of links, not with the corpus."""
    count = len(sides[0])
    labels = np.arange(count)
    members = []
    for keys in sides:
        _, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.astype(np.int64)
        unlinked = keys == 0
        inverse[unlinked] = inverse.max(initial=0) + 1 + np.arange(int(unlinked.sum()))  # each its own
        members.append(inverse)
    while True:
        before = labels.copy()
        for inverse in members:
            smallest = np.full(int(inverse.max(initial=0)) + 1, count, dtype=np.int64)
            np.minimum.at(smallest, inverse, labels)
            labels = np.minimum(labels, smallest[inverse])
        while True:  # point every label at its own label's label, until each names its group's root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


@dataclasses.dataclass
class SplitPlan:
    """Which split each kept example goes to (0 train, 1 dev, 2 test), by its line number."""

    lines: np.ndarray  # line (record) number of each kept example
    assignment: np.ndarray
    groups: np.ndarray  # group label of each kept example
    dropped_empty: int

    def sizes(self) -> dict[str, int]:
        return {name: int((self.assignment == i).sum()) for i, name in enumerate(SPLITS)}

    def moved_with_group(self) -> dict[str, int]:
        """Held-out examples that share a side with another example of their group, and went with it."""
        _, index, counts = np.unique(self.groups, return_inverse=True, return_counts=True)
        linked = counts[index] > 1
        return {name: int(((self.assignment == i) & linked).sum()) for i, name in enumerate(SPLITS) if i}

    def summary(self) -> str:
        sizes, moved = self.sizes(), self.moved_with_group()
        parts = [f"{name} {sizes[name]:,}" for name in SPLITS if name == "train" or sizes[name]]
        linked = ", ".join(f"{moved[name]:,} of {name}'s" for name in SPLITS[1:] if sizes[name])
        groups = len(np.unique(self.groups))
        return (f"{', '.join(parts)} examples, from {groups:,} groups of examples that share a side; {linked} "
                f"went with another example of their group (a shared source or target); "
                f"{self.dropped_empty:,} empty dropped")


def plan_split(stream: CorpusStream, dev: int, test: int = 0, seed: int = 1234) -> SplitPlan:
    """Groups the examples of ``stream`` and draws whole groups for dev and test (see the module)."""
    if dev < 0 or test < 0:
        raise NmtError("dev and test sizes must not be negative")
    lines, source_keys, target_keys = [], [], []
    dropped = 0
    for row in stream.rows():
        if row.dropped is not None:
            dropped += 1
            continue
        lines.append(row.number)
        source_keys.append(side_key(row.source) or 0)
        target_keys.append(side_key(row.target) or 0)
    if dev + test > len(lines):
        raise NmtError(f"dev {dev:,} + test {test:,} is more than the {len(lines):,} examples of the corpus")
    sides = [np.array(source_keys, dtype=np.uint64)]
    if stream.has_targets:
        sides.append(np.array(target_keys, dtype=np.uint64))
    groups = connected_groups(*sides)
    labels, sizes = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = np.zeros(len(labels), dtype=np.int8)
    for split, wanted in ((1, dev), (2, test)):
        left = wanted
        for at in order:
            if left == 0:
                break
            if chosen[at] == 0 and sizes[at] <= left:
                chosen[at] = split
                left -= int(sizes[at])
        if left:
            log.warning("%s: %d examples short of the %d asked: the groups that are left are too large",
                        SPLITS[split], left, wanted)
    assignment = chosen[np.searchsorted(labels, groups)]
    return SplitPlan(np.array(lines, dtype=np.int64), assignment, groups, dropped)


def output_names(stream: CorpusStream) -> list[tuple[str, str]]:
    """(input file, output file name pattern with {split}) for each file of the corpus: a TSV or text file
    keeps its suffixes (``corpus.tsv.gz`` -> ``train.tsv.gz``), parallel files theirs (``.en``, ``.ja``)."""
    source = stream.source
    paths = [source.source_path, source.target_path] if source.format == "parallel" else [source.path]
    if source.format == "hf":
        raise NmtError("nmt data split reads files (tsv, parallel, text); save a HuggingFace dataset to one first")
    suffixes = ["".join(Path(str(p)).suffixes) for p in paths]
    if len(paths) == 2 and (suffixes[0] == suffixes[1] or not all(suffixes)):
        suffixes = [".source", ".target"]
    return [(str(p), "{split}" + suffix) for p, suffix in zip(paths, suffixes)]


def write_split(stream: CorpusStream, plan: SplitPlan, out: Path) -> list[Path]:
    """Writes each split's lines, as they are in the input, under ``out`` (gzip where the input's name
    ends in .gz, with no time stamp: a rerun is byte-identical); each file atomically."""
    split_of = np.full(int(plan.lines.max(initial=0)) + 1, -1, dtype=np.int8)  # by line number; -1: dropped
    split_of[plan.lines] = plan.assignment
    used = [i for i, name in enumerate(SPLITS) if name == "train" or plan.sizes()[name]]
    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    for path, pattern in output_names(stream):
        targets = {i: out / pattern.format(split=SPLITS[i]) for i in used}
        if Path(path).resolve() in {t.resolve() for t in targets.values()}:
            raise NmtError(f"--out {out}: would overwrite the input {path}")
        with contextlib.ExitStack() as files:
            handles = {}
            for i, target in targets.items():
                tmp = files.enter_context(atomic_path(target))
                raw = files.enter_context(open(tmp, "wb"))
                handles[i] = (files.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))
                              if target.name.endswith(".gz") else raw)
            for number, line in read_lines(path):  # streamed: one line in memory at a time
                split = int(split_of[number]) if number < len(split_of) else -1
                if split >= 0:
                    handles[split].write((line + "\n").encode("utf-8"))
        written.extend(targets.values())
    return written

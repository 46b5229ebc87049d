"""Dev scoring during training reads a subset spread over the whole dev set (train.eval_max_sentences),
not its first lines."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from nmt.config import load_config
from nmt.tasks import PreparedData, task_for
from nmt.tasks.base import evenly_spaced

from conftest import lm_config
from test_training import task_config


def test_evenly_spaced_takes_every_nth_item_over_the_whole_set() -> None:
    assert evenly_spaced(10, 3) == [0, 3, 6]
    assert evenly_spaced(10, None) == list(range(10)) and evenly_spaced(5, 5) == list(range(5))
    assert evenly_spaced(4, 9) == list(range(4))
    picked = evenly_spaced(789, 400)  # the former data/en-ja dev set's size: 789 does not divide by 400
    assert len(picked) == len(set(picked)) == 400 and picked == sorted(picked)
    assert picked[0] == 0 and picked[-1] >= 789 - 789 // 400 - 1  # reaches the end, not only the easy start
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    assert gaps <= {1, 2}  # evenly: 789/400 apart
    # Running text: consecutive stretches (one per evaluation stream), evenly spaced.
    assert evenly_spaced(100, 8, 2) == [0, 1, 2, 3, 50, 51, 52, 53]
    for count, limit, stretches in [(1000, 37, 8), (9, 8, 5), (50, 49, 8)]:
        picked = evenly_spaced(count, limit, stretches)
        assert len(picked) == len(set(picked)) == limit and picked == sorted(picked) and picked[-1] < count


class Recording:
    """A stand-in predictor that records what dev scoring asks it about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def translate(self, sources: list[str], beam_size: int) -> list:
        self.asked += sources
        return [[SimpleNamespace(text=s)] for s in sources]

    def perplexity(self, lm: Recording, lines: list[str], streams: int) -> SimpleNamespace:
        """In place of nmt.perplexity.evaluate_perplexity."""
        assert lm is self and streams == 8
        self.asked += lines
        return SimpleNamespace(dev_record=lambda: {"dev_loss": 1.0})


def test_translation_dev_scores_use_the_spread_subset(tmp_path: Path) -> None:
    task = task_for(load_config(task_config(tmp_path, tmp_path / "run", 10)))
    lines = [f"line {i}" for i in range(10)]
    data = PreparedData(None, None, None, lines, lines, dev=lines)  # of the encoded dev set, only its size is read
    predictor = Recording()
    scores = task.dev_scores(predictor, data, None, limit=4)
    assert predictor.asked == ["line 0", "line 2", "line 5", "line 7"]
    assert scores["dev_sentences"] == 4 and scores["dev_chrf"] == 100.0  # each scored against its own reference


def test_running_text_dev_scores_read_stretches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = task_for(load_config(lm_config(tmp_path, "lm", "a b c\n" * 20)))
    assert task.carries_state
    lines = [f"line {i}" for i in range(100)]
    predictor = Recording()
    monkeypatch.setattr("nmt.tasks.lm.evaluate_perplexity", predictor.perplexity)
    task.dev_scores(predictor, PreparedData(None, None, None, lines, [], None), None, limit=16)
    # 8 stretches (one per evaluation stream) of 2 consecutive lines, 12.5 lines apart.
    starts = [0, 12, 25, 37, 50, 62, 75, 87]
    assert predictor.asked == [f"line {i}" for start in starts for i in (start, start + 1)]

"""Checkpoint averaging (nmt average, train.average_last, --weights averaged)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nmt
from nmt.averaging import average_checkpoints
from nmt.cli import main
from nmt.config import load_config
from nmt.errors import NmtError
from nmt.training import Trainer

from test_training import task_config, write_reverse_task


def averaging_config(folder: Path, name: str, extra: dict | None = None) -> Path:
    """The reverse task with a dev set, checkpoints every 10 of 40 steps, the last 4 kept."""
    dev_source, dev_target = write_reverse_task(folder, 40, seed=7)
    return task_config(folder, folder / name, steps=40, extra={
        "train.checkpoint_every": 10, "train.keep_checkpoints": 4, "train.eval_every": 20,
        "data.dev": {"format": "parallel", "source_path": str(dev_source), "target_path": str(dev_target)},
        **(extra or {})})


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained with train.average_last: 3."""
    folder = tmp_path_factory.mktemp("averaging")
    Trainer(load_config(averaging_config(folder, "run", {"train.average_last": 3}))).train()
    return folder / "run"


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def weights(run_dir: Path, which: str) -> list[np.ndarray]:
    return [v.numpy() for v in nmt.load(run_dir, weights=which).model.weights]


def averaged_won(record: dict) -> bool:
    """Whether the averaged weights must have won: higher dev BLEU, then lower dev loss."""
    return (record["averaged_dev_bleu"], -record["averaged_dev_loss"]) > (record["best_dev_bleu"],
                                                                          -record["best_dev_loss"])


def check_best_is_the_higher(run_dir: Path, record: dict, best_before: bytes) -> None:
    """best/ holds the averaged weights if they scored higher on dev, else what it held before."""
    best = (run_dir / "best" / "model.weights.h5").read_bytes()
    higher = averaged_won(record)
    assert record["best_now"] == ("averaged" if higher else "best")
    assert best == ((run_dir / "averaged" / "model.weights.h5").read_bytes() if higher else best_before)


def test_training_ends_by_averaging_its_last_checkpoints(averaged_run: Path) -> None:
    records = metrics(averaged_run)
    averaging = next(r for r in records if "averaged" in r)
    assert averaging["averaged"] == ["ckpt-20", "ckpt-30", "ckpt-40"]
    assert records.index(averaging) < len(records) - 1 and records[-1].get("final")  # scored after averaging
    assert (averaged_run / "averaged" / "model.weights.h5").is_file()
    assert averaging["best_now"] == ("averaged" if averaged_won(averaging) else "best")


@pytest.mark.slow
def test_averaged_weights_are_the_mean_of_the_checkpoints_and_translate(averaged_run: Path) -> None:
    best_before = (averaged_run / "best" / "model.weights.h5").read_bytes()
    result = average_checkpoints(averaged_run, last=2)
    assert result.checkpoints == ["ckpt-30", "ckpt-40"]
    assert result.path == averaged_run / "averaged" / "model.weights.h5"
    averaged = weights(averaged_run, "averaged")
    checkpoints = [weights(averaged_run, name) for name in result.checkpoints]
    for index, tensor in enumerate(averaged):
        expected = np.mean([np.asarray(c[index], np.float64) for c in checkpoints], axis=0).astype(tensor.dtype)
        np.testing.assert_allclose(tensor, expected, rtol=1e-6, atol=1e-8)
    assert any(not np.allclose(a, b) for a, b in zip(averaged, checkpoints[-1]))  # not a copy of the last
    check_best_is_the_higher(averaged_run, metrics(averaged_run)[-1], best_before)
    # The averaged file translates as a model given the mean of the checkpoints by hand does.
    sources = ["a b c d", "j i h"]
    by_hand = nmt.load(averaged_run, weights="ckpt-40")
    for variable, mean in zip(by_hand.model.weights, averaged):
        variable.assign(mean)
    expected = [h[0].text for h in by_hand.translate(sources, beam_size=2)]
    got = [h[0].text for h in nmt.load(averaged_run, weights="averaged").translate(sources, beam_size=2)]
    assert got == expected and all(got)


def test_average_command_and_weights_averaged(averaged_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    assert main(["average", "--run", str(averaged_run), "--last", "4"]) == 0
    out = capsys.readouterr().out
    assert "averaged ckpt-10, ckpt-20, ckpt-30, ckpt-40 into" in out and "dev BLEU" in out
    source = tmp_path / "in.txt"
    source.write_text("a b c\nd e f g\n", encoding="utf-8")
    output = tmp_path / "out.txt"
    assert main(["translate", "--run", str(averaged_run), "--weights", "averaged", "-i", str(source),
                 "-o", str(output)]) == 0
    expected = [h[0].text for h in nmt.load(averaged_run, weights="averaged").translate(["a b c", "d e f g"])]
    assert output.read_text(encoding="utf-8").splitlines() == expected
    assert main(["average", "--run", str(averaged_run), "--last", "5"]) == 2
    assert "keeps 4 checkpoint(s) (ckpt-10, ckpt-20, ckpt-30, ckpt-40): cannot average the last 5" in \
        capsys.readouterr().err
    assert main(["average", "--run", str(averaged_run), "--last", "0"]) == 2
    assert "--last must be at least 1, got 0" in capsys.readouterr().err
    assert "--weights best|latest|averaged|ckpt-N" in _help(["translate", "--help"], capsys)
    assert "--last N" in _help(["average", "--help"], capsys)


def _help(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().out


@pytest.mark.slow
def test_averaged_weights_must_exist_and_average_last_needs_kept_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "plain"
    Trainer(load_config(task_config(tmp_path, run_dir, steps=10))).train()
    with pytest.raises(NmtError, match=r"has no averaged weights \(averaged/model\.weights\.h5\): write them with "
                                       r"nmt average --run .* --last N"):
        nmt.load(run_dir, weights="averaged")
    with pytest.raises(NmtError, match=r"train\.average_last: 5 is more than the 3 checkpoints kept"):
        load_config(task_config(tmp_path, run_dir, steps=10, extra={"train.average_last": 5}))

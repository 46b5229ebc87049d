"""Shared fixtures: a tiny trained run (seconds) that the CLI and inference tests reuse."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/en-ja-tiny.yaml trained for a few dozen steps into a temporary run directory."""
    from nmt.config import load_config
    from nmt.training import Trainer

    run_dir = tmp_path_factory.mktemp("runs") / "en-ja-tiny"
    config = load_config(ROOT / "configs" / "en-ja-tiny.yaml", [f"run_dir={run_dir}", "train.steps=40",
                                                                "train.eval_every=20", "train.checkpoint_every=20"])
    Trainer(config).train()
    return run_dir

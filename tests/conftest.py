"""Shared fixtures: tiny trained runs (seconds) that the CLI, inference and export tests reuse."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CYCLE = "north east south west up down left right".split()


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


def write_config(tree: dict, path: Path, extra: dict | None = None) -> Path:
    """Writes an experiment file: ``tree`` with ``extra``'s dotted keys (``"train.steps": 5``) set."""
    for dotted, value in (extra or {}).items():
        node = tree
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def lm_config(tmp_path: Path, name: str, text: str, extra: dict | None = None) -> Path:
    """A tiny language-model experiment over ``text`` written to a file; returns the YAML path."""
    corpus = tmp_path / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    tree = {
        "task": "lm",
        "run_dir": str(tmp_path / name),
        "data": {"train": {"format": "text", "path": str(corpus)}},
        "tokenizer": {"model_type": "word", "vocab_size": 20, "character_coverage": 1.0},
        "model": {"embedding_dim": 24, "decoder": {"cell": "gru", "units": 32, "attention": "none", "dropout": 0.0}},
        "train": {"steps": 150, "batch_size": 4, "bptt_steps": 12, "learning_rate": 0.02, "eval_every": 10**6,
                  "checkpoint_every": 50},
    }
    return write_config(tree, tmp_path / f"{name}.yaml", extra)


def cycle_text(lines: int) -> str:
    return "".join(" ".join(CYCLE) + "\n" for _ in range(lines))


@pytest.fixture(scope="session")
def cycle_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word LM trained on running text that repeats one 8-word line (fully predictable)."""
    from nmt.config import load_config
    from nmt.training import Trainer

    tmp_path = tmp_path_factory.mktemp("cycle")
    Trainer(load_config(lm_config(tmp_path, "cycle", cycle_text(300)))).train()
    return tmp_path / "cycle"

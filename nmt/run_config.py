"""A stored config file: writing it, reading it back (no TensorFlow: the CLI checks a run before
loading it), the task it holds, and the keys in which two configs differ: what may change when a
run resumes, and what a fine-tuning run must share with the run it starts from. Paths in, no run
directory layout: :class:`nmt.run_dir.RunDir` names the files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from nmt.config import Config, config_from_dict
from nmt.errors import NmtError
from nmt.io import atomic_write_text


def read_config_tree(path: Path) -> dict[str, Any]:
    """The YAML mapping in a stored config file, as written (not yet checked against the schema)."""
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise NmtError(f"{path}: not a valid run config: {error}") from None
    if not isinstance(tree, dict):
        raise NmtError(f"{path}: not a valid run config: expected a mapping of config keys")
    return tree


def read_config_file(path: Path) -> Config:
    """The config stored in ``path`` (a run's config.yaml), checked against the schema."""
    tree = read_config_tree(path)
    try:
        return config_from_dict(tree)
    except NmtError as error:
        raise NmtError(f"{path}: not a valid run config: {error}") from None


def check_task(run_dir: str | Path, config: Config, task: str | None) -> None:
    """``task`` ("translation", "lm" or None: either) must be what the run holds."""
    if task is not None and config.task != task:
        kinds = {"translation": "a translation model", "lm": "a language model (task: lm)"}
        raise NmtError(f"{run_dir} holds {kinds[config.task]}, but this needs {kinds[task]}")


def config_differences(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: before -> after`` for every value that differs between two config trees (as
    :meth:`Config.to_dict` gives them), sections spelled out as dotted keys: ``model.encoder.units: 256 -> 512``."""
    differences = []
    for key in dict.fromkeys([*before, *after]):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return differences


# What may differ between a run and the run it starts from (train.init_from): rates of dropout,
# which shape no weight.
_NOT_ARCHITECTURE = ("dropout", "embedding_dropout")


def _architecture(config: Config) -> dict[str, Any]:
    def without_dropout(tree: dict[str, Any]) -> dict[str, Any]:
        return {k: without_dropout(v) if isinstance(v, dict) else v
                for k, v in tree.items() if k not in _NOT_ARCHITECTURE}

    return {"task": config.task, "model": without_dropout(dataclasses.asdict(config.model)),
            "tokenizer": dataclasses.asdict(config.tokenizer)}


def check_same_architecture(source: str, stored: Config, config: Config) -> None:
    """``config`` (a fine-tuning run) must build the same weights as ``stored`` (the run named
    ``source`` it starts from): an NmtError naming every differing key otherwise."""
    differences = config_differences(_architecture(stored), _architecture(config))
    if differences:
        raise NmtError(f"{source} has another architecture than this config "
                       f"({'; '.join(differences)}): give its model and tokenizer settings (dropout may differ)")


def check_compatible(run: str, stored: dict[str, Any], config: Config, *, tokenizer_built: bool,
                     model_built: bool, carries_state: bool) -> None:
    """A run directory keeps one model: refuses to resume ``run`` (its stored config tree ``stored``)
    with a ``config`` that would not fit what is built. Only what has been built binds: the
    tokenizers once trained, the model once checkpointed."""
    current = config.to_dict()
    if model_built and carries_state:
        # The carried TBPTT state is [batch_size, units] and the data iterator's position is
        # counted in windows: both are in the checkpoint.
        for key in ("bptt_steps", "batch_size"):
            before = (stored.get("train") or {}).get(key)
            if before != getattr(config.train, key):
                raise NmtError(
                    f"{run} was trained with train.{key}={before!r} (now {getattr(config.train, key)!r}); "
                    "a running-text model resumes only with the same value: choose another run_dir or restore it"
                )
    # The checkpoint holds the optimizer's slots (Adam's moments): another optimizer cannot resume it.
    before = (stored.get("train") or {}).get("optimizer", "adam")
    if model_built and before != config.train.optimizer:
        raise NmtError(f"{run} was trained with train.optimizer={before!r} (now {config.train.optimizer!r}); "
                       "a run resumes with its own optimizer: choose another run_dir or delete this one")
    for section, built in (("model", model_built), ("tokenizer", tokenizer_built)):
        if built and stored.get(section) != current[section]:
            differences = config_differences(stored.get(section) or {}, current[section], f"{section}.")
            raise NmtError(f"{run} holds a model trained with another {section} config "
                           f"({'; '.join(differences)}); choose another run_dir or delete this one")


def save_config(config: Config, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))

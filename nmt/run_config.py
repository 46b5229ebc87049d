"""A trained run's stored config: writing it, reading it back (no TensorFlow: the CLI checks
a run before loading it), the task it holds, and the keys in which two configs differ (a resumed
run's, ``train.init_from``'s source run's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from nmt.config import Config, config_from_dict
from nmt.errors import NmtError


def read_run_config(run_dir: Path) -> Config:
    """The config stored in a trained run directory (no TensorFlow needed: the CLI checks a run
    before loading it)."""
    from nmt.run_dir import RunDir

    path = RunDir(Path(run_dir)).config_file
    if not path.is_file():
        raise NmtError(f"{run_dir} is not a run directory: {path.name} is missing (train one with `nmt train`)")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(tree, dict):
            raise NmtError("expected a mapping of config keys")
        return config_from_dict(tree)
    except (NmtError, yaml.YAMLError, UnicodeDecodeError) as error:
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


def init_source(config: Config) -> Config | None:
    """The config of the run that ``train.init_from`` names (None when it names none), checked: it
    must be a trained run of the same task, model and tokenizer settings (dropout may differ); a
    difference is an NmtError naming every differing key. Needs no TensorFlow."""
    source = config.train.init_from
    if source is None:
        return None
    try:
        stored = read_run_config(Path(source).expanduser())
    except NmtError as error:
        raise NmtError(f"train.init_from: {error}") from None
    differences = config_differences(_architecture(stored), _architecture(config))
    if differences:
        raise NmtError(f"train.init_from: {source} has another architecture than this config "
                       f"({'; '.join(differences)}): give its model and tokenizer settings (dropout may differ)")
    return stored


def save_config(config: Config, path: Path) -> None:
    from nmt.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))

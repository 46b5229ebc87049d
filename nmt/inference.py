"""A trained run directory as a Python object: ``nmt.load(run_dir)`` gives its task's predictor, a
:class:`nmt.translator.Translator` or a :class:`nmt.language_model.LanguageModelPredictor`.

The CLI, the export, the server and the dev evaluation during training are layers over these.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from nmt.checkpoints import checkpoint_prefixes, checkpoint_problem, newest_intact
from nmt.errors import NmtError, as_nmt_error
from nmt.models import model_variables
from nmt.run_config import check_task
from nmt.run_dir import RunDir
from nmt.signatures import TRANSLATION
from nmt.tasks import task_for
from nmt.translator import Translator

log = logging.getLogger(__name__)


def load(run_dir: str | Path, weights: str = "best", task: str | None = None, shortlist: bool | None = None) -> Any:
    """Loads a trained run: ``weights`` is ``best`` (chosen on dev), ``latest`` (last checkpoint),
    ``averaged`` (the mean of the last checkpoints, written by ``nmt average``) or the name of one
    kept checkpoint, ``ckpt-N`` (as in ``run_dir/checkpoints``).

    The run's task builds the model and wraps it: a translation run gives a Translator, a language
    model a LanguageModelPredictor; ``task`` ("translation" or "lm"), when given, makes any other kind
    an error. ``shortlist`` True decodes over the run's vocabulary shortlist (``nmt shortlist``),
    False over the whole vocabulary; None: as the run's ``decode.shortlist`` says.
    """
    run = RunDir(Path(run_dir))
    config = run.read_config()
    check_task(run_dir, config, task)
    run_task = task_for(config)
    source_tokenizer, target_tokenizer = run_task.load_tokenizers(run)
    model = run_task.build_model(source_tokenizer.vocab_size, target_tokenizer.vocab_size)
    load_weights(model, run, weights)
    predictor = run_task.predictor(model, source_tokenizer, target_tokenizer)
    if config.decode.shortlist if shortlist is None else shortlist:
        predictor = run_task.with_shortlist(predictor, run)
    if run.lexicon.exists():
        predictor = run_task.with_lexicon(predictor, run)
    return predictor


def load_ensemble(members: Sequence[str | Path | tuple[str | Path, str]], mode: str = "log_probs") -> Any:
    """Translation runs decoding as one model (:class:`nmt.ensemble.Ensemble`): each member a run
    directory (its best weights) or ``(run directory, weights)`` (``ckpt-16000``, ``averaged``, ...), so
    several checkpoints of one run ensemble too. ``mode``: ``log_probs`` averages the members'
    log-probabilities at every step, ``probs`` their probabilities. The first member's config
    decides the decoding (beam, length penalty, limits). The members must share the SentencePiece
    models (NmtError naming the one that differs). An ensemble of one decodes as its model."""
    from nmt.ensemble import Ensemble, check_same_vocabularies

    pairs = [(Path(m), "best") if isinstance(m, (str, Path)) else (Path(m[0]), m[1]) for m in members]
    translators = [load(run, weights, task=TRANSLATION) for run, weights in pairs]
    names = [f"{run} ({weights})" for run, weights in pairs]
    with as_nmt_error():
        check_same_vocabularies(names, [(t.source_tokenizer.model_proto, t.target_tokenizer.model_proto)
                                        for t in translators])
        ensemble = Ensemble([t.model for t in translators], mode)
    first = translators[0]
    return Translator(ensemble, first.source_tokenizer, first.target_tokenizer, first.config)


def load_members(runs: Sequence[str | Path], weights: str = "best", task: str | None = None,
                 shortlist: bool | None = None, ensemble_mode: str = "log_probs") -> Any:
    """Every run with every one of the comma-separated ``weights`` (``ckpt-16000,ckpt-17000,best``):
    one member is :func:`load`'s predictor, several decode as :func:`load_ensemble`'s (the CLI's
    ``--run A --run B`` and ``--weights A,B``, in translate, evaluate, score and export alike)."""
    members = [(Path(run), name) for run in runs for name in weights.split(",")]
    if len(members) == 1:
        return load(members[0][0], weights=members[0][1], task=task, shortlist=shortlist)
    if shortlist:
        raise NmtError("--shortlist decodes one model, not an ensemble of several --run/--weights")
    return load_ensemble(members, ensemble_mode)


def read_checkpoint(model: keras.Model, prefix: Path) -> None:
    """The model's weights (and dropout random states) from the checkpoint at ``prefix``."""
    tf.train.Checkpoint(model=model_variables(model)).read(str(prefix)).expect_partial().assert_existing_objects_matched()


def _read_weights_file(model: keras.Model, path: Path, remedy: str) -> None:
    try:
        model.load_weights(path)
    except Exception as error:  # noqa: BLE001 - h5py and Keras raise many types for a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NmtError(f"{path}: damaged weights file ({reason}); {remedy}") from None


def load_weights(model: keras.Model, run: RunDir, weights: str) -> None:
    """The one place that resolves ``weights`` (best, latest, averaged, ckpt-N) to files. A file
    asked for by name (the best or averaged weights, ``ckpt-N``) must be intact; the latest
    checkpoint falls back to the newest intact one, with a warning naming each damaged one passed over."""
    run_dir, checkpoints, best, averaged = run.path, run.checkpoints, run.best_weights, run.averaged_weights
    if weights == "averaged":
        if not averaged.is_file():
            raise NmtError(f"{run_dir} has no averaged weights ({averaged.relative_to(run_dir)}): write them with "
                           f"nmt average --run {run_dir} --last N")
        _read_weights_file(model, averaged, f"write them again with nmt average --run {run_dir} --last N")
    elif weights not in ("best", "latest"):
        if not re.fullmatch(r"ckpt-\d+", weights):
            raise NmtError(f"weights {weights!r}: expected best, latest, averaged or a checkpoint name such as "
                           "ckpt-1000")
        kept = ", ".join(p.name for p in reversed(checkpoint_prefixes(checkpoints))) or "none"
        if not (checkpoints / f"{weights}.index").is_file():
            raise NmtError(f"{checkpoints} has no checkpoint {weights} (kept: {kept})")
        problem = checkpoint_problem(checkpoints / weights)
        if problem is not None:
            raise NmtError(f"checkpoint {checkpoints / weights} is damaged ({problem}); "
                           f"choose another with --weights (kept: {kept})")
        read_checkpoint(model, checkpoints / weights)
    elif weights == "best" and best.is_file():
        _read_weights_file(model, best, "use --weights latest, or restore the file from a copy of the run")
    else:
        prefixes = checkpoint_prefixes(checkpoints)
        if not prefixes:
            raise NmtError(f"{run_dir}: no trained weights (neither {best.relative_to(run_dir)} nor a checkpoint)")
        intact = newest_intact(checkpoints)
        if intact is None:
            raise NmtError(f"no intact checkpoint in {checkpoints}: every one is damaged, the newest "
                           f"{prefixes[0]} ({checkpoint_problem(prefixes[0])})")
        read_checkpoint(model, intact)
        if weights == "best":
            log.warning("%s has no %s yet; using the checkpoint %s", run_dir, best.relative_to(run_dir), intact.name)

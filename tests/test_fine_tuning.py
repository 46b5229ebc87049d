"""Fine-tuning (train.init_from): a new run starts from another run's weights and tokenizers."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import pytest
import tensorflow as tf

import nmt
from nmt.config import load_config
from nmt.errors import NmtError
from nmt.losses import token_loss
from nmt.run_dir import RunDir, init_source
from nmt.tasks import task_for
from nmt.training import Trainer

from test_training import task_config, write_reverse_task


def first_loss(checkpoint: Path) -> float:
    """The loss of a run's first training step (before its first update), which its checkpoint keeps."""
    losses = tf.train.load_checkpoint(str(checkpoint)).get_tensor("train_losses/window/.ATTRIBUTES/VARIABLE_VALUE")
    return float(losses[0])


def in_domain(tmp_path: Path, name: str, steps: int, extra: dict | None = None) -> Path:
    """A fine-tuning config: another, smaller corpus of the same task, starting from tmp_path/general."""
    source, target = write_reverse_task(tmp_path, 300, seed=5)
    return task_config(tmp_path, tmp_path / name, steps=steps, extra={
        "data.train": {"format": "parallel", "source_path": str(source), "target_path": str(target)},
        "train.init_from": str(tmp_path / "general"), **(extra or {})})


@pytest.mark.slow
def test_fine_tuning_starts_from_the_source_weights_and_tokenizers(tmp_path: Path) -> None:
    general = tmp_path / "general"
    Trainer(load_config(task_config(tmp_path, general, steps=60))).train()
    config = load_config(in_domain(tmp_path, "tuned", steps=1))
    Trainer(config).train()
    tuned = tmp_path / "tuned"
    for name in ("source.model", "target.model"):  # the vocabulary is the source run's
        assert (tuned / "spm" / name).read_bytes() == (general / "spm" / name).read_bytes()
    # The fine-tuning run's first batch, as its trainer drew it.
    keras.utils.set_random_seed(config.seed)
    task = task_for(config)
    data = task.prepare_data(RunDir(tuned))
    batch = next(iter(task.training_dataset(data.train)))

    def loss_of(model: keras.Model) -> float:
        return float(token_loss(model(batch, training=True), batch["target_out"])[0])  # no dropout here

    step0 = first_loss(tuned / "checkpoints" / "ckpt-1")
    assert step0 == pytest.approx(loss_of(nmt.load(general).model), rel=1e-5)  # the source's best weights
    # ... which is what the source run had learned, not a fresh model's loss.
    fresh = task.build_model(data.source_tokenizer.vocab_size, data.target_tokenizer.vocab_size)
    assert step0 < loss_of(fresh) - 0.3
    # A resumed fine-tuning run continues from its own checkpoint: the source run is no longer needed.
    shutil.move(general, tmp_path / "moved")
    Trainer(load_config(in_domain(tmp_path, "tuned", steps=3))).train()
    assert tf.train.latest_checkpoint(tuned / "checkpoints").endswith("ckpt-3")


@pytest.mark.slow
def test_another_architecture_is_an_error_naming_the_keys(tmp_path: Path) -> None:
    Trainer(load_config(task_config(tmp_path, tmp_path / "general", steps=10))).train()
    changed = load_config(in_domain(tmp_path, "wider", steps=5, extra={
        "model.decoder.units": 64, "tokenizer.vocab_size": 30}))
    message = (r"train\.init_from: .*general has another architecture than this config \("
               r"model\.decoder\.units: 48 -> 64; tokenizer\.vocab_size: 20 -> 30\)")
    with pytest.raises(NmtError, match=message):
        Trainer(changed).train()
    assert not (tmp_path / "wider" / "checkpoints").exists()  # refused before anything was trained
    # Dropout shapes no weight: it may differ.
    source = init_source(load_config(in_domain(tmp_path, "drop", 5, extra={"model.encoder.dropout": 0.3})))
    assert (source.run_dir, source.model.decoder.units, source.tokenizer.vocab_size) == (
        str(tmp_path / "general"), 48, 20)  # the source run's own config
    with pytest.raises(NmtError, match=r"train\.init_from: .*missing is not a run directory"):
        init_source(load_config(in_domain(tmp_path, "none", 5, extra={"train.init_from": str(tmp_path / "missing")})))
    with pytest.raises(NmtError, match=r"train\.init_from: .* is this run's own run_dir"):
        load_config(in_domain(tmp_path, "self", 5, extra={"train.init_from": str(tmp_path / "self")}))


def test_nmt_train_says_a_bad_init_from_before_tensorflow_loads(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = in_domain(tmp_path, "orphan", 5, extra={"train.init_from": str(tmp_path / "missing")})
    code = ("import sys\nfrom nmt.cli import main\n"
            f"status = main(['train', '--config', {str(config)!r}])\n"
            "print('tensorflow imported' if 'tensorflow' in sys.modules else 'tensorflow not imported')\n"
            "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "nmt: error: train.init_from: " in done.stderr and "missing is not a run directory" in done.stderr
    assert done.stdout.strip() == "tensorflow not imported"


@pytest.mark.slow
def test_init_from_naming_the_run_dir_given_on_the_command_line_changes_nothing(tmp_path: Path, capsys) -> None:
    """`nmt train --run-dir R --set train.init_from=R` on a trained run R: refused before anything
    is written, so R still translates and exports afterwards."""
    from nmt.cli import main

    config = task_config(tmp_path, tmp_path / "trained", steps=3)
    Trainer(load_config(config)).train()
    run = tmp_path / "trained"
    stored = (run / "config.yaml").read_bytes()
    assert main(["train", "--config", str(config), "--run-dir", str(run), "--set", f"train.init_from={run}"]) == 2
    assert "is this run's own run_dir" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == stored
    assert nmt.load(run).translate(["abc"])  # the run loads as before

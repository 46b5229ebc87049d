"""Reliability of the `nmt` command: damaged run directories, a full disk, bad data found while
SentencePiece reads it, NaN options, outputs that would overwrite their input, checks before
TensorFlow is imported, and no CUDA start-up noise on machines without a GPU. Real commands in
subprocesses (tests/faults.py), real damage on copies of the session's tiny runs."""

from __future__ import annotations

import glob
import gzip
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nmt.cli import keep_stderr_line, main
from nmt.config import load_config
from nmt.errors import NmtError

from faults import ROOT, fill_disk, run_nmt, scramble, small_disk, truncate

NOISE = ["Could not find cuda drivers", "failed call to cuInit", "All log messages before absl::InitializeLog"]
NO_DRIVER = not (glob.glob("/dev/nvidia*") or os.path.exists("/proc/driver/nvidia"))


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    return copy


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The command failed with exit 2 and one `nmt: error:` line, its last, and no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "At:" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nmt: error: ") and sum(line.startswith("nmt: ") for line in result.stderr.splitlines()) == 1
    if NO_DRIVER:
        assert not [n for n in NOISE if n in result.stderr], result.stderr
    return last


def data_file(run: Path) -> Path:
    return run / "checkpoints" / "ckpt-40.data-00000-of-00001"


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.en"
    path.write_text("Good morning.\nThank you.\n", encoding="utf-8")
    return path


# --- 2: damaged files in a run directory ------------------------------------------------------


def translations_of(run: Path, weights: str, source: Path) -> list[str]:
    """What the package translates ``source`` to with those weights (the CLI's default beam)."""
    import nmt

    lines = source.read_text(encoding="utf-8").splitlines()
    return [h[0].text for h in nmt.load(run, weights=weights).translate(lines)]


@pytest.mark.slow
def test_latest_falls_back_past_a_truncated_checkpoint(tiny_run: Path, tmp_path: Path, source: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    truncate(data_file(run))
    result = run_nmt(["translate", "--run", run, "--weights", "latest", "-i", source])
    assert result.returncode == 0, result.stderr
    assert f"warning: checkpoint {run / 'checkpoints' / 'ckpt-40'} is damaged (Read less bytes than requested)" \
        in result.stderr
    assert result.stdout.splitlines() == translations_of(run, "ckpt-20", source)  # the intact one before it


@pytest.mark.slow
def test_no_best_file_falls_back_past_a_scrambled_checkpoint(tiny_run: Path, tmp_path: Path, source: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    scramble(data_file(run))
    (run / "best" / "model.weights.h5").unlink()
    result = run_nmt(["translate", "--run", run, "-i", source])
    assert result.returncode == 0, result.stderr
    assert f"warning: checkpoint {run / 'checkpoints' / 'ckpt-40'} is damaged (" in result.stderr
    assert "using the checkpoint ckpt-20" in result.stderr
    assert result.stdout.splitlines() == translations_of(run, "ckpt-20", source)


@pytest.mark.slow
def test_a_damaged_checkpoint_asked_for_by_name_is_an_error(tiny_run: Path, tmp_path: Path, source: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    scramble(data_file(run))
    line = one_line_error(run_nmt(["translate", "--run", run, "--weights", "ckpt-40", "-i", source]))
    assert line.startswith(f"nmt: error: checkpoint {run / 'checkpoints' / 'ckpt-40'} is damaged (")
    assert line.endswith("choose another with --weights (kept: ckpt-20, ckpt-40)")


@pytest.mark.slow
def test_no_intact_checkpoint_is_an_error_naming_the_newest(tiny_run: Path, tmp_path: Path, source: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    for data in (run / "checkpoints").glob("ckpt-*.data-*"):
        truncate(data)
    line = one_line_error(run_nmt(["translate", "--run", run, "--weights", "latest", "-i", source]))
    assert line == (f"nmt: error: no intact checkpoint in {run / 'checkpoints'}: every one is damaged, the newest "
                    f"{run / 'checkpoints' / 'ckpt-40'} (Read less bytes than requested)")


@pytest.mark.slow
def test_a_truncated_best_file_is_an_error_naming_it(tiny_run: Path, tmp_path: Path, source: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    truncate(run / "best" / "model.weights.h5")
    line = one_line_error(run_nmt(["translate", "--run", run, "-i", source]))
    assert line.startswith(f"nmt: error: {run / 'best' / 'model.weights.h5'}: damaged weights file (")
    assert line.endswith("use --weights latest, or restore the file from a copy of the run")


@pytest.mark.slow
def test_a_truncated_tokenizer_is_an_error_naming_it(tiny_run: Path, tmp_path: Path, source: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    truncate(run / "spm" / "target.model")
    line = one_line_error(run_nmt(["translate", "--run", run, "-i", source]))
    assert line == (f"nmt: error: {run / 'spm' / 'target.model'}: damaged SentencePiece model (it does not parse); "
                    "restore it from a copy of the run, or train the run again")


# --- 3: a full disk --------------------------------------------------------------------------


@pytest.mark.slow
def test_full_disk_names_the_output_and_leaves_no_file(tiny_run: Path, tmp_path: Path) -> None:
    source = tmp_path / "many.en"
    source.write_text("Good morning.\nI like cats.\n" * 300, encoding="utf-8")
    with small_disk(tmp_path, kib=64) as disk:
        filler = fill_disk(disk)
        target = disk / "out.ja"
        # n-best rows ("0 ||| text ||| -1.2345"): some 30 KB however short the tiny model's translations
        line = one_line_error(run_nmt(["translate", "--run", tiny_run, "-i", source, "-o", target, "--beam", "2",
                                       "--nbest", "2"]))
        assert line == f"nmt: error: no space left on device while writing {target}"
        assert sorted(os.listdir(disk)) == [filler.name]  # neither the output nor its temporary file


# --- 5: data errors found while SentencePiece reads the corpus ----------------------------------


def bad_data_config(tmp_path: Path, train: dict) -> Path:
    tree = {
        "run_dir": str(tmp_path / "run"),
        "data": {"train": train},
        "tokenizer": {"model_type": "word", "vocab_size": 20},
        "model": {"embedding_dim": 8, "encoder": {"cell": "gru", "units": 8},
                  "decoder": {"cell": "gru", "units": 8, "attention": "none"}},
        "train": {"steps": 2, "batch_size": 2},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def _gzip_cut(path: Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(f"hello world {i}\tbonjour {i}\n" for i in range(3000))
    truncate(path, keep=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["parallel", "utf8", "short_row", "gzip"])
def test_data_errors_inside_sentencepiece_are_the_readers_message(tmp_path: Path, case: str) -> None:
    lines = "one two\nthree four\nfive six\n"
    if case == "parallel":
        (tmp_path / "s.txt").write_text(lines, encoding="utf-8")
        (tmp_path / "t.txt").write_text("un deux\ntrois\n", encoding="utf-8")
        train = {"format": "parallel", "source_path": str(tmp_path / "s.txt"), "target_path": str(tmp_path / "t.txt")}
        expected = (f"nmt: error: parallel files differ in length: {tmp_path / 't.txt'} ends at line 2, "
                    f"{tmp_path / 's.txt'} goes on at line 3")
    elif case == "utf8":
        (tmp_path / "c.tsv").write_bytes(b"one\tun\ntwo\tdeux\nbad \xff\tx\n")
        train, expected = {"format": "tsv", "path": str(tmp_path / "c.tsv")}, \
            f"nmt: error: {tmp_path / 'c.tsv'}:3: invalid UTF-8 at byte 4 of the line"
    elif case == "short_row":
        (tmp_path / "c.tsv").write_text("one\tun\ntwo\tdeux\nalone\n", encoding="utf-8")
        train, expected = {"format": "tsv", "path": str(tmp_path / "c.tsv")}, \
            f"nmt: error: {tmp_path / 'c.tsv'}:3: expected at least 2 tab-separated columns, found 1"
    else:
        _gzip_cut(tmp_path / "c.tsv.gz")
        train = {"format": "tsv", "path": str(tmp_path / "c.tsv.gz")}
        expected = (f"nmt: error: {tmp_path / 'c.tsv.gz'}: corrupt or truncated file: Compressed file ended before "
                    "the end-of-stream marker was reached")
    line = one_line_error(run_nmt(["train", "--config", bad_data_config(tmp_path, train)]))
    assert line == expected


# --- 6: NaN and infinities -----------------------------------------------------------------


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan"])
def test_config_floats_must_be_finite(tmp_path: Path, value: str) -> None:
    with pytest.raises(NmtError, match=r"train\.learning_rate: must be a finite number, got"):
        load_config("en-ja-tiny.yaml", [f"train.learning_rate={value}"])
    path = tmp_path / "c.yaml"
    path.write_text(f"decode:\n  length_penalty: {value}\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"decode\.length_penalty: must be a finite number, got"):
        load_config(path)


def test_cli_float_options_must_be_finite(cycle_run: Path) -> None:
    for option in ("--temperature", "--top-p"):
        result = run_nmt(["generate", "--run", cycle_run, option, "nan"], timeout=60)
        assert result.returncode == 2
        assert f"error: argument {option}: expected a finite number, got 'nan'" in result.stderr
    result = run_nmt(["generate", "--run", cycle_run, "--temperature", "inf"], timeout=60)
    assert result.returncode == 2 and "expected a finite number, got 'inf'" in result.stderr


def test_api_refuses_nan(cycle_run: Path) -> None:
    from nmt.inference import load

    lm = load(cycle_run)
    # The messages are nmt.signatures' rules, the same for the API, the CLI and the server.
    for name in ("temperature", "top_p"):
        with pytest.raises(NmtError, match=f"{name} must be a finite number, got nan"):
            lm.generate("north", max_tokens=3, **{name: math.nan})
    with pytest.raises(NmtError, match="temperature must be a finite number, got inf"):
        lm.generate("north", temperature=math.inf)
    with pytest.raises(NmtError, match=r"k must be an integer between 1 and 8, got nan"):
        lm.next_words("north", k=math.nan)


# --- 7: a vocabulary smaller than asked -----------------------------------------------------


def test_shrunk_vocabulary_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    from nmt.tokenizer import Tokenizer

    with caplog.at_level(logging.WARNING, logger="nmt.tokenizer"):
        tokenizer = Tokenizer.train(["a b c"] * 200, model_type="char", vocab_size=100)
    assert tokenizer.vocab_size == 8  # a, b, c, the space piece and the 4 reserved ids
    assert caplog.messages == ["tokenizer.vocab_size is 100, but the training text has too few distinct characters "
                               "for that: using 8 (set tokenizer.vocab_size to 8 to silence this)"]


# --- 8: an output that is the input, or a directory -----------------------------------------


def test_output_that_is_the_input_is_refused(tiny_run: Path, tmp_path: Path, source: Path, capsys) -> None:
    link = tmp_path / "link.en"
    link.symlink_to(source)
    before = source.read_text(encoding="utf-8")
    for output in (source, tmp_path / "." / source.name, link):
        assert main(["translate", "--run", str(tiny_run), "-i", str(source), "-o", str(output)]) == 2
        assert capsys.readouterr().err == (f"nmt: error: -o {output} is the input file (-i {source}): writing there "
                                           "would replace it; choose another output file\n")
    assert source.read_text(encoding="utf-8") == before
    assert main(["evaluate", "--hyp", str(source), "--ref", str(link)]) == 2
    assert capsys.readouterr().err == (f"nmt: error: --hyp {source} and --ref {link} are the same file: "
                                       "nothing to score\n")


def test_output_that_is_a_directory_names_it(tiny_run: Path, tmp_path: Path, source: Path, capsys) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["translate", "--run", str(tiny_run), "-i", str(source), "-o", f"{folder}/"]) == 2
    assert capsys.readouterr().err == f"nmt: error: -o {folder}/: is a directory; give a file name\n"
    from nmt.io import atomic_write_text

    with pytest.raises(IsADirectoryError) as error:
        atomic_write_text(folder, "x")
    assert error.value.filename == str(folder) and os.listdir(folder) == []


# --- 16: checks before TensorFlow is imported -------------------------------------------------


def test_bad_arguments_fail_before_tensorflow_is_imported(tiny_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {}\n", encoding="utf-8")
    missing = str(tmp_path / "missing.en")
    calls = [
        ["train", "--config", str(bad)],
        ["train", "--config", "en-ja-tiny.yaml", "--set", "train.stesp=5"],
        ["train", "--config", "en-ja-tiny.yaml", "--set", "train.learning_rate=.nan"],
        ["translate", "--run", str(tmp_path / "nope")],
        ["translate", "--run", str(tiny_run), "-i", missing],
        ["translate", "--run", str(tiny_run), "--beam", "0"],
        ["generate", "--run", str(tiny_run), "--temperature", "-1"],
        ["next-word", "--run", str(tiny_run), "x", "-k", "0"],
        ["evaluate", "--run", str(tiny_run), "--src", missing, "--ref", missing],
        ["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "e")],
        ["serve", "--config", str(bad), "--max-connections", "0"],
        ["translate", "--run", str(tiny_run), "--shortlist"],  # the run has no shortlist/
        ["shortlist", "--run", str(tmp_path / "nope")],
    ]
    script = ("import json, sys\nfrom nmt.cli import main\n"
              f"codes = [main(argv) for argv in {calls!r}]\n"
              "print(json.dumps([codes, 'tensorflow' in sys.modules]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    codes, imported = json.loads(result.stdout)
    assert codes == [2] * len(calls), result.stderr
    assert not imported
    errors = result.stderr.splitlines()
    assert len(errors) == len(calls) and all(e.startswith("nmt: error: ") for e in errors), errors
    assert errors[6] == "nmt: error: --temperature must be >= 0 (0 is greedy), got -1.0"
    assert errors[7] == "nmt: error: -k must be an integer between 1 and 100, got 0"


# --- 17: no CUDA start-up noise without a GPU ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not NO_DRIVER, reason="an NVIDIA driver is present: its messages are not noise here")
def test_no_cuda_noise_without_a_driver_while_real_errors_show(tmp_path: Path) -> None:
    # A real C++ error written to the descriptor while TensorFlow loads must come through the filter.
    script = (
        "import os, sys\n"
        "class Loud:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow':\n"
        "            os.write(2, b'E0000 00:00:1.0 1 real_trouble.cc:7] something real broke\\n')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Loud())\n"
        "from nmt.cli import import_tensorflow\n"
        "import_tensorflow()\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 0 and result.stdout == "True\n", result.stderr
    assert "real_trouble.cc:7] something real broke" in result.stderr
    assert not [n for n in NOISE if n in result.stderr], result.stderr


def test_noise_filter_keeps_everything_else() -> None:
    assert not keep_stderr_line("I0000 00:00:1796161340.332230    4105 cudart_stub.cc:31] Could not find cuda "
                                "drivers on your machine, GPU will not be used.\n")
    assert not keep_stderr_line("E0000 00:00:1796161347.501217    4105 cuda_platform.cc:52] failed call to cuInit: "
                                "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
    assert keep_stderr_line("E0000 00:00:1796161347.501217    4105 cuda_executor.cc:1] out of memory\n")
    assert keep_stderr_line("nmt: error: something\n")

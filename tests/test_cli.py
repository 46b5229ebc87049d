"""The `nmt` command: line counts, stdin/stdout, n-best, evaluation numbers and error messages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

import nmt
from nmt.cli import main
from nmt.errors import NmtError

ROOT = Path(__file__).resolve().parent.parent


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_translate_keeps_one_line_per_input_line(tiny_run: Path, tmp_path: Path, capsys) -> None:
    long_line = " ".join(["the cat sat on the mat"] * 100)  # ~600 pieces, over decode.max_source_length
    lines = ["Good morning.", "", "I like cats.", "   ", long_line, "Thank you."]
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "out.ja"
    code, _, err = run_main(["translate", "--run", str(tiny_run), "-i", str(source), "-o", str(output),
                             "--beam", "2"], capsys)
    assert code == 0
    translated = output.read_text(encoding="utf-8").split("\n")
    assert translated[-1] == "" and len(translated) - 1 == len(lines)
    assert translated[1] == "" and translated[3] == ""  # empty (and blank) in, empty out
    assert "1 input line(s) longer than decode.max_source_length=200" in err
    assert re.search(r"^translated 6 line\(s\) in [0-9.]+ s \([0-9.]+ lines/s\)$", err, re.M), err


def test_nbest_output_format(tiny_run: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.en"
    source.write_text("Good morning.\n\nI like cats.\n", encoding="utf-8")
    code, out, _ = run_main(["translate", "--run", str(tiny_run), "-i", str(source), "--beam", "3",
                             "--nbest", "3"], capsys)
    assert code == 0
    rows = [line.split(" ||| ") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["0", "0", "0", "1", "1", "1", "2", "2", "2"]
    assert [r[1] for r in rows[3:6]] == ["", "", ""]  # an empty line still gets its n rows
    for first in (0, 6):
        scores = [float(r[2]) for r in rows[first : first + 3]]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
def test_translate_stdin_to_stdout_through_the_console_script(tiny_run: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "translate", "--run", str(tiny_run), "--beam", "1"],
        input=b"Good morning.\n\nThank you.\n", capture_output=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    greedy = [h[0].text for h in nmt.load(tiny_run).translate(["Good morning.", "Thank you."], beam_size=1)]
    assert result.stdout.decode("utf-8") == f"{greedy[0]}\n\n{greedy[1]}\n"  # an empty line stays empty


def test_evaluate_matches_sacrebleu(tmp_path: Path, capsys) -> None:
    hypotheses = ["the cat is on the mat", "there is a dog in the garden", "hello world"]
    references = ["the cat sat on the mat", "a dog is in the garden", "hello there world"]
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    ref.write_text("\n".join(references) + "\n", encoding="utf-8")
    code, out, _ = run_main(["evaluate", "--hyp", str(hyp), "--ref", str(ref), "--tokenize", "13a"], capsys)
    assert code == 0
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert f"BLEU = {expected:.2f}" in out
    assert f"chrF = {sacrebleu.corpus_chrf(hypotheses, [references]).score:.2f}" in out
    assert "tok:13a" in out and "nrefs:1" in out


def test_evaluate_japanese_uses_mecab(tiny_run: Path, tmp_path: Path, capsys) -> None:
    hyp, ref = tmp_path / "hyp.ja", tmp_path / "ref.ja"
    hyp.write_text("私は猫が好きです。\n", encoding="utf-8")
    ref.write_text("私は犬が好きです。\n", encoding="utf-8")
    code, out, _ = run_main(["evaluate", "--run", str(tiny_run), "--hyp", str(hyp), "--ref", str(ref)], capsys)
    assert code == 0
    expected = sacrebleu.corpus_bleu(["私は猫が好きです。"], [["私は犬が好きです。"]], tokenize="ja-mecab").score
    assert f"BLEU = {expected:.2f}" in out and "tok:ja-mecab" in out


def test_missing_run_directory_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code, _, err = run_main(["translate", "--run", str(tmp_path / "nope")], capsys)
    assert code == 2
    assert "is not a run directory: config.yaml is missing" in err


def test_invalid_utf8_input_names_the_line_and_keeps_old_output(tiny_run: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.en"
    source.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    output = tmp_path / "out.ja"
    output.write_text("previous result\n", encoding="utf-8")
    code, _, err = run_main(["translate", "--run", str(tiny_run), "-i", str(source), "-o", str(output)], capsys)
    assert code == 2
    assert f"{source}:3: invalid UTF-8" in err
    assert output.read_text(encoding="utf-8") == "previous result\n"


def test_config_typo_through_the_cli(capsys) -> None:
    code, _, err = run_main(["train", "--config", "en-ja-tiny.yaml", "--set", "train.stesp=5"], capsys)
    assert code == 2
    assert "unknown config key train.stesp; did you mean train.steps?" in err


def test_bad_arguments(tiny_run: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.en"
    source.write_text("hello\n", encoding="utf-8")
    code, _, err = run_main(["translate", "--run", str(tiny_run), "-i", str(source), "--beam", "2",
                             "--nbest", "3"], capsys)
    assert code == 2 and "--nbest must be between 1 and the beam size (2)" in err
    code, _, err = run_main(["translate", "--run", str(tiny_run), "--beam", "0"], capsys)
    assert code == 2 and "--beam must be at least 1" in err
    code, _, err = run_main(["evaluate", "--ref", str(source)], capsys)
    assert code == 2 and "needs --run and --src" in err


def test_length_penalty_option_is_the_apis_with_decode(tiny_run: Path, tmp_path: Path, capsys) -> None:
    import nmt

    lines = ["Good morning.", "I like cats very much.", "Where is the station?"]
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def cli_scores(alpha: str) -> list[tuple[str, float]]:
        code, out, _ = run_main(["translate", "--run", str(tiny_run), "-i", str(source), "--beam", "3",
                                 "--nbest", "3", "--length-penalty", alpha], capsys)
        assert code == 0
        return [(row.split(" ||| ")[1], float(row.split(" ||| ")[2])) for row in out.splitlines()]

    translator = nmt.load(tiny_run)
    shipped = translator.config.decode.length_penalty
    penalised = translator.with_decode(length_penalty=2.0)
    api = [(h.text, round(h.score, 4)) for hyps in penalised.translate(lines, beam_size=3, nbest=3) for h in hyps]
    assert cli_scores("2") == api
    assert translator.config.decode.length_penalty == shipped and penalised.model is translator.model
    with pytest.raises(NmtError, match=r"decode\.length_penalty: must not be negative, got -0\.5"):
        translator.with_decode(length_penalty=-0.5)
    # With no penalty a score is the plain log-probability: further from 0 than the same text's penalised score.
    plain = dict(cli_scores("0"))
    shared = [(text, score) for text, score in api if text in plain]
    # (equal only for a one-token output, whose penalty is 1).
    assert shared and all(abs(score) <= abs(plain[text]) for text, score in shared)
    assert any(abs(score) < abs(plain[text]) for text, score in shared)


def test_unwritable_output_is_a_clear_error(tiny_run: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.en"
    source.write_text("hello\n", encoding="utf-8")
    target = tmp_path / "file"
    target.write_text("", encoding="utf-8")
    code, _, err = run_main(["translate", "--run", str(tiny_run), "-i", str(source), "-o",
                             str(target / "out.ja")], capsys)  # a folder that is a file
    assert code == 2 and err.startswith("nmt: error: ") and "Traceback" not in err


def test_run_dir_is_taken_as_typed(tmp_path: Path) -> None:
    from nmt.cli import build_parser

    args = build_parser().parse_args(["train", "--config", "en-ja-tiny.yaml", "--run-dir", "runs/a #1"])
    assert args.run_dir == "runs/a #1"


def test_help_teaches(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--nbest" in out and "atomically" in out and "nmt translate --run runs/en-ja" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--top-p", "2"], "--top-p must be in (0, 1], got 2.0"),
        (["generate", "--temperature", "-0.5"], "--temperature must be >= 0 (0 is greedy), got -0.5"),
        (["generate", "--max-tokens", "2001"], "--max-tokens must be an integer between 1 and 2000, got 2001"),
        (["generate", "--top-k", "-1"], "--top-k must be an integer between 0 (off) and 2147483647, got -1"),
        (["generate", "--seed", "-1"], "--seed must be an integer between 0 and 2**31 - 1, got -1"),
        (["generate", "--seed", str(2**31 - 1), "--num", "2"], "--seed 2147483647 with --num 2: the last sample's "
         "--seed must be an integer between 0 and 2**31 - 1, got 2147483648"),
        (["next-word", "x", "-k", "101"], "-k must be an integer between 1 and 100, got 101"),
        (["inspect", "x", "-k", "0"], "-k must be at least 1, got 0"),
        (["export", "--out", "e", "--version", "0"],
         "--version must be between 1 and 9223372036854775807 (TF Serving's versions are int64), got 0"),
        (["export", "--out", "e", "--version", "99999999999999999999"],
         "--version must be between 1 and 9223372036854775807 (TF Serving's versions are int64), got "
         "99999999999999999999"),
        (["export", "--out", str(ROOT / "pyproject.toml")], f"--out {ROOT / 'pyproject.toml'} is a file: it must be "
         "the model's folder, where each version is a numbered subfolder (e.g. --out serve/models/en-ja)"),
        (["translate", "--length-penalty", "-1"], "--length-penalty must not be negative, got -1.0"),
        (["evaluate", "--hyp", "h", "--ref", "r", "--length-penalty", "1"],
         "--hyp scores a finished translation: --beam and --length-penalty apply when translating --src"),
    ],
)
def test_option_checks_use_the_shared_rules_and_name_the_option(argv: list[str], message: str, tmp_path: Path,
                                                                   capsys) -> None:
    # The run does not exist: the option is checked first, and nothing loads TensorFlow for it.
    code, _, err = run_main([argv[0], "--run", str(tmp_path / "nope"), *argv[1:]], capsys)
    assert code == 2 and err == f"nmt: error: {message}\n"


def test_defaults_come_from_the_signatures(capsys) -> None:
    from nmt import signatures
    from nmt.cli import build_parser

    args = build_parser().parse_args(["generate", "--run", "r"])
    # The values written out (a changed default must change this test), and their one source.
    assert (args.max_tokens, args.temperature, args.top_k, args.top_p) == (100, 1.0, 0, 1.0) == (
        signatures.DEFAULT_MAX_TOKENS, signatures.DEFAULT_TEMPERATURE, signatures.DEFAULT_TOP_K,
        signatures.DEFAULT_TOP_P)
    assert build_parser().parse_args(["next-word", "--run", "r"]).k == 5 == signatures.DEFAULT_K
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    assert f"(default {signatures.INSPECT_K})" in " ".join(capsys.readouterr().out.split())  # help wraps lines


def test_library_logs_reach_stderr_and_quiet_keeps_the_warnings(capsys) -> None:
    import logging

    from nmt.cli import build_parser
    from nmt.cli.startup import setup_logging

    assert build_parser().parse_args(["--quiet", "report", "--run", "r"]).quiet
    assert build_parser().parse_args(["report", "--run", "r", "-q"]).quiet
    assert not build_parser().parse_args(["report", "--run", "r"]).quiet
    log = logging.getLogger("nmt.training")
    try:
        setup_logging(quiet=False)
        log.info("resumed from step %d", 20)
        log.warning("something odd")
        setup_logging(quiet=False)  # a second command in the same process: still one handler
        log.info("step 40/40")
        assert capsys.readouterr().err == "resumed from step 20\nwarning: something odd\nstep 40/40\n"
        setup_logging(quiet=True)
        log.info("new best model")
        log.warning("still shown")
        assert capsys.readouterr().err == "warning: still shown\n"
    finally:
        setup_logging(quiet=False)

"""Translation speed, ours vs OpenNMT-tf 2.32: sentences/s on the 500-sentence dev set, one run.

Takes the two trained models of a bench/quality.py work folder (the same 8.89M-parameter shape,
the last training step both toolkits saved a checkpoint at) and translates small_parallel_enja's dev.en
at beam 1 and beam 5, 32 sentences a batch, with all cores:
  - CLI: `nmt translate` vs `onmt-main infer`. Both sort the input by length into batches and both
    report their own translation time, model loading and tracing excluded (ours: "translated N
    line(s) in X s", the peer: --log_prediction_time's "Total prediction time"); the process wall
    time, start-up included, is reported too.
  - SavedModel: `nmt export` vs `onmt-main export` (text in, text out: SentencePiece / a space
    tokenizer in the graph), each loaded and timed by bench/savedmodel_speed.py in its own
    virtualenv: batches in file order, after one warm-up batch.
  - Shortlist: ours again with the run's vocabulary shortlist (`nmt shortlist`, --first/--best 100/50),
    CLI (`--shortlist`) and its own export (`nmt export --shortlist`, the table in the graph).
Then --sweep FIRST:BEST ... rebuilds the shortlist at each size and measures the SavedModel at beam 5
(one round), dev BLEU and the coverage: the share of dev reference pieces inside their batch's shortlist.
Runs alternate ours / peer for every setting, --rounds times; the best round of each counts (the
least disturbed by the machine's other load). With --ours-before DIR (a git worktree of an earlier
commit), ours as of DIR runs too, in the same rounds (CLI and its own export): before and after a
change, side by side. BLEU of every output is printed as a check that both
did the same work.

    python bench/quality.py --venv PEER_VENV --work W        # trains the two models
    python bench/translation_speed.py --venv PEER_VENV --work W
    git worktree add /tmp/before COMMIT && python bench/translation_speed.py --work W --ours-before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import bleu, checkpoints  # noqa: E402
from throughput import DATA, PEER, QUIET, ROOT  # noqa: E402

from nmt.constants import DEFAULT_SHORTLIST_BEST, DEFAULT_SHORTLIST_FIRST  # noqa: E402

SPEED = Path(__file__).resolve().parent / "savedmodel_speed.py"


def timed(command: list[str], log: Path, package: str | None = None) -> tuple[float, str]:
    """(wall seconds, stdout + stderr) of a command that must succeed; its output tail goes to log.
    ``package``: a folder whose nmt package the command imports (PYTHONPATH) instead of this one."""
    start = time.perf_counter()
    env = {**os.environ, **QUIET, **({"PYTHONPATH": package} if package else {})}
    # `python -m` puts the working folder first on sys.path: run in the package's own folder.
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=package or ROOT)
    wall = time.perf_counter() - start
    log.write_text(done.stdout[-5000:] + done.stderr[-20000:], encoding="utf-8")
    if done.returncode:
        sys.exit(f"failed ({log}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return wall, done.stdout + done.stderr


def peer_command(venv: Path, model_dir: Path, override: Path, *rest: str) -> list[str]:
    return [str(venv / "bin" / "onmt-main"), "--model", str(PEER / "model.py"),
            "--config", str(model_dir / "config.yml"), str(override), "--model_dir", str(model_dir), *rest]


def export_ours(work: Path, key: str, checkpoint: str, package: str | None, shortlist: bool) -> Path:
    exports = work / "exports"
    ours = exports / f"{key}-{checkpoint}" / "1"
    shutil.rmtree(ours.parent, ignore_errors=True)  # exported anew: the code (or the shortlist) may have changed
    timed([sys.executable, "-m", "nmt.cli", "export", "--run", str(work / "ours"), "--out", str(ours.parent),
           "--version", "1", "--weights", checkpoint, "--shortlist" if shortlist else "--no-shortlist"],
          exports.parent / f"{key}-export.log", package)
    return ours


def build_shortlist(work: Path, first: int, best: int) -> dict:
    """`nmt shortlist` on our run at this size; its coverage of the dev references, batched as decoding
    batches them (32 a batch), and its mean size."""
    from nmt.run_dir import RunDir
    from nmt.shortlist import Shortlist, coverage
    from nmt.tokenizer import Tokenizer

    wall, _ = timed([sys.executable, "-m", "nmt.cli", "shortlist", "--run", str(work / "ours"), "--first", str(first),
                     "--best", str(best)], work / "shortlist.log")
    run = RunDir(work / "ours")
    source, target = Tokenizer.load(run.spm / "source.model"), Tokenizer.load(run.spm / "target.model")
    shortlist = Shortlist.load(run.shortlist, source.vocab_size, target.vocab_size)
    lines = {side: (DATA / f"dev.{side}").read_text(encoding="utf-8").splitlines() for side in ("en", "ja")}
    covered = coverage(shortlist, source.encode(lines["en"]), target.encode(lines["ja"]), 32)
    return {"first": first, "best": best, "build_s": round(wall, 1), "coverage": round(covered.share, 4),
            "mean_allowed": round(covered.mean_size, 1), "vocabulary": target.vocab_size}


def export_both(work: Path, venv: Path, ours_checkpoint: str, peer_checkpoint: Path,
                before: str | None) -> dict[str, Path]:
    exports = work / "exports"
    paths = {"ours": export_ours(work, "ours", ours_checkpoint, None, False),
             "short": export_ours(work, "short", ours_checkpoint, None, True)}
    if before:
        paths["before"] = export_ours(work, "before", ours_checkpoint, before, False)
    for beam in (1, 5):
        target = exports / f"peer-{peer_checkpoint.name}-beam{beam}"
        override = exports / f"peer-beam{beam}.yml"
        if not (target / "saved_model.pb").is_file():
            exports.mkdir(parents=True, exist_ok=True)
            override.write_text(f"params:\n  beam_width: {beam}\n"
                                "data:\n  source_tokenization: {type: SpaceTokenizer}\n"
                                "  target_tokenization: {type: SpaceTokenizer}\n", encoding="utf-8")
            timed(peer_command(venv, work / "peer", override, "--checkpoint_path", str(peer_checkpoint), "export",
                               "--output_dir", str(target), "--format", "saved_model"),
                  exports / f"peer-beam{beam}.log")
        paths[f"peer{beam}"] = target
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="a bench/quality.py work folder (holds ours/ and peer/)")
    parser.add_argument("--venv", default=str(PEER / "onmt-venv"), help="the peer's virtualenv")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 round")
    parser.add_argument("--ours-before", metavar="DIR",
                        help="also time ours as of DIR (a git worktree of an earlier commit), in the same rounds")
    parser.add_argument("--sweep", nargs="*", default=["50:20", "100:50", "200:100", "400:200"], metavar="FIRST:BEST",
                        help="shortlist sizes measured after the rounds (SavedModel, beam 5)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "translation_speed.json"))
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    work, venv = Path(args.work).resolve(), Path(args.venv).resolve()
    starts = json.loads((work / "starts.json").read_text(encoding="utf-8"))
    saved = {name: {step: path for _, step, path in checkpoints(folder, starts[name])}
             for name, folder in (("ours", work / "ours" / "checkpoints"), ("peer", work / "peer"))}
    common = sorted(set(saved["ours"]) & set(saved["peer"]))
    if not common:
        sys.exit(f"{work}: no training step at which both toolkits saved a checkpoint")
    # The same step in both: how long outputs are (and so decoding time) depends on training.
    ours_step = peer_step = common[-1]
    ours_path, peer_path = saved["ours"][ours_step], saved["peer"][peer_step]
    config = (work / "ours" / "config.yaml").read_text(encoding="utf-8")
    if not re.search(r"^\s*beam_size: 5$", config, re.M):
        sys.exit(f"{work / 'ours'}: the export's translate signature uses decode.beam_size, which is not 5")
    before = str(Path(args.ours_before).resolve()) if args.ours_before else None
    shortlist = build_shortlist(work, DEFAULT_SHORTLIST_FIRST, DEFAULT_SHORTLIST_BEST)
    print(f"shortlist {shortlist}", flush=True)
    exports = export_both(work, venv, ours_path.name, peer_path, before)
    outputs = work / "speed"
    outputs.mkdir(exist_ok=True)
    source = str(DATA / "dev.en")
    results: dict[str, list[dict]] = {}
    sentences = len((DATA / "dev.en").read_text(encoding="utf-8").splitlines())

    def record(key: str, wall: float, seconds: float, output: Path) -> None:
        results.setdefault(key, []).append({"wall_s": round(wall, 2), "seconds": round(seconds, 3),
                                            "sentences_per_s": round(sentences / seconds, 2),
                                            "bleu": round(bleu(output), 2)})
        print(f"  {key}: {sentences / seconds:.1f} sentences/s ({seconds:.2f} s, process {wall:.1f} s), "
              f"BLEU {results[key][-1]['bleu']:.2f}", flush=True)

    for round_number in range(rounds):
        print(f"round {round_number + 1}", flush=True)
        for beam in (1, 5):
            for key, package in (("ours", None), ("short", None), ("before", before)):
                if key == "before" and not before:
                    continue
                output = outputs / f"{key}-cli-beam{beam}.ja"
                listed = ["--shortlist"] if key == "short" else []
                wall, text = timed([sys.executable, "-m", "nmt.cli", "translate", "--run", str(work / "ours"),
                                    "--weights", ours_path.name, "--beam", str(beam), "--batch-size", "32",
                                    "-i", source, "-o", str(output), *listed], outputs / f"{key}-cli.log", package)
                record(f"{key}_cli_beam{beam}", wall,
                       float(re.search(r"translated \d+ line\(s\) in ([0-9.]+) s", text).group(1)), output)
            override = outputs / f"peer-infer-beam{beam}.yml"
            override.write_text(f"params:\n  beam_width: {beam}\ninfer:\n  batch_size: 32\n  batch_type: examples\n",
                                encoding="utf-8")
            output = outputs / f"peer-cli-beam{beam}.ja"
            wall, text = timed(peer_command(venv, work / "peer", override, "--checkpoint_path", str(peer_path), "infer",
                                            "--features_file", source, "--predictions_file", str(output),
                                            "--log_prediction_time"), outputs / "peer-cli.log")
            record(f"peer_cli_beam{beam}", wall,
                   float(re.search(r"Total prediction time \(s\): ([0-9.]+)", text).group(1)), output)
            ours_signature = "translate" if beam == 5 else "translate_greedy"
            for key, python, export, signature, name in (
                ("ours", sys.executable, exports["ours"], ours_signature, "translations"),
                ("short", sys.executable, exports["short"], ours_signature, "translations"),
                *((("before", sys.executable, exports["before"], ours_signature, "translations"),) if before else ()),
                ("peer", str(venv / "bin" / "python"), exports[f"peer{beam}"], "serving_default", "text"),
            ):
                output = outputs / f"{key}-savedmodel-beam{beam}.ja"
                wall, text = timed([python, str(SPEED), str(export), "--signature", signature, "--output", name,
                                    "--src", source, "--out", str(output), "--batch", "32"],
                                   outputs / f"{key}-savedmodel.log")
                record(f"{key}_savedmodel_beam{beam}", wall,
                       json.loads(re.findall(r"^\{.*\}$", text, re.M)[-1])["seconds"], output)

    sweep = []
    for size in args.sweep:
        first, best_per_piece = (int(n) for n in size.split(":"))
        point = build_shortlist(work, first, best_per_piece)
        export = export_ours(work, f"sweep-{first}-{best_per_piece}", ours_path.name, None, True)
        output = outputs / f"sweep-{first}-{best_per_piece}.ja"
        _, text = timed([sys.executable, str(SPEED), str(export), "--signature", "translate", "--output",
                         "translations", "--src", source, "--out", str(output), "--batch", "32"],
                        outputs / "sweep-savedmodel.log")
        seconds = json.loads(re.findall(r"^\{.*\}$", text, re.M)[-1])["seconds"]
        point.update(sentences_per_s=round(sentences / seconds, 2), bleu=round(bleu(output), 2))
        print(f"  sweep {point}", flush=True)
        sweep.append(point)
    if args.sweep:
        build_shortlist(work, DEFAULT_SHORTLIST_FIRST, DEFAULT_SHORTLIST_BEST)  # the run keeps the default one

    best = {key: max(runs, key=lambda r: r["sentences_per_s"]) for key, runs in results.items()}
    rows = []
    print("\n| beam | way | nmt sentences/s | OpenNMT-tf sentences/s | ratio | nmt BLEU | peer BLEU |"
          + (" nmt before, sentences/s | ratio before | now / before |" if before else "")
          + "\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: | ---: |" if before else ""))
    for beam in (1, 5):
        for way, label, key in (("cli", "CLI (model load and tracing excluded)", "ours"),
                                ("savedmodel", "SavedModel", "ours"), ("cli", "CLI, shortlist", "short"),
                                ("savedmodel", "SavedModel, shortlist", "short")):
            ours, peer = best[f"{key}_{way}_beam{beam}"], best[f"peer_{way}_beam{beam}"]
            ratio = ours["sentences_per_s"] / peer["sentences_per_s"]
            row = {"beam": beam, "way": way, "shortlist": key == "short", "ours": ours, "peer": peer,
                   "ratio": round(ratio, 2)}
            line = (f"| {beam} | {label} | {ours['sentences_per_s']:.1f} | {peer['sentences_per_s']:.1f} | "
                    f"{ratio:.2f}x | {ours['bleu']:.2f} | {peer['bleu']:.2f} |")
            if before and key == "ours":
                earlier = best[f"before_{way}_beam{beam}"]
                row.update(before=earlier, ratio_before=round(earlier["sentences_per_s"] / peer["sentences_per_s"], 2),
                           now_over_before=round(ours["sentences_per_s"] / earlier["sentences_per_s"], 2))
                line += (f" {earlier['sentences_per_s']:.1f} | {row['ratio_before']:.2f}x | "
                         f"{row['now_over_before']:.2f}x |")
            rows.append(row)
            print(line)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "command": " ".join(sys.argv), "ours_before": before,
               "ours_checkpoint_step": ours_step, "peer_checkpoint_step": peer_step,
               "rows": rows, "runs": results, "shortlist": shortlist, "sweep": sweep}
    if sweep:
        peer5 = best["peer_savedmodel_beam5"]["sentences_per_s"]
        plain = best["ours_savedmodel_beam5"]
        print(f"\n| first | best | coverage | allowed a batch | SavedModel beam 5 sentences/s | vs peer | vs no "
              f"shortlist | BLEU (none: {plain['bleu']:.2f}) |\n" + "| ---: " * 8 + "|")
        for point in sweep:
            speed = point["sentences_per_s"]
            print(f"| {point['first']} | {point['best']} | {point['coverage']:.1%} | {point['mean_allowed']:,.0f} of "
                  f"{point['vocabulary']:,} | {speed:.1f} | {speed / peer5:.2f}x | "
                  f"{speed / plain['sentences_per_s']:.2f}x | {point['bleu']:.2f} |")
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

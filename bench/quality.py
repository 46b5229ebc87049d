"""Quality per CPU-time: dev BLEU of ours and OpenNMT-tf 2.32 after the same training time, one run.

Both toolkits train the same model shape on the same data (bench/throughput.py's docstring: 8.89M
parameters, word vocabularies, Adam 1e-3 constant, 64 sentences a batch, buckets 2 wide, dropout on
layer outputs and none on the embeddings, as the peer) **at the
same time, each pinned to its own CPU core** (taskset, one TensorFlow thread each). Side by side, so
whatever else loads the machine loads both alike, and the same wall-clock budget is the same CPU
time. Both save a checkpoint every --save-steps steps; a checkpoint's training time is its file's
modification time minus the start of its training process (start-up, SentencePiece training and
the first traces count against ours; the peer's vocabularies are built before its clock starts).

Afterwards (not counted), the last checkpoint of each toolkit saved within each grid time (every
trained minutes / points, and each budget) translates the 500-sentence dev set, beam 5, batch 32,
and BLEU is scored with sacrebleu --tokenize none (the corpus is pre-tokenized) after NFKC
normalization of hypotheses and references (see bleu()). Neither clips gradients (ours' clip_norm is
pinned at 1e9, never reached: bench/throughput.py PEER_TRAINING); the same-shape arm stops at its first step
if its parameters or batch are not the peer's (check_same_shape). Writes a JSON file, a PNG of BLEU against
training minutes, and prints the table.

    python bench/quality.py --venv PEER_VENV                  # 60 minutes, BLEU at 20 and 60
    python bench/quality.py --venv PEER_VENV --minutes 20 --budgets 10 20 --points 4
    python bench/quality.py --venv PEER_VENV --quick          # 6 minutes, BLEU at 3 and 6
    python bench/quality.py --work DIR --evaluate-only        # score the runs of an earlier --work DIR
    python bench/quality.py --venv PEER_VENV --ours-recipe    # ours: configs/small-parallel-enja.yaml as shipped

--ours-recipe trains our shipped recipe instead of the peer's shape (issue 15: what a user of each
toolkit gets from the same CPU time): its own vocabulary, model, schedule, XLA and label smoothing,
with its time budget set to --minutes, so the learning rate reaches its floor as the run ends. Its
periodic dev evaluation counts against its time, as it does for a user; its final evaluation and
checkpoint averaging, which follow the budget, are not scored (only checkpoints are).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import sacrebleu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (  # noqa: E402
    DATA,
    ONE_CORE,
    PEER,
    QUIET,
    ROOT,
    build_peer_vocabularies,
    check_same_shape,
    ours_command,
    peer_config,
    train_command,
)

ONE_THREAD = {**ONE_CORE, **QUIET}


def recipe_command(minutes: float, run_dir: Path, extra: list[str]) -> list[str]:
    """`nmt train` of configs/small-parallel-enja.yaml as shipped, on DATA, for `minutes` of training."""
    return train_command(run_dir, [
        f"data.train.source_path={DATA / 'train.en'}", f"data.train.target_path={DATA / 'train.ja'}",
        f"data.dev.source_path={DATA / 'dev.en'}", f"data.dev.target_path={DATA / 'dev.ja'}",
        f"train.time_budget={minutes:g}m", *extra])


def start_ours(work: Path, save_steps: int, core: int, recipe_minutes: float | None) -> subprocess.Popen:
    checkpointing = [f"train.checkpoint_every={save_steps}", "train.keep_checkpoints=100000"]
    if recipe_minutes is None:
        training = ours_command(10**7, work / "ours", checkpointing)
    else:
        training = recipe_command(recipe_minutes, work / "ours", checkpointing)
    command = ["taskset", "-c", str(core), *training]
    log = open(work / "ours.log", "w", encoding="utf-8")  # noqa: SIM115 - the training process writes it for its whole life
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD},
                            start_new_session=True)


def start_peer(work: Path, save_steps: int, core: int, venv: Path) -> subprocess.Popen:
    model_dir = work / "peer"
    model_dir.mkdir(parents=True, exist_ok=True)
    peer_config(model_dir, work)
    override = model_dir / "override.yml"
    override.write_text(f"train:\n  max_step: 10000000\n  save_checkpoints_steps: {save_steps}\n"
                        f"  keep_checkpoint_max: 100000\n  save_summary_steps: 100\n", encoding="utf-8")
    command = ["taskset", "-c", str(core), str(venv / "bin" / "onmt-main"), "--model", str(PEER / "model.py"),
               "--config", str(model_dir / "config.yml"), str(override), "--model_dir", str(model_dir),
               "--seed", "1234", "--intra_op_parallelism_threads", "1", "--inter_op_parallelism_threads", "1", "train"]
    log = open(work / "peer.log", "w", encoding="utf-8")  # noqa: SIM115 - the training process writes it for its whole life
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD},
                            start_new_session=True)


def train_both(work: Path, minutes: float, save_steps: int, venv: Path, ours_recipe: bool) -> None:
    if (work / "ours").exists() or (work / "peer").exists():
        sys.exit(f"{work} already holds runs (they would resume, and their times would be wrong): "
                 "use a new --work folder, or --evaluate-only to score these")
    build_peer_vocabularies(work, venv)
    processes, starts = {}, {}
    try:
        for name, start in (("ours", lambda: start_ours(work, save_steps, 0, minutes if ours_recipe else None)),
                            ("peer", lambda: start_peer(work, save_steps, 1, venv))):
            starts[name] = time.time()
            processes[name] = start()
        (work / "starts.json").write_text(json.dumps({**starts, "minutes": minutes, "ours_recipe": ours_recipe}),
                                          encoding="utf-8")
        deadline = min(starts.values()) + minutes * 60 + 30  # a little past the budget: the last checkpoint may land
        shape_checked = ours_recipe  # the recipe is not the peer's shape; the same-shape arm must be
        while time.time() < deadline:
            if not shape_checked and "M parameters (" in (log := (work / "ours.log").read_text(encoding="utf-8")):
                check_same_shape(work / "ours", log)  # at its first step, not after the budget
                shape_checked = True
            for name, process in processes.items():
                if process.poll() is not None:
                    sys.exit(f"{name} stopped early (exit {process.returncode}); see {work / (name + '.log')}")
            elapsed = time.time() - min(starts.values())
            print(f"\rtraining both: {elapsed / 60:5.1f} / {minutes:g} min", end="", flush=True)
            time.sleep(5)
        print()
    finally:  # both stop at the budget, on an error and on Ctrl-C alike
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def checkpoints(folder: Path, start: float) -> list[tuple[float, int, Path]]:
    """(training seconds, step, path prefix) of every checkpoint in folder, by step."""
    found = []
    for index in folder.glob("ckpt-*.index"):
        step = int(index.stem.split("-")[1])
        found.append((index.stat().st_mtime - start, step, index.with_suffix("")))
    return sorted(found, key=lambda item: item[1])


def last_within(found: list[tuple[float, int, Path]], seconds: float) -> tuple[float, int, Path] | None:
    within = [item for item in found if item[0] <= seconds]
    return within[-1] if within else None


def bleu(hypothesis_file: Path) -> float:
    """sacrebleu --tokenize none, after NFKC on both sides: our SentencePiece models normalize text
    with NFKC (full-width ？ ！ １ become ? ! 1), which the references' 31 full-width tokens would
    otherwise count against us; the peer's outputs are normalized alike."""
    hypotheses = unicodedata.normalize("NFKC", hypothesis_file.read_text(encoding="utf-8")).splitlines()
    references = unicodedata.normalize("NFKC", (DATA / "dev.ja").read_text(encoding="utf-8")).splitlines()
    if len(hypotheses) != len(references):
        raise RuntimeError(f"{hypothesis_file}: {len(hypotheses)} lines for {len(references)} references")
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score


def translate_ours(work: Path, checkpoint: Path, core: int) -> Path:
    output = work / "ours-dev" / f"{checkpoint.name}.ja"
    output.parent.mkdir(exist_ok=True)
    if not output.is_file():
        subprocess.run(["taskset", "-c", str(core), sys.executable, "-m", "nmt.cli", "translate",
                        "--run", str(work / "ours"), "--weights", checkpoint.name, "--beam", "5", "--batch-size", "32",
                        "-i", str(DATA / "dev.en"),
                        "-o", str(output)], check=True, capture_output=True, env={**os.environ, **ONE_THREAD})
    return output


def translate_peer(work: Path, checkpoint: Path, core: int, venv: Path) -> Path:
    output = work / "peer-dev" / f"{checkpoint.name}.ja"
    output.parent.mkdir(exist_ok=True)
    if not output.is_file():
        override = work / "peer-dev" / "beam5.yml"
        override.write_text("params:\n  beam_width: 5\ninfer:\n  batch_size: 32\n  batch_type: examples\n",
                            encoding="utf-8")
        partial = output.with_suffix(".partial")
        subprocess.run(["taskset", "-c", str(core), str(venv / "bin" / "onmt-main"), "--model", str(PEER / "model.py"),
                        "--config", str(work / "peer" / "config.yml"), str(override), "--model_dir", str(work / "peer"),
                        "--checkpoint_path", str(checkpoint), "--intra_op_parallelism_threads", "1",
                        "--inter_op_parallelism_threads", "1", "infer", "--features_file", str(DATA / "dev.en"),
                        "--predictions_file", str(partial)],
                       check=True, capture_output=True, env={**os.environ, **ONE_THREAD})
        partial.rename(output)
    return output


def evaluate(work: Path, minutes: float, budgets: list[float], points: int, venv: Path) -> dict:
    """BLEU of the last checkpoint within each grid time and each budget; budgets past the trained
    time are an error."""
    starts = json.loads((work / "starts.json").read_text(encoding="utf-8"))
    trained = starts.get("minutes", minutes)
    if max(budgets) > trained:
        sys.exit(f"{work} was trained for {trained:g} minutes: budgets {budgets} reach past it")
    found = {"ours": checkpoints(work / "ours" / "checkpoints", starts["ours"]),
             "peer": checkpoints(work / "peer", starts["peer"])}
    grid = sorted({round(trained * (i + 1) / points, 3) for i in range(points)} | set(budgets))
    chosen = {name: sorted({item for g in grid if (item := last_within(found[name], g * 60))}, key=lambda i: i[1])
              for name in found}
    scores: dict[str, dict[int, float]] = {"ours": {}, "peer": {}}
    failures: list[str] = []
    translate = {"ours": lambda c: translate_ours(work, c, 0), "peer": lambda c: translate_peer(work, c, 1, venv)}

    def score_all(name: str) -> None:  # one thread per toolkit, each on its own core
        try:
            for _, step, path in chosen[name]:
                scores[name][step] = bleu(translate[name](path))
                print(f"  {name} step {step}: BLEU {scores[name][step]:.2f}", flush=True)
        except (subprocess.CalledProcessError, RuntimeError) as error:
            failures.append(f"{name}: {error} {getattr(error, 'stderr', '') or ''}"[-3000:])

    threads = [threading.Thread(target=score_all, args=(name,)) for name in chosen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit("evaluation failed:\n" + "\n".join(failures))
    curves = {name: [{"seconds": round(s, 1), "minutes": round(s / 60, 2), "step": step,
                      "bleu": round(scores[name][step], 2)}
                     for s, step, _ in chosen[name]] for name in chosen}
    return {"trained_minutes": trained, "grid_minutes": grid, "curves": curves,
            "steps_per_minute": {name: round(found[name][-1][1] / (found[name][-1][0] / 60), 1) if found[name] else 0
                                 for name in found}}


def at_budget(curve: list[dict], minutes: float) -> dict | None:
    within = [point for point in curve if point["seconds"] <= minutes * 60]
    return within[-1] if within else None


def plot(curves: dict, budgets: list[float], path: Path, ours_recipe: bool) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ours_label = "nmt, small-parallel-enja.yaml" if ours_recipe else "nmt"
    for name, label in (("ours", ours_label), ("peer", "OpenNMT-tf 2.32")):
        axes.plot([p["minutes"] for p in curves[name]], [p["bleu"] for p in curves[name]], marker="o", label=label)
    for budget in budgets:
        axes.axvline(budget, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("training time, minutes (one CPU core each, side by side)")
    axes.set_ylabel("dev BLEU (beam 5, --tokenize none)")
    axes.set_title("small_parallel_enja en→ja, " + ("nmt's recipe vs the peer's 8.9M-parameter model" if ours_recipe
                                                       else "same 8.9M-parameter model"))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    partial = path.with_suffix(".partial.png")
    figure.savefig(partial, dpi=110)
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="training budget of each toolkit")
    parser.add_argument("--budgets", type=float, nargs="+", default=[20, 60], help="minutes the table reports")
    parser.add_argument("--points", type=int, default=12, help="curve points (checkpoints evaluated per toolkit)")
    parser.add_argument("--save-steps", type=int, default=200, help="checkpoint interval, steps (both)")
    parser.add_argument("--quick", action="store_true",
                        help="6 minutes, budgets 3 and 6, 6 points, checkpoints every 50")
    parser.add_argument("--venv", default=str(PEER / "onmt-venv"), help="the peer's virtualenv")
    parser.add_argument("--work", default=None, help="folder for both runs (default: a new one under /tmp)")
    parser.add_argument("--evaluate-only", action="store_true", help="score the runs already in --work")
    parser.add_argument("--ours-recipe", action="store_true",
                        help="ours trains configs/small-parallel-enja.yaml as shipped, not the peer's shape")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"))
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.budgets, args.points, args.save_steps = 6, [3, 6], 6, 50
        if args.out == parser.get_default("out"):
            args.out = str(ROOT / "bench" / "results" / "quality-quick.json")
    if args.ours_recipe and args.out == parser.get_default("out"):
        args.out = str(ROOT / "bench" / "results" / "quality-recipe.json")  # quality.json keeps the same-shape run
    venv = Path(args.venv)
    if not (venv / "bin" / "onmt-main").is_file():
        sys.exit(f"the peer's virtualenv is missing: {venv} (see bench/peer/README.md)")
    if args.evaluate_only and not args.work:
        sys.exit("--evaluate-only needs --work DIR")
    work = Path(args.work) if args.work else Path(os.popen("mktemp -d /tmp/nmt-quality-XXXX").read().strip())
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", flush=True)
    if not args.evaluate_only:
        train_both(work, args.minutes, args.save_steps, venv, args.ours_recipe)
    ours_recipe = json.loads((work / "starts.json").read_text(encoding="utf-8")).get("ours_recipe", False)
    result = evaluate(work, args.minutes, args.budgets, args.points, venv)
    rows = []
    for budget in args.budgets:
        ours, peer = at_budget(result["curves"]["ours"], budget), at_budget(result["curves"]["peer"], budget)
        rows.append({"minutes": budget, "ours": ours, "peer": peer})
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "command": " ".join(sys.argv), "setup": "both at once, one core each (taskset), one TF thread each",
               "ours": "configs/small-parallel-enja.yaml" if ours_recipe else "the peer's shape",
               "budgets": rows, **result}
    out = Path(args.out)
    png = out.with_suffix(".png")
    plot(result["curves"], args.budgets, png, ours_recipe)
    print("\n| training time | nmt BLEU (step) | OpenNMT-tf BLEU (step) | nmt - peer |\n| ---: | ---: | ---: | ---: |")
    for row in rows:
        ours, peer = row["ours"], row["peer"]
        cell = lambda p: f"{p['bleu']:.2f} ({p['step']})" if p else "-"  # noqa: E731
        difference = f"{ours['bleu'] - peer['bleu']:+.2f}" if ours and peer else "-"
        print(f"| {row['minutes']:g} min | {cell(ours)} | {cell(peer)} | {difference} |")
    steps = result["steps_per_minute"]
    print(f"steps per minute: nmt {steps['ours']}, peer {steps['peer']}")
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()

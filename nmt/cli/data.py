"""``nmt data check`` and ``nmt data split``: what a corpus holds (overlap between splits, duplicates,
bad lines) and a train/dev/test split that shares no sentence. Neither needs TensorFlow (check loads
it only to count pieces with a run's trained tokenizers)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from nmt.errors import NmtError

log = logging.getLogger("nmt.cli")

_NORMALISED = ("Sentences are compared normalised: NFKC, lower-cased, punctuation, symbols and spaces removed "
               "(\"Tom's here!\" and \"toms here\" are one sentence).")


def add_parser(subparsers) -> argparse.ArgumentParser:
    data = subparsers.add_parser(
        "data", help="check a corpus for dev/train overlap, duplicates and bad lines, or split it cleanly",
        description="Tools for the data before training. " + _NORMALISED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = data.add_subparsers(dest="data_verb", metavar="COMMAND", required=True)
    check = verbs.add_parser(
        "check",
        help="report overlap between splits, duplicates, and empty, over-long, misaligned, non-UTF-8 or "
        "wrong-script lines",
        description="Reads the training data once as a stream (its text is not kept: a 64-bit digest and a few "
        "integers a line) and the dev and test sets into memory, and reports, per split: empty sides, invalid "
        "UTF-8, exact and normalised duplicate pairs, lines over data.max_source_length/max_target_length pieces "
        "(when the config's run directory has trained tokenizers), length-ratio outliers (characters per side "
        "more than 3x off the corpus's median ratio) and sides with no letter of their language's script; then "
        "how many dev and test sources, targets and pairs (both sides) also appear in the training data, and "
        "test in dev: the counts nmt train prints before its first step. Each finding lists its first line "
        "numbers. Exit 0 whatever it finds; 2 on an unreadable file. " + _NORMALISED,
        epilog="examples:\n  nmt data check --config en-ja.yaml\n"
        "  nmt data check --train corpus.tsv.gz --dev dev.tsv.gz --test test.tsv.gz --json\n"
        "  nmt data check --train train.en train.ja --dev dev.en dev.ja --languages en,ja\n"
        "  nmt data check --config ptb.yaml                  # a language model's lines: one side",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--config", help="an experiment file: its data.train and data.dev, as nmt train reads them")
    _corpus_options(check, "--train", "the training data")
    check.add_argument("--dev", nargs="+", metavar="PATH", help="dev set: one TSV file or two parallel files")
    check.add_argument("--test", nargs="+", action="append", metavar="PATH",
                       help="a test set, as --dev (repeatable); compared with train and dev")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.set_defaults(func=run_check)

    split = verbs.add_parser(
        "split",
        help="split a corpus into train/dev/test that share no source or target",
        description="Groups the examples that share a side (and, transitively, everything linked through shared "
        "sides), then draws whole groups for dev and test in an order fixed by --seed, so that no dev or test "
        "sentence appears in another split. A group goes to dev (then test) when it fits in what is left of the "
        "size asked, so the sizes are exact unless the groups run out. Each split keeps the corpus's order and "
        "its lines as they were (every column of a TSV: the attribution stays); a rerun writes the same bytes. "
        "Writes OUT/train, OUT/dev and OUT/test with the input's suffixes (corpus.tsv.gz -> train.tsv.gz; "
        "parallel corpus.en + corpus.ja -> train.en + train.ja), each file atomically. " + _NORMALISED,
        epilog="examples:\n  nmt data split corpus.tsv.gz --dev 2000 --test 2000 --out data/mine\n"
        "  nmt data split corpus.en corpus.ja --dev 1000 --out data/mine --seed 7\n"
        "  nmt data split sentences.txt --format text --dev 3000 --out data/lm   # a language model's lines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    split.add_argument("input", nargs="+", metavar="INPUT", help="one TSV (or text) file, or two parallel files")
    _corpus_options(split, None, "")
    split.add_argument("--dev", type=int, required=True, metavar="N", help="examples in dev")
    split.add_argument("--test", type=int, default=0, metavar="N", help="examples in test (default: no test split)")
    split.add_argument("--out", required=True, metavar="DIR", help="folder for the split files")
    split.add_argument("--seed", type=int, default=1234, help="which groups are drawn (default: 1234)")
    split.set_defaults(func=run_split)
    return data


def _corpus_options(parser: argparse.ArgumentParser, flag: str | None, what: str) -> None:
    if flag:
        parser.add_argument(flag, nargs="+", metavar="PATH", help=f"{what}: one TSV (plain or .gz) or text file, "
                            "or two parallel files (source, target)")
    parser.add_argument("--format", choices=("tsv", "parallel", "text"),
                        help="how the files are read (default: two files parallel, one file tsv); text: one "
                        "sentence a line, one side (a language model's corpus)")
    parser.add_argument("--columns", default="0,1", metavar="SOURCE,TARGET",
                        help="tsv: the columns of the source and the target (default: 0,1)")
    if flag:
        parser.add_argument("--languages", default="en,ja", metavar="SOURCE,TARGET",
                            help="language codes for the script check (default: en,ja)")


def source_config(paths: list[str], fmt: str | None, columns: str, option: str):
    """A data source from paths given on the command line (what an experiment file's data section says)."""
    from nmt.config import DataSourceConfig

    if len(paths) > 2:
        raise NmtError(f"{option}: one file, or two parallel files (source, target); got {len(paths)}")
    fmt = fmt or ("parallel" if len(paths) == 2 else "tsv")
    if (fmt == "parallel") != (len(paths) == 2):
        raise NmtError(f"{option}: --format {fmt} reads {'two files' if fmt == 'parallel' else 'one file'}")
    for path in paths:
        if not Path(path).is_file():
            raise NmtError(f"{option}: file not found: {path}")
    try:
        source_column, target_column = (int(c) for c in columns.split(","))
    except ValueError:
        raise NmtError(f"--columns: expected two column numbers like 0,1, got {columns!r}") from None
    if min(source_column, target_column) < 0:
        raise NmtError(f"--columns: column numbers start at 0, got {columns!r}")
    if fmt == "parallel":
        return DataSourceConfig(format="parallel", source_path=paths[0], target_path=paths[1])
    return DataSourceConfig(format=fmt, path=paths[0], source_column=source_column, target_column=target_column)


def _streams_from_config(path: str):
    from nmt.config import load_config
    from nmt.data import configured_stream

    config = load_config(path)
    held_out = {"dev": configured_stream(config, "dev")} if config.data.dev is not None else {}
    data = config.data
    languages = (data.source_language, data.target_language if config.task != "lm" else data.source_language)
    return config, configured_stream(config), held_out, languages


def _run_tokenizers(config):
    """The trained tokenizers of the config's run directory (its task names the files), or None
    before it has any. TensorFlow is imported (with the task) only when there are some."""
    from nmt.run_dir import RunDir

    run = RunDir(config.run_dir)
    if not run.spm.is_dir():
        return None
    from nmt.cli.startup import import_tensorflow

    import_tensorflow()
    from nmt.tasks import task_for

    source_path, target_path = task_for(config).tokenizer_files(run)
    if not (source_path.is_file() and target_path.is_file()):
        return None
    return task_for(config).load_tokenizers(run)


def run_check(args: argparse.Namespace) -> int:
    from nmt.corpus_checks import check_corpus
    from nmt.data import CorpusStream

    if bool(args.config) == bool(args.train):
        raise NmtError("give --config, or --train (with --dev, --test), not both")
    tokenizers = max_lengths = None
    if args.config:
        if args.dev or args.test:
            raise NmtError("--dev and --test go with --train; --config reads data.dev")
        config, train, held_out, languages = _streams_from_config(args.config)
        tokenizers = _run_tokenizers(config)
        if tokenizers is not None:
            lm = config.task == "lm"
            max_lengths = (config.data.max_target_length if lm else config.data.max_source_length,
                           config.data.max_target_length)
        elif config.task == "lm" and config.train.bptt_steps is not None:
            pass  # running text has no length limit
        else:
            log.info("lines over the length limits are not counted: %s has no trained tokenizers yet", config.run_dir)
    else:
        languages = tuple(args.languages.split(","))
        if len(languages) != 2:
            raise NmtError(f"--languages: expected two codes like en,ja, got {args.languages!r}")
        one_side = args.format == "text"

        def stream(paths: list[str], option: str) -> CorpusStream:
            return CorpusStream(source_config(paths, args.format, args.columns, option), with_target=not one_side)

        train = stream(args.train, "--train")
        held_out = {"dev": stream(args.dev, "--dev")} if args.dev else {}
        for i, paths in enumerate(args.test or []):
            held_out["test" if len(args.test) == 1 else f"test{i + 1}"] = stream(paths, "--test")
    report = check_corpus(train, held_out, languages, tokenizers, max_lengths)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return 0


def run_split(args: argparse.Namespace) -> int:
    from nmt.corpus_split import plan_split, write_split
    from nmt.data import CorpusStream

    for name in ("dev", "test"):
        if getattr(args, name) < 0:
            raise NmtError(f"--{name} must not be negative, got {getattr(args, name)}")
    if args.dev + args.test == 0:
        raise NmtError("--dev (and --test) must ask for at least one example")
    source = source_config(args.input, args.format, args.columns, "INPUT")
    stream = CorpusStream(source, with_target=source.format != "text")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NmtError(f"--out {out}: exists and is not a folder")
    plan = plan_split(stream, args.dev, args.test, args.seed)
    written = write_split(stream, plan, out)
    print(plan.summary())
    for path in written:
        print(f"wrote {path}")
    return 0

"""``nmt shortlist``: a run's vocabulary shortlist (:mod:`nmt.shortlist`), for faster decoding with
``--shortlist`` / ``decode.shortlist``, in the CLI and in an export."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from nmt.cli.startup import import_tensorflow
from nmt.constants import DEFAULT_SHORTLIST_BEST as DEFAULT_BEST
from nmt.constants import DEFAULT_SHORTLIST_FIRST as DEFAULT_FIRST
from nmt.constants import SHORTLIST_BLOCK

log = logging.getLogger("nmt.cli")


def add_parser(subparsers) -> argparse.ArgumentParser:
    shortlist = subparsers.add_parser(
        "shortlist",
        help="build a run's vocabulary shortlist: decode over the target pieces each batch's source can need",
        description="Writes RUN/shortlist/ from the run's own tokenized training pairs: a lexical table "
        "p(target piece | source piece) estimated with IBM Model 1, of which each source piece keeps its --best "
        "likeliest target pieces, and the --first most frequent target pieces (and the specials), always allowed. "
        "Decoding with it (nmt translate/evaluate --shortlist, decode.shortlist: true, and nmt export, which puts "
        f"the table in the SavedModel) scores each batch's allowed pieces only: the union over its source pieces, "
        f"padded with the next most frequent to a multiple of {SHORTLIST_BLOCK}. With a dev set, prints the share "
        "of the dev references' pieces inside their batch's shortlist (a translation can only use pieces inside). "
        "Files are written whole or not at all.",
        epilog="examples:\n  nmt shortlist --run runs/en-ja\n  nmt shortlist --run runs/en-ja --first 200 --best 100\n"
        "  nmt translate --run runs/en-ja -i in.en -o out.ja --shortlist",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shortlist.add_argument("--run", required=True, help="run directory written by `nmt train` (translation)")
    shortlist.add_argument("--first", type=int, default=DEFAULT_FIRST, metavar="N",
                           help=f"the N most frequent target pieces are always allowed (default {DEFAULT_FIRST})")
    shortlist.add_argument("--best", type=int, default=DEFAULT_BEST, metavar="N",
                           help=f"each source piece allows its N likeliest target pieces (default {DEFAULT_BEST})")
    shortlist.set_defaults(func=run)
    return shortlist


def run(args: argparse.Namespace) -> int:
    import_tensorflow()
    from nmt.run_dir import RunDir
    from nmt.shortlist import dev_coverage
    from nmt.tasks import task_for

    run_dir = RunDir(Path(args.run))
    config = run_dir.read_config()
    task = task_for(config)
    start = time.perf_counter()
    shortlist = task.build_shortlist(run_dir, args.first, args.best, progress=lambda line: log.info("%s", line))
    log.info("%s: %s pairs, %.1f s", shortlist.meta["method"], f"{shortlist.meta['pairs']:,}",
             time.perf_counter() - start)
    print(f"wrote {run_dir.shortlist}: first {shortlist.first}, best {shortlist.best}")
    if config.data.dev is not None:
        source, target = task.load_tokenizers(run_dir)
        covered = dev_coverage(shortlist, config, source, target)
        print(f"dev: {covered.inside:,} of {covered.total:,} reference pieces ({covered.share:.1%}) inside their "
              f"batch's shortlist, {covered.mean_size:,.0f} allowed pieces a batch of {config.decode.batch_size} "
              f"on average (vocabulary {target.vocab_size:,})")
    return 0

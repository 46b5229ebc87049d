"""A phone keyboard's numbers (issue 32): each dev line typed left to right, character by character.

For every word of every line (a word: letters, digits, marks and apostrophes, as nmt.text_policy's
rule 5 cuts the word being typed), the three suggestions are asked for at each of its keystrokes: before
its first character (after the space or punctuation: next words) and after 1, 2, 3, ... characters
(completions of the prefix). From those:

- next-word top-1 / top-3 recall: the word is the first / among the three suggestions before it is begun;
- completion top-3 recall after 1, 2 and 3 typed characters (over the words longer than that);
- keystroke savings: the share of the line's characters a user need not type who taps the word as soon as
  it shows among the three (the tap is a keystroke, the chip adds the space that follows the word);
- latency per keystroke of the int8 TensorFlow Lite file (`nmt export --format tflite --quantize int8 --max-k 3`;
  tf.lite.Interpreter, one thread, through nmt.tflite.TfliteNextWords.suggest: the text cut at the word being
  typed, tokenization, the model, the word merge), median and p95, and its size.

Models: each --run (in-process float32 via nmt.load, and its int8 .tflite, recall measured on both; a run
with a lexicon, `nmt lexicon`, is measured without it too), and a
Kneser-Ney n-gram from nltk.lm (KneserNeyInterpolated, discount 0.75) built on the same training sentences
(the first run's data.train), its words cut by the same rule. nltk's own KneserNey re-scans every n-gram of
the next order on each call; its continuation counts are indexed once here (IndexedKneserNey), and the bench
asserts the indexed scores equal nltk's own on a sample before it uses them. The n-gram's top 3 are exact:
every word it has seen after a context is scored, and a word never seen after any of the contexts ranks by
its unigram score alone.

    python bench/keyboard.py --run keyboard-en=runs/keyboard-en --run lm-en=runs/lm-en --lines 500
    python bench/keyboard.py --run base=runs/keyboard-en --run adapted=runs/keyboard-cm \\
        --dev /tmp/cm-held-back.txt --lines 0 --ngram-order 0 --out bench/results/keyboard-personal.json
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
K = 3  # a keyboard's suggestion strip
COMPLETION_CHARS = (1, 2, 3)
GOAL_MB = 2.0
GOAL_MEDIAN_MS = 10.0

Suggest = Callable[[Sequence[str]], list[list[str]]]  # typed texts -> each text's suggested words, best first


class Word(NamedTuple):
    line: int
    start: int
    text: str
    space_after: bool


def typed_words(lines: Sequence[str]) -> list[Word]:
    from nmt.text_policy import split_typed_word, words_of

    words = []
    for n, line in enumerate(lines):
        for start, word in words_of(line):
            end = start + len(word)
            assert split_typed_word(line[:end]) == (line[:start], word), (line, word)  # the API's own cut
            words.append(Word(n, start, word, end < len(line) and line[end] == " "))
    return words


def evaluate(suggest: Suggest, lines: Sequence[str], words: Sequence[Word]) -> dict[str, float]:
    """The recall columns and keystroke savings of ``suggest`` over the lines' words."""
    first_hit: dict[int, int] = {}  # word index -> the typed characters at which it first showed
    top1: dict[int, bool] = {}
    at_chars: dict[tuple[int, int], bool] = {}
    pending = list(range(len(words)))
    typed = 0
    queries = 0
    while pending:
        texts = [lines[words[w].line][: words[w].start] + words[w].text[:typed] for w in pending]
        answers = suggest(texts)
        queries += len(texts)
        still = []
        for w, answer in zip(pending, answers):
            shown = words[w].text in answer[:K]
            if typed == 0:
                top1[w] = bool(answer) and answer[0] == words[w].text
            if typed in COMPLETION_CHARS:
                at_chars[(w, typed)] = shown
            if shown and w not in first_hit:
                first_hit[w] = typed
            # Keep asking while a recall column needs it, or until the word shows (keystroke savings).
            if typed + 1 < len(words[w].text) and (w not in first_hit or typed + 1 <= max(COMPLETION_CHARS)):
                still.append(w)
        pending, typed = still, typed + 1
    saved = 0
    for w, typed in first_hit.items():
        word = words[w]
        saved += max(0, len(word.text) + word.space_after - typed - 1)  # the tap is one keystroke
    total_chars = sum(len(line) for line in lines)
    result = {
        "next_top1_pct": 100 * statistics.mean(top1.values()),
        "next_top3_pct": 100 * statistics.mean(first_hit.get(w) == 0 for w in range(len(words))),
    }
    for c in COMPLETION_CHARS:
        shown = [hit for (w, typed), hit in at_chars.items() if typed == c]
        result[f"complete{c}_top3_pct"] = 100 * statistics.mean(shown) if shown else float("nan")
    result["keystroke_savings_pct"] = 100 * saved / total_chars
    result["queries"] = queries
    return {name: round(value, 2) if isinstance(value, float) else value for name, value in result.items()}


# --- our models ------------------------------------------------------------------------------------


def in_process(run: Path, lexicon: bool = True) -> tuple[Suggest, int]:
    import nmt

    lm = nmt.load(run)
    if not lexicon:
        lm.lexicon = None

    def suggest(texts: Sequence[str]) -> list[list[str]]:
        return [[w for w, _ in s.words] for s in lm.suggest(list(texts), k=K, batch_size=128)]

    return suggest, sum(int(w.numpy().size) for w in lm.model.weights)


def tflite(run: Path, work: Path) -> tuple[Suggest, Callable[[str], object], int]:
    from nmt.tflite import TfliteNextWords, export_tflite

    folder = export_tflite(run, work, "int8", max_k=K)  # nmt export --format tflite --quantize int8 --max-k 3
    model = TfliteNextWords(folder, "int8", num_threads=1)

    def suggest(texts: Sequence[str]) -> list[list[str]]:
        return [[w for w, _ in model.suggest(text, K).words] for text in texts]

    return suggest, lambda text: model.suggest(text, K), (folder / model.record.variants["int8"]).stat().st_size


def keystroke_latency(call: Callable[[str], object], lines: Sequence[str], keystrokes: int) -> dict[str, float]:
    """Each line typed character by character: one call per keystroke, the first ``keystrokes`` timed."""
    texts = [line[:n] for line in lines for n in range(len(line) + 1)][:keystrokes]
    call(texts[0])
    times = []
    for text in texts:
        start = time.perf_counter()
        call(text)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
            "keystrokes_timed": len(times)}


# --- the n-gram baseline -----------------------------------------------------------------------------


def indexed_kneser_ney():
    """nltk.lm's KneserNey estimator with its continuation counts indexed once: the same formulas,
    nltk's own code for everything else."""
    from nltk.lm.smoothing import KneserNey, _count_values_gt_zero

    class IndexedKneserNey(KneserNey):
        def _index(self) -> None:
            self._continuations: dict[tuple, Counter] = {}
            self._continuation_totals: dict[tuple, int] = defaultdict(int)
            for order in range(2, self._order + 1):
                for prefix_ngram, counts in self.counts[order].items():
                    context = tuple(prefix_ngram[1:])
                    followers = self._continuations.setdefault(context, Counter())
                    for word, count in counts.items():
                        if count > 0:
                            followers[word] += 1
                    self._continuation_totals[context] += _count_values_gt_zero(counts)
            self._types_after: dict[tuple, int] = {}

        def _continuation_counts(self, word, context=()):
            if not hasattr(self, "_continuations"):
                self._index()
            context = tuple(context)
            return self._continuations.get(context, Counter())[word], self._continuation_totals.get(context, 0)

        def alpha_gamma(self, word, context):
            prefix_counts = self.counts[context]
            if len(context) + 1 == self._order:
                word_count, total = prefix_counts[word], prefix_counts.N()
            else:
                word_count, total = self._continuation_counts(word, context)
            key = tuple(context)
            if key not in getattr(self, "_types_after", {}):
                if not hasattr(self, "_continuations"):
                    self._index()
                self._types_after[key] = _count_values_gt_zero(prefix_counts)
            alpha = max(word_count - self.discount, 0.0) / total
            gamma = self.discount * self._types_after[key] / total
            return alpha, gamma

    return IndexedKneserNey


class NgramKeyboard:
    """nltk's interpolated Kneser-Ney over the training sentences' words; exact top-k per context and prefix."""

    SPECIAL = frozenset({"<s>", "</s>", "<UNK>"})

    def __init__(self, sentences: Sequence[str], order: int, discount: float = 0.75) -> None:
        from nltk.lm import KneserNeyInterpolated
        from nltk.lm.preprocessing import padded_everygram_pipeline

        from nmt.text_policy import words_of

        tokenized = [[w for _, w in words_of(line)] for line in sentences]
        self.order = order
        self.lm = KneserNeyInterpolated(order, discount=discount)
        grams, vocabulary = padded_everygram_pipeline(order, tokenized)
        self.lm.fit(grams, vocabulary)
        stock = self.lm.estimator
        self.lm.estimator = indexed_kneser_ney()(self.lm.vocab, self.lm.counts, discount=discount, order=order)
        self._check_against(stock, tokenized)
        words = [w for w in self.lm.vocab if w not in self.SPECIAL]
        unigram = {w: self.lm.estimator.unigram_score(w) for w in words}
        self.by_unigram = sorted(words, key=lambda w: -unigram[w])  # a never-seen word ranks by this alone
        self.alphabetical = sorted(words)
        self._scored: dict[tuple, list[tuple[float, str]]] = {}
        self._prefix_top: dict[str, list[str]] = {}

    def _check_against(self, stock, tokenized: list[list[str]]) -> None:
        """The indexed estimator scores as nltk's own on a sample of (word, context) pairs."""
        import random

        rng = random.Random(0)
        indexed = self.lm.estimator
        for sentence in rng.sample([s for s in tokenized if len(s) >= 3], 8):
            i = rng.randrange(1, len(sentence))
            context = tuple(["<s>"] * self.order + sentence[:i])[-(self.order - 1):]
            for word in (sentence[i], "the", "zzzunseen"):
                self.lm.estimator = stock
                want = self.lm.score(word, context)
                self.lm.estimator = indexed
                got = self.lm.score(word, context)
                assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (word, context, got, want)

    def _context_scores(self, context: tuple) -> list[tuple[float, str]]:
        """Every word seen after any suffix of ``context``, with its full score, best first."""
        if context not in self._scored:
            seen = set()
            for n in range(len(context) + 1):
                if n:
                    seen.update(self.lm.counts[context[len(context) - n:]].keys())
            seen -= self.SPECIAL
            self._scored[context] = sorted(((self.lm.score(w, context), w) for w in seen), reverse=True)
        return self._scored[context]

    def _unigram_top(self, prefix: str, exclude: set) -> list[str]:
        if prefix not in self._prefix_top:
            start = bisect.bisect_left(self.alphabetical, prefix)
            matching = set()
            for w in self.alphabetical[start:]:
                if not w.startswith(prefix):
                    break
                matching.add(w)
            self._prefix_top[prefix] = [w for w in self.by_unigram if w in matching][:64]
        return [w for w in self._prefix_top[prefix] if w not in exclude]

    def suggest(self, texts: Sequence[str]) -> list[list[str]]:
        from nmt.text_policy import split_typed_word, words_of

        answers = []
        for text in texts:
            before, prefix = split_typed_word(text)
            history = ["<s>"] * (self.order - 1) + [w for _, w in words_of(before)]
            context = tuple(history[len(history) - (self.order - 1):]) if self.order > 1 else ()
            scored = self._context_scores(context)
            seen_words = {w for _, w in scored}
            best = [(p, w) for p, w in scored if w.startswith(prefix)][:K]
            # Words never seen after the context score gamma-weighted unigrams: their order is the unigram order.
            for w in self._unigram_top(prefix, seen_words)[:K]:
                best.append((self.lm.score(w, context), w))
            answers.append([w for _, w in sorted(best, reverse=True)[:K]])
        return answers


# --- the table ---------------------------------------------------------------------------------------

COLUMNS = [("next_top1_pct", "next top-1"), ("next_top3_pct", "next top-3"), ("complete1_top3_pct", "1 char"),
           ("complete2_top3_pct", "2 chars"), ("complete3_top3_pct", "3 chars"),
           ("keystroke_savings_pct", "KSS %"), ("size_mb", "MB"), ("median_ms", "median ms"), ("p95_ms", "p95 ms"),
           ("parameters", "params")]


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<28}" + "".join(f"{title:>11}" for _, title in COLUMNS))
    for row in rows:
        cells = "".join(f"{'' if row.get(key) is None else row[key]:>11}" for key, _ in COLUMNS)
        print(f"{row['model']:<28}{cells}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = COLUMNS[:6]
    figure, axis = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(rows)
    for n, row in enumerate(rows):
        axis.bar([i + n * width for i in range(len(recall))], [row[key] for key, _ in recall], width,
                 label=row["model"])
    axis.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(recall))],
                    ["next-word\ntop-1", "next-word\ntop-3", "complete\n1 char, top-3", "complete\n2 chars, top-3",
                     "complete\n3 chars, top-3", "keystroke\nsavings"])
    axis.set_ylabel("%")
    axis.set_title("Keyboard suggestions on held-out Tatoeba English (3 chips)")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                        help="a language-model run to measure (repeat for several)")
    parser.add_argument("--dev", type=Path, default=ROOT / "data" / "en-ja" / "dev.en",
                        help="the typed text, one line per sentence (default: the shipped dev English)")
    parser.add_argument("--lines", type=int, default=500,
                        help="N lines of --dev, evenly spaced (Tatoeba's files run from short to long; 0: all)")
    parser.add_argument("--ngram-order", type=int, default=3, help="the Kneser-Ney n-gram's order (0: no n-gram)")
    parser.add_argument("--no-tflite", action="store_true", help="in-process models only (no int8 export, no latency)")
    parser.add_argument("--latency-keystrokes", type=int, default=400)
    parser.add_argument("--work", type=Path, help="where the .tflite exports go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "keyboard.json")
    parser.add_argument("--plot", type=Path, help="a bar chart of the recall columns (PNG)")
    args = parser.parse_args()

    runs = [(name, Path(path)) for name, _, path in (spec.partition("=") for spec in args.run)]
    lines = [line for line in args.dev.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.lines and args.lines < len(lines):
        lines = [lines[i * len(lines) // args.lines] for i in range(args.lines)]
    words = typed_words(lines)
    work = args.work or Path(tempfile.mkdtemp(prefix="nmt-keyboard-bench-"))
    print(f"{len(lines)} lines of {args.dev}, {len(words)} words, {sum(len(line) for line in lines)} characters",
          file=sys.stderr)
    rows = []
    for name, run in runs:
        start = time.perf_counter()
        suggest, parameters = in_process(run)
        rows.append({"model": f"{name} (float32)", "run": str(run), "parameters": parameters,
                     **evaluate(suggest, lines, words), "seconds": round(time.perf_counter() - start, 1)})
        print_table(rows[-1:])
        if (run / "lexicon.txt").exists():  # what the lexicon is worth: the same model without it
            suggest, _ = in_process(run, lexicon=False)
            rows.append({"model": f"{name} (float32, no lexicon)", "run": str(run), "parameters": parameters,
                         **evaluate(suggest, lines, words)})
            print_table(rows[-1:])
        if not args.no_tflite:
            start = time.perf_counter()
            suggest, call, size = tflite(run, work / name)
            row = {"model": f"{name} (TFLite int8)", "run": str(run), "parameters": parameters,
                   "size_mb": round(size / 1e6, 2), **keystroke_latency(call, lines, args.latency_keystrokes)}
            row.update(evaluate(suggest, lines, words))
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print_table(rows[-1:])
    if args.ngram_order:
        from nmt.data import read_corpus
        from nmt.run_dir import RunDir

        start = time.perf_counter()
        config = RunDir(runs[0][1]).read_config()
        sentences = read_corpus(config.data.train, with_target=False).sources
        ngram = NgramKeyboard(sentences, args.ngram_order)
        built = time.perf_counter() - start
        rows.append({"model": f"Kneser-Ney {args.ngram_order}-gram (nltk)", "training_sentences": len(sentences),
                     "vocabulary": len(ngram.lm.vocab), "ngrams": sum(ngram.lm.counts[n].N() for n in
                                                                     range(1, args.ngram_order + 1)),
                     **evaluate(ngram.suggest, lines, words), "build_s": round(built, 1),
                     "seconds": round(time.perf_counter() - start, 1)})
    print()
    print_table(rows)
    recall_keys = [key for key, _ in COLUMNS[:6]]
    goals = {}
    baseline = next((row for row in rows if row["model"].startswith("Kneser-Ney")), None)
    for row in rows:
        if baseline is not None and row is not baseline:
            goals[row["model"]] = {
                "ahead_of_ngram_on_every_recall_column": all(row[k] > baseline[k] for k in recall_keys),
                **({"size_ok": row["size_mb"] <= GOAL_MB, "median_ok": row["median_ms"] <= GOAL_MEDIAN_MS}
                   if "size_mb" in row else {}),
            }
    for model, checks in goals.items():
        print(f"{model}: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in checks.items()))
    result = {"what": "keyboard suggestions (k=3) on typed dev text: recall, keystroke savings, TFLite int8 "
                      "latency per keystroke", "dev": str(args.dev), "lines": len(lines), "words": len(words),
              "characters": sum(len(line) for line in lines),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
              "rows": rows, "goals": goals}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

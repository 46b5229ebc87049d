"""Times a text-in, text-out SavedModel signature over a file; prints one JSON line.

Runs in any virtualenv with TensorFlow (ours, or the peer's TF 2.13 one), so both toolkits' exports
are timed by the same code: batches of --batch lines in file order, one warm-up batch first (the
first call traces and optimizes the graph), then the whole file; the outputs go to --out.

    python bench/savedmodel_speed.py EXPORT_DIR --signature translate --output translations --src dev.en --out hyp.ja
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

try:  # our exports run SentencePiece in the graph: its kernels must be registered before loading
    import tensorflow_text  # noqa: F401
except ImportError:  # the peer's venv: its exports need no extra ops
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir")
    parser.add_argument("--signature", required=True)
    parser.add_argument("--input", default="text", help="the signature's string input")
    parser.add_argument("--output", required=True, help="the output holding the text ([batch] or [batch, n]: first)")
    parser.add_argument("--src", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    start = time.perf_counter()
    function = tf.saved_model.load(args.export_dir).signatures[args.signature]
    load_seconds = time.perf_counter() - start
    with open(args.src, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]

    def run(batch: list[str]) -> list[str]:
        texts = function(**{args.input: tf.constant(batch)})[args.output].numpy()
        return [(text[0] if texts.ndim == 2 else text).decode("utf-8") for text in texts]

    start = time.perf_counter()
    run(lines[: args.batch])
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    outputs = [text for i in range(0, len(lines), args.batch) for text in run(lines[i : i + args.batch])]
    seconds = time.perf_counter() - start
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write("".join(text + "\n" for text in outputs))
    print(json.dumps({"sentences": len(lines), "load_s": round(load_seconds, 2),
                      "first_call_s": round(first_seconds, 2), "seconds": round(seconds, 3),
                      "sentences_per_s": round(len(lines) / seconds, 2)}))


if __name__ == "__main__":
    main()

"""Pictures of what a model does, as PNG files: attention heatmaps, hidden states, gradient
norms and training curves. matplotlib's object API with the Agg canvas (no display, no global pyplot state).

Japanese (and other CJK) pieces need a CJK font: the first installed one of :data:`CJK_FONTS` is
used as a fallback behind DejaVu Sans (Debian: ``apt install fonts-ipaexfont-gothic``); without one,
such labels show as boxes and a warning says what to install.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt.errors import NmtError
from nmt.io import atomic_write_bytes
from nmt.run_dir import RunDir

if TYPE_CHECKING:
    from nmt.inspection import Gradients, HiddenStates

CJK_FONTS = (
    "IPAexGothic", "IPAGothic", "Noto Sans CJK JP", "Noto Sans JP", "Source Han Sans JP", "TakaoGothic",
    "VL Gothic", "Droid Sans Fallback", "WenQuanYi Zen Hei", "Noto Sans CJK SC",
)
# File names of those fonts, to find one installed after matplotlib cached its font list.
_CJK_FILES = ("ipaex", "ipag", "notosanscjk", "notosansjp", "sourcehansans", "takao", "vl-gothic", "droidsansfallback",
              "wqy")
_warned_no_cjk = False


def _families() -> list[str]:
    """DejaVu Sans, then an installed CJK font for the glyphs it lacks."""
    from matplotlib import font_manager

    def installed() -> list[str]:
        names = {font.name for font in font_manager.fontManager.ttflist}
        return [name for name in CJK_FONTS if name in names]

    found = installed()
    if not found:
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower().replace("_", "") for key in _CJK_FILES):
                with contextlib.suppress(Exception):
                    font_manager.fontManager.addfont(path)
        found = installed()
    return ["DejaVu Sans", *found[:1]]


def _needs_cjk(labels: Sequence[str]) -> bool:
    return any(ord(ch) >= 0x2E80 for label in labels for ch in label)


@contextlib.contextmanager
def _style(labels: Sequence[str]) -> Iterator[None]:
    import matplotlib

    global _warned_no_cjk
    families = _families()
    if len(families) == 1 and _needs_cjk(labels) and not _warned_no_cjk:
        print("warning: no CJK font found, so Japanese/Chinese labels show as boxes; install one, e.g. "
              "`apt install fonts-ipaexfont-gothic` (Debian/Ubuntu)", file=sys.stderr)
        _warned_no_cjk = True
    with matplotlib.rc_context({"font.family": families, "font.size": 9}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _save(figure: Any, path: str | Path) -> Path:
    """PNG bytes written atomically: the file appears complete or not at all."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(min(max(width, 4.0), 40.0), min(max(height, 3.0), 40.0)))


def _visible(piece: str) -> str:
    """A piece as a label: SentencePiece's word start "▁" shown as is; blank pieces made visible."""
    return piece if piece.strip() else repr(piece)


def save_attention(
    path: str | Path, source_tokens: Sequence[str], target_tokens: Sequence[str], weights: np.ndarray, title: str = ""
) -> Path:
    """Heatmap of attention ``weights`` [target, source]: one row per output piece (the weights the
    decoder used to produce it), one column per source piece."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (len(target_tokens), len(source_tokens)):
        raise ValueError(f"weights {weights.shape} do not match {len(target_tokens)} target x "
                         f"{len(source_tokens)} source tokens")
    return _heatmap(path, weights, source_tokens, target_tokens, title, "output", "viridis", 1.0, "attention weight")


def save_hidden_states(path: str | Path, states: HiddenStates, title: str = "") -> Path:
    """The hidden state after each token: a heatmap of its units (a row per token) beside the
    state's norm and its change from the previous token."""
    values, tokens = np.asarray(states.states, dtype=np.float32), states.tokens
    with _style([*tokens, title]):
        figure = _figure(11.0, 1.6 + 0.32 * len(tokens))
        grid = figure.add_gridspec(1, 2, width_ratios=[4, 1], wspace=0.05)
        heat = figure.add_subplot(grid[0])
        limit = float(np.abs(values).max()) or 1.0
        image = heat.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        heat.set_yticks(range(len(tokens)), [_visible(t) for t in tokens])
        heat.set_xlabel(f"unit (of {values.shape[1]})")
        figure.colorbar(image, ax=heat, location="bottom", fraction=0.05, pad=0.22, label="activation")
        bars = figure.add_subplot(grid[1], sharey=heat)
        rows = np.arange(len(tokens))
        bars.barh(rows - 0.2, states.norms, height=0.4, label="norm")
        bars.barh(rows + 0.2, states.changes, height=0.4, label="change")
        bars.tick_params(labelleft=False)
        bars.legend(loc="lower right", fontsize=7)
        bars.set_xlabel("L2")
        if title:
            heat.set_title(title, loc="left")
        return _save(figure, path)


def save_gradients(path: str | Path, gradients: Gradients, title: str = "") -> Path:
    """Gradient norms (:class:`nmt.inspection.Gradients`): a language model's as a bar per token read
    (labelled with its distance back from the predicted position), a translation's as a heatmap,
    output pieces down and source pieces across, like its attention map."""
    if gradients.target_tokens:
        return _save_gradient_matrix(path, gradients, title)
    shown = gradients.tokens[: gradients.position + 1]
    norms = np.asarray(gradients.norms[: len(shown)], dtype=np.float64)
    heading = f"what log p({gradients.target}) depends on"
    with _style([*shown, gradients.target, title]):
        figure = _figure(7.0, 1.4 + 0.3 * len(shown))
        axes = figure.add_subplot()
        rows = np.arange(len(shown))
        axes.barh(rows, norms, height=0.6, color="#c55a11")
        labels = [f"{_visible(t)}  ({d} back)" for t, d in zip(shown, gradients.distances)]
        axes.set_yticks(rows, labels)
        axes.invert_yaxis()  # the start symbol on top, the last piece read at the bottom
        axes.set_xlabel("gradient norm of the log-probability w.r.t. the token's embedding")
        axes.grid(axis="x", alpha=0.3)
        axes.set_title(f"{title}\n{heading}" if title else heading, loc="left")
        return _save(figure, path)


def _save_gradient_matrix(path: str | Path, gradients: Gradients, title: str) -> Path:
    norms = np.asarray(gradients.norms, dtype=np.float32)
    return _heatmap(path, norms, gradients.tokens, gradients.target_tokens, title, "output (greedy)", "magma",
                    float(norms.max()) or 1.0, "gradient norm")


def _heatmap(path: str | Path, values: np.ndarray, source: Sequence[str], target: Sequence[str], title: str,
             target_label: str, colours: str, vmax: float, value_label: str) -> Path:
    """A [target, source] matrix: source pieces across the top, target pieces down (attention maps
    and their gradient counterpart)."""
    with _style([*source, *target, title]):
        figure = _figure(1.8 + 0.32 * len(source), 1.4 + 0.3 * len(target))
        axes = figure.add_subplot()
        image = axes.imshow(values, cmap=colours, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
        axes.set_xticks(range(len(source)), [_visible(t) for t in source], rotation=90)
        axes.set_yticks(range(len(target)), [_visible(t) for t in target])
        axes.xaxis.tick_top()
        axes.set_xlabel("source")
        axes.xaxis.set_label_position("top")
        axes.set_ylabel(target_label)
        if title:
            axes.set_title(title, pad=12, loc="left")
        figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02, label=value_label)
        return _save(figure, path)


# --- training curves ---------------------------------------------------------------------------


def read_scalar(run_dir: Path, tag: str = "train/loss") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one scalar of the run's TensorBoard logs (``train/...`` every 20 steps),
    later files winning where a resumed run logged a step again."""
    import tensorflow as tf

    by_step: dict[int, float] = {}
    for events in sorted(RunDir(run_dir).logs.glob("events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(str(events)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag == tag:
                        by_step[int(event.step)] = float(tf.make_ndarray(value.tensor))
        except tf.errors.DataLossError:
            pass  # a log cut off by an interruption: keep what was read
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def save_curves(path: str | Path, run_dir: str | Path) -> Path:
    """Loss (train and dev) and dev quality (BLEU and chrF, or word perplexity for a language
    model) against the training step."""
    run_dir = Path(run_dir)
    metrics = RunDir(run_dir).read_metrics()
    steps, loss = read_scalar(run_dir, "train/loss")
    if not metrics and not len(steps):
        raise NmtError(f"{run_dir}: nothing to plot yet (no evaluation in metrics.jsonl, no train/loss in logs/)")
    if not len(steps):  # no TensorBoard logs: the train loss recorded at each evaluation
        steps = np.array([m["step"] for m in metrics if "train_loss" in m])
        loss = np.array([m["train_loss"] for m in metrics if "train_loss" in m])
    eval_steps = [m["step"] for m in metrics]
    # A third panel where the run recorded its gradients (runs since gradient statistics exist).
    panels = 3 if any("gradient_norm" in m for m in metrics) else 2
    with _style([run_dir.name]):
        figure = _figure(16.0 if panels == 3 else 11.0, 4.0)
        left, right = figure.add_subplot(1, panels, 1), figure.add_subplot(1, panels, 2)
        if panels == 3:
            gradient_panel(figure.add_subplot(1, panels, 3), metrics)
        left.plot(steps, loss, label="train loss", linewidth=1)
        dev_loss = [(m["step"], m["dev_loss"]) for m in metrics if "dev_loss" in m]
        if dev_loss:
            left.plot(*zip(*dev_loss), "o-", label="dev loss", markersize=3)
        left.set_xlabel("step")
        left.set_ylabel("loss (nats per token)")
        left.legend()
        left.grid(alpha=0.3)
        if any("dev_bleu" in m for m in metrics):
            for key, label in (("dev_bleu", "dev BLEU (greedy)"), ("dev_chrf", "dev chrF")):
                points = [(m["step"], m[key]) for m in metrics if key in m]
                right.plot(*zip(*points), "o-", label=label, markersize=3)
            right.set_ylabel("score")
        elif any("dev_word_perplexity" in m for m in metrics):
            points = [(m["step"], m["dev_word_perplexity"]) for m in metrics if "dev_word_perplexity" in m]
            right.plot(*zip(*points), "o-", label="dev word perplexity", markersize=3)
            right.set_yscale("log")
            right.set_ylabel("perplexity")
        else:
            right.text(0.5, 0.5, "no dev set" if not eval_steps else "no dev scores", ha="center",
                       transform=right.transAxes)
        right.set_xlabel("step")
        if right.get_legend_handles_labels()[0]:
            right.legend()
        right.grid(alpha=0.3)
        figure.suptitle(f"{run_dir.name}: training curves")
        return _save(figure, path)


def gradient_panel(axes: Any, metrics: list[dict[str, Any]]) -> None:
    """The mean gradient norm before clipping (and its maximum) since the previous evaluation, and
    the fraction of those steps that clipping shrank, against the step: exploding gradients show as
    spikes of the maximum, clipping taming them as a high clipped fraction."""
    points = [m for m in metrics if "gradient_norm" in m]
    steps = [m["step"] for m in points]
    axes.plot(steps, [m["gradient_norm"] for m in points], "o-", label="gradient norm (mean)", markersize=3)
    if all("gradient_norm_max" in m for m in points):
        axes.plot(steps, [m["gradient_norm_max"] for m in points], ":", label="gradient norm (max)", linewidth=1)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("global norm before clipping")
    axes.grid(alpha=0.3)
    clipped = axes.twinx()
    clipped.fill_between(steps, [m.get("clipped_fraction", 0.0) for m in points], step="pre", color="tab:red",
                         alpha=0.2, label="clipped steps")
    clipped.set_ylim(0.0, 1.05)
    clipped.set_ylabel("fraction of steps clipped")
    handles, labels = axes.get_legend_handles_labels()
    more, more_labels = clipped.get_legend_handles_labels()
    axes.legend(handles + more, labels + more_labels, loc="upper right", fontsize=7)

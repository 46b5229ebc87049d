"""YAML experiment files -> a typed, validated :class:`Config`.

Every key of the YAML maps 1:1 onto a field of the dataclasses below, which in turn are the
constructor arguments of the objects that use them. Validation happens before any work starts:
an unknown key (with the closest valid key suggested), a value of the wrong type, a bad choice or a
missing input file raises :class:`NmtError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import sacrebleu
import yaml

from nmt.errors import NmtError
from nmt.tokenizer import MIN_VOCAB_SIZE

# Shipped experiment files live here; `--config en-ja.yaml` finds them by name.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclasses.dataclass
class DataSourceConfig:
    """Where one split of (source, target) text comes from.

    format: ``tsv`` (plain or .gz; columns chosen by index), ``parallel`` (two line-aligned
    files), ``hf`` (a HuggingFace ``datasets`` dataset: a local file/folder or, online, a hub
    name), ``text`` (one sequence per line: language models). A language model reads the source
    side only (``source_column``, ``source_path``, ``source_field``).
    """

    format: Literal["tsv", "parallel", "hf", "text"] = "tsv"
    path: str | None = None  # tsv / text file; hf: dataset name, builder ("json", "csv") or folder
    source_path: str | None = None  # parallel
    target_path: str | None = None  # parallel
    source_column: int = 0  # tsv
    target_column: int = 1  # tsv
    hf_config: str | None = None  # hf: dataset configuration name, e.g. "en-ja"
    hf_split: str = "train"  # hf
    data_files: str | None = None  # hf: local file(s) for builders such as "json"
    source_field: str = "translation.en"  # hf: dotted path to the source string in a record
    target_field: str = "translation.ja"  # hf
    limit: int | None = None  # read at most this many examples (None: all)


@dataclasses.dataclass
class DataConfig:
    train: DataSourceConfig = dataclasses.field(default_factory=DataSourceConfig)
    dev: DataSourceConfig | None = None
    source_language: str = "en"
    target_language: str = "ja"
    # Pairs longer than this (in tokens, after tokenization) are dropped from training, and counted.
    # A language model trained line by line (train.bptt_steps null) uses max_target_length.
    max_source_length: int = 64
    max_target_length: int = 64
    # sacrebleu tokenizer for BLEU: None picks by target language ("ja-mecab" for ja, else "13a");
    # "none" for corpora that are already tokenized.
    bleu_tokenize: str | None = None


@dataclasses.dataclass
class TokenizerConfig:
    """SentencePiece for every unit: ``unigram`` / ``bpe`` subwords, ``char`` or ``word``."""

    model_type: Literal["unigram", "bpe", "char", "word"] = "unigram"
    vocab_size: int = 8000
    shared: bool = False  # one vocabulary for source and target
    character_coverage: float = 0.9995  # < 1 keeps rare CJK characters out of the vocabulary
    input_sentence_size: int = 1_000_000  # sentences sampled for training the tokenizer


@dataclasses.dataclass
class EncoderConfig:
    cell: Literal["rnn", "gru", "lstm"] = "lstm"
    units: int = 256  # per direction
    layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.2  # on embeddings and between layers
    embedding_dropout: float | None = None  # on the embeddings only; null: the same as dropout


@dataclasses.dataclass
class DecoderConfig:
    cell: Literal["rnn", "gru", "lstm"] = "lstm"
    units: int = 256
    layers: int = 1
    # none: no attention (a plain RNN decoder; required for language models).
    attention: Literal["bahdanau", "luong", "none"] = "luong"
    attention_score: Literal["dot", "general"] = "general"  # luong only
    # Feed the previous attentional vector into the next step (Luong et al. 2015). Better models,
    # but the decoder can then no longer run as one fused sequence op during training.
    input_feeding: bool = False
    dropout: float = 0.2
    embedding_dropout: float | None = None  # on the target embeddings only; null: the same as dropout
    bridge: Literal["dense", "zero"] = "dense"  # initial decoder state from the encoder's final state


@dataclasses.dataclass
class ModelConfig:
    embedding_dim: int = 256
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    tie_embeddings: bool = False  # target embedding shared with the output softmax


@dataclasses.dataclass
class TrainConfig:
    steps: int = 10000
    batch_size: int = 64  # sentences per batch ...
    batch_tokens: int | None = None  # ... or, when set, about this many target tokens per batch
    bucket_width: int = 4  # lengths are grouped into buckets this wide to limit padding
    shuffle_buffer: int = 100_000
    learning_rate: float = 0.001
    warmup_steps: int = 0  # linear warm-up
    decay: Literal["none", "inverse_sqrt", "cosine"] = "none"
    clip_norm: float = 5.0  # gradient global-norm clipping: RNNs explode
    label_smoothing: float = 0.0
    eval_every: int = 1000  # steps between dev evaluations (and best-model selection)
    eval_max_sentences: int | None = None  # dev BLEU on at most this many sentences during training
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    early_stopping: int | None = None  # stop after this many evaluations without improvement
    # Language models only. null: one line = one sequence (BOS line EOS), lines batched by length.
    # N: truncated backpropagation through time: the text is one stream (EOS between lines) cut
    # into batch_size parallel streams, trained N tokens at a time, the hidden state carried from
    # one batch to the next.
    bptt_steps: int | None = None
    # Where the steps run. none: one device. mirrored: every local GPU (tf.distribute.MirroredStrategy).
    # multi_worker: the machines of the TF_CONFIG environment variable (MultiWorkerMirroredStrategy).
    # batch_size is the global batch, shared out among the replicas: the same training as on one
    # device, so the learning rate stays as it is.
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    # Mixed precision computes in 16 bits and keeps float32 weights, softmax and loss; mixed_float16
    # adds dynamic loss scaling. A GPU feature; on CPUs with AMX bfloat16 may help too.
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: bool = False  # compile forward + backward with XLA


@dataclasses.dataclass
class DecodeConfig:
    """Translation search; for a language model, ``max_source_length`` bounds the prompt."""

    beam_size: int = 5
    length_penalty: float = 0.6  # GNMT alpha; 0 disables
    max_length_ratio: float = 2.0  # output at most ratio * source length + offset tokens
    max_length_offset: int = 10
    batch_size: int = 32
    # Inputs longer than this many tokens are cut to it before translation (and reported);
    # a longer language-model prompt is an error.
    max_source_length: int = 200


@dataclasses.dataclass
class Config:
    task: Literal["translation", "lm"] = "translation"  # lm: a language model
    run_dir: str = "runs/default"
    seed: int = 1234
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- reading and validation -------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {type(None): "null", int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and converts mappings into dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except NmtError as error:
                errors.append(error)
        raise errors[0] if len(errors) == 1 else NmtError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NmtError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise NmtError(f"{key}: expected a mapping of keys, got {value!r}")
        return _build(tp, value, f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise NmtError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise NmtError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NmtError(f"{key}: expected a number, got {value!r}")
        return check_finite(key, value)
    if tp is str:
        if not isinstance(value, str):
            raise NmtError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")  # a bug in this module, not user input


def check_finite(name: str, value: float) -> float:
    """The one finiteness rule for every float of a config, a CLI option or an API argument: NaN
    and infinities pass every range check (``nan < 0`` is false) and would train or sample garbage."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NmtError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise NmtError(f"{name}: must be a finite number, got {value!r}")
    return number


def check_sampling(temperature: float, top_p: float, max_tokens: int = 1, seed: int = 0) -> None:
    """Sampling settings that need no model (``nmt generate``, ``LanguageModelRunner.generate``);
    top_k needs the vocabulary size and is checked where the model is."""
    if check_finite("temperature", temperature) < 0:
        raise NmtError(f"temperature must not be negative, got {temperature}")
    if not 0 < check_finite("top_p", top_p) <= 1:
        raise NmtError(f"top_p must be in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise NmtError(f"max_tokens must be positive, got {max_tokens}")
    if not 0 <= seed < 2**31:
        raise NmtError(f"seed must be between 0 and 2**31 - 1, got {seed}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(names)}"
            raise NmtError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    return cls(**kwargs)


def _set_override(tree: dict[str, Any], assignment: str) -> None:
    """Applies one ``a.b.c=value`` override; the value is parsed as YAML (so 200 is an int)."""
    if "=" not in assignment:
        raise NmtError(f"--set {assignment!r}: expected KEY=VALUE, for example train.steps=200")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise NmtError(f"--set {dotted}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise NmtError(f"--set {assignment!r}: the value is not valid YAML: {error}") from None


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or else the name of a shipped config (with or without ``.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    shipped = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    raise NmtError(f"config file not found: {name} (shipped configs: {', '.join(shipped) or 'none'})")


def _resolve_paths(config: Config, base: Path) -> None:
    """Makes data paths absolute (relative to the config file) and checks that they exist."""
    for split in ("train", "dev"):
        source = getattr(config.data, split)
        if source is None:
            continue
        key = f"data.{split}"
        needed = {"tsv": ["path"], "text": ["path"], "parallel": ["source_path", "target_path"], "hf": ["path"]}
        for field in needed[source.format]:
            if getattr(source, field) is None:
                raise NmtError(f"{key}.{field}: required when {key}.format is {source.format!r}")
        fields = ["path", "source_path", "target_path", "data_files"]
        for field in fields:
            value = getattr(source, field)
            if value is None:
                continue
            path = Path(value).expanduser()
            if not path.is_absolute():
                path = base / path
            if source.format == "hf" and field == "path" and not path.exists():
                continue  # a hub dataset name or a builder such as "json", not a local path
            if not path.exists():
                raise NmtError(f"{key}.{field}: file not found: {path}")
            setattr(source, field, str(path.resolve()))


def _check_values(config: Config) -> None:
    positive = {
        "tokenizer.vocab_size": config.tokenizer.vocab_size,
        "model.embedding_dim": config.model.embedding_dim,
        "model.encoder.units": config.model.encoder.units,
        "model.encoder.layers": config.model.encoder.layers,
        "model.decoder.units": config.model.decoder.units,
        "model.decoder.layers": config.model.decoder.layers,
        "train.steps": config.train.steps,
        "train.batch_size": config.train.batch_size,
        "train.bucket_width": config.train.bucket_width,
        "train.eval_every": config.train.eval_every,
        "train.checkpoint_every": config.train.checkpoint_every,
        "decode.beam_size": config.decode.beam_size,
        "decode.batch_size": config.decode.batch_size,
        "data.max_source_length": config.data.max_source_length,
        "data.max_target_length": config.data.max_target_length,
    }
    optional_positive = {
        "train.batch_tokens": config.train.batch_tokens,
        "train.eval_max_sentences": config.train.eval_max_sentences,
        "train.early_stopping": config.train.early_stopping,
        "train.bptt_steps": config.train.bptt_steps,
        "data.train.limit": config.data.train.limit,
        "data.dev.limit": config.data.dev.limit if config.data.dev else None,
    }
    positive.update({k: v for k, v in optional_positive.items() if v is not None})
    positive.update({
        "train.keep_checkpoints": config.train.keep_checkpoints,
        "train.shuffle_buffer": config.train.shuffle_buffer,
        "train.learning_rate": config.train.learning_rate,
        "train.clip_norm": config.train.clip_norm,
        "decode.max_source_length": config.decode.max_source_length,
        "decode.max_length_ratio": config.decode.max_length_ratio,
    })
    for key, value in positive.items():
        if value <= 0:
            raise NmtError(f"{key}: must be positive, got {value}")
    not_negative = {
        "train.warmup_steps": config.train.warmup_steps,
        "decode.max_length_offset": config.decode.max_length_offset,
        "decode.length_penalty": config.decode.length_penalty,
    }
    for split in ("train", "dev"):
        source = getattr(config.data, split)
        if source is not None:
            if source.format == "text" and config.task == "translation":
                raise NmtError(f"data.{split}.format: 'text' has no targets; translation needs tsv, parallel or hf")
            not_negative[f"data.{split}.source_column"] = source.source_column
            not_negative[f"data.{split}.target_column"] = source.target_column
    for key, value in not_negative.items():
        if value < 0:
            raise NmtError(f"{key}: must not be negative, got {value}")
    encoder, decoder = config.model.encoder, config.model.decoder
    if config.task == "lm":
        if decoder.attention != "none":
            raise NmtError("model.decoder.attention: a language model has no encoder to attend to; set it to none")
    elif config.train.bptt_steps is not None:
        raise NmtError("train.bptt_steps: only for language models (task: lm)")
    if config.train.bptt_steps is not None and config.train.distribute != "none":
        raise NmtError("train.distribute: running-text language models (train.bptt_steps) train on one device only, "
                       "for now (their carried state is per row of the batch)")
    if decoder.attention == "none" and decoder.input_feeding:
        raise NmtError("model.decoder.input_feeding: needs attention (model.decoder.attention is none)")
    memory_size = encoder.units * (2 if encoder.bidirectional else 1)
    if decoder.attention == "luong" and decoder.attention_score == "dot" and memory_size != decoder.units:
        raise NmtError(
            f"model.decoder.attention_score: 'dot' compares encoder outputs ({memory_size} = encoder.units"
            f"{' x 2 directions' if encoder.bidirectional else ''}) with decoder states ({decoder.units}): "
            "make them equal or use 'general'"
        )
    tokenizers = sacrebleu.metrics.bleu.BLEU.TOKENIZERS
    if config.data.bleu_tokenize is not None and config.data.bleu_tokenize not in tokenizers:
        close = difflib.get_close_matches(config.data.bleu_tokenize, list(tokenizers), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (choices: {', '.join(tokenizers)})"
        raise NmtError(f"data.bleu_tokenize: unknown sacrebleu tokenizer {config.data.bleu_tokenize!r}{hint}")
    if config.tokenizer.input_sentence_size <= 100:
        raise NmtError("tokenizer.input_sentence_size: SentencePiece samples more than 100 sentences, got "
                       f"{config.tokenizer.input_sentence_size}")
    if config.tokenizer.vocab_size < MIN_VOCAB_SIZE:
        raise NmtError(
            f"tokenizer.vocab_size: must be at least {MIN_VOCAB_SIZE} (4 ids are reserved), got {config.tokenizer.vocab_size}"
        )
    for key, value in {
        "model.encoder.dropout": config.model.encoder.dropout,
        "model.decoder.dropout": config.model.decoder.dropout,
        "model.encoder.embedding_dropout": config.model.encoder.embedding_dropout,
        "model.decoder.embedding_dropout": config.model.decoder.embedding_dropout,
        "train.label_smoothing": config.train.label_smoothing,
    }.items():
        if value is not None and not 0.0 <= value < 1.0:
            raise NmtError(f"{key}: must be in [0, 1), got {value}")
    if config.model.tie_embeddings and config.model.embedding_dim != config.model.decoder.units:
        # The tied matrix is used both as embedding (dim) and as output projection (units).
        raise NmtError("model.tie_embeddings: needs model.embedding_dim == model.decoder.units")


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Reads, overrides and validates an experiment file. Raises :class:`NmtError` on any problem."""
    path = resolve_config_path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise NmtError(f"{path}: not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise NmtError(f"{path}: not UTF-8 text (byte {error.start})") from None
    if not isinstance(tree, dict):
        raise NmtError(f"{path}: expected a mapping of config keys at the top level")
    for assignment in overrides or []:
        _set_override(tree, assignment)
    model_tree = tree.get("model")
    if tree.get("task") == "lm" and isinstance(model_tree, dict) and "encoder" in model_tree:
        raise NmtError(f"{path}: model.encoder: a language model has no encoder; remove the section")
    try:
        config = _build(Config, tree, "")
        _resolve_paths(config, path.resolve().parent)
        _check_values(config)
    except NmtError as error:
        raise NmtError(f"{path}: {error}") from None
    return config


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Validates an already-resolved config (the copy stored in a run directory).

    Data files are not checked: a trained run must load for translation after its corpus is gone.
    """
    config = _build(Config, tree, "")
    _check_values(config)
    return config


def read_run_config(run_dir: Path) -> Config:
    """The config stored in a trained run directory (no TensorFlow needed: the CLI checks a run
    before loading it)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise NmtError(f"{run_dir} is not a run directory: {path.name} is missing (train one with `nmt train`)")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(tree, dict):
            raise NmtError("expected a mapping of config keys")
        return config_from_dict(tree)
    except (NmtError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise NmtError(f"{path}: not a valid run config: {error}") from None


def check_task(run_dir: str | Path, config: Config, task: str | None) -> None:
    """``task`` ("translation", "lm" or None: either) must be what the run holds."""
    if task is not None and config.task != task:
        kinds = {"translation": "a translation model", "lm": "a language model (task: lm)"}
        raise NmtError(f"{run_dir} holds {kinds[config.task]}, but this needs {kinds[task]}")


def save_config(config: Config, path: Path) -> None:
    from nmt.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))

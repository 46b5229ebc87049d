"""YAML experiment files -> a typed, validated :class:`Config`.

Every key of the YAML maps 1:1 onto a field of the dataclasses below, which in turn are the
constructor arguments of the objects that use them. Validation happens before any work starts:
an unknown key (with the closest valid key suggested), a value of the wrong type, a bad choice or a
missing input file raises :class:`NmtError` naming the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt.config_fields import apply_override, build_section, check_fields, duration_seconds, setting
from nmt.constants import MIN_VOCAB_SIZE
from nmt.errors import NmtError

# Shipped experiment files live here; `--config en-ja.yaml` finds them by name.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _bleu_tokenizers() -> Sequence[str]:
    import sacrebleu

    return list(sacrebleu.metrics.bleu.BLEU.TOKENIZERS)


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
    source_column: int = setting(0, at_least=0)  # tsv
    target_column: int = setting(1, at_least=0)  # tsv
    hf_config: str | None = None  # hf: dataset configuration name, e.g. "en-ja"
    hf_split: str = "train"  # hf
    data_files: str | None = None  # hf: local file(s) for builders such as "json"
    source_field: str = "translation.en"  # hf: dotted path to the source string in a record
    target_field: str = "translation.ja"  # hf
    limit: int | None = setting(None, above=0)  # read at most this many examples (None: all)
    # Training data only: drop an example whose pair came before, compared exactly or normalised (NFKC,
    # lower-cased, without punctuation and spaces: the form nmt data check compares in); counted in the log.
    dedup: Literal["none", "exact", "normalized"] = "none"


@dataclasses.dataclass
class DataConfig:
    train: DataSourceConfig = dataclasses.field(default_factory=DataSourceConfig)
    dev: DataSourceConfig | None = None
    source_language: str = "en"
    target_language: str = "ja"
    # Pairs longer than this (in tokens, after tokenization) are dropped from training, and counted.
    # A language model trained line by line (train.bptt_steps null) uses max_target_length.
    max_source_length: int = setting(64, above=0)
    max_target_length: int = setting(64, above=0)
    # sacrebleu tokenizer for BLEU: None picks by target language ("ja-mecab" for ja, else "13a");
    # "none" for corpora that are already tokenized.
    bleu_tokenize: str | None = setting(None, one_of=_bleu_tokenizers)


@dataclasses.dataclass
class TokenizerConfig:
    """SentencePiece for every unit: ``unigram`` / ``bpe`` subwords, ``char`` or ``word``."""

    model_type: Literal["unigram", "bpe", "char", "word"] = "unigram"
    vocab_size: int = setting(8000, above=0, at_least=MIN_VOCAB_SIZE, why="4 ids are reserved")
    shared: bool = False  # one vocabulary for source and target
    character_coverage: float = 0.9995  # < 1 keeps rare CJK characters out of the vocabulary
    # Sentences sampled for training the tokenizer.
    input_sentence_size: int = setting(1_000_000, above=100, why="SentencePiece samples more than 100 sentences")


@dataclasses.dataclass
class EncoderConfig:
    cell: Literal["rnn", "gru", "lstm", "cifg"] = "lstm"  # cifg: an LSTM whose input gate is 1 - forget gate
    units: int = setting(256, above=0)  # per direction
    layers: int = setting(1, above=0)
    bidirectional: bool = True
    dropout: float = setting(0.2, within=(0, 1))  # on embeddings and between layers
    # On the embeddings only; null: the same as dropout.
    embedding_dropout: float | None = setting(None, within=(0, 1))


@dataclasses.dataclass
class DecoderConfig:
    cell: Literal["rnn", "gru", "lstm", "cifg"] = "lstm"  # cifg: an LSTM whose input gate is 1 - forget gate
    units: int = setting(256, above=0)
    layers: int = setting(1, above=0)
    # none: no attention (a plain RNN decoder; required for language models).
    attention: Literal["bahdanau", "luong", "none"] = "luong"
    attention_score: Literal["dot", "general"] = "general"  # luong only
    # Feed the previous attentional vector into the next step (Luong et al. 2015). Better models,
    # but the decoder can then no longer run as one fused sequence op during training.
    input_feeding: bool = False
    dropout: float = setting(0.2, within=(0, 1))
    # On the target embeddings only; null: the same as dropout.
    embedding_dropout: float | None = setting(None, within=(0, 1))
    bridge: Literal["dense", "zero"] = "dense"  # initial decoder state from the encoder's final state
    # A linear map from the top state (units) down to this size before the softmax, so that a large tied
    # vocabulary costs vocab x output_projection instead of vocab x units (a keyboard's model: 96).
    # null: the softmax reads the state itself.
    output_projection: int | None = setting(None, above=0)


@dataclasses.dataclass
class ModelConfig:
    embedding_dim: int = setting(256, above=0)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    tie_embeddings: bool = False  # target embedding shared with the output softmax


@dataclasses.dataclass
class TrainConfig:
    steps: int = setting(10000, above=0)
    batch_size: int = setting(64, above=0)  # sentences per batch ...
    batch_tokens: int | None = setting(None, above=0)  # ... or, when set, about this many target tokens per batch
    bucket_width: int = setting(4, above=0)  # lengths are grouped into buckets this wide to limit padding
    shuffle_buffer: int = setting(100_000, above=0)
    # adam: Adam (its defaults but the rate). sgd: plain stochastic gradient descent, the classic
    # recipe for word language models (Zaremba et al. 2014: rate 1.0), at the same schedule and clipping.
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = setting(0.001, above=0)
    warmup_steps: int = setting(0, at_least=0)  # linear warm-up
    decay: Literal["none", "inverse_sqrt", "cosine"] = "none"
    clip_norm: float = setting(5.0, above=0)  # gradient global-norm clipping: RNNs explode
    label_smoothing: float = setting(0.0, within=(0, 1))
    # Sampled softmax: each training step scores the target token against this many tokens drawn
    # log-uniformly (Zipf) over the ids, which the tokenizer numbers most frequent first, instead of
    # against the whole vocabulary. Dev scoring and decoding keep the full softmax; the logged train_loss
    # is then the sampled estimate, below the full softmax's. null: full softmax.
    sampled_softmax: int | None = setting(None, above=0)
    # Wall-clock training time, e.g. 60m, 90s, 1h30m: training stops when it is spent (or at steps,
    # whichever comes first), then scores dev as usual. The step rate is measured as training goes and
    # the decay horizon (cosine) re-estimated so that the rate reaches its floor as the budget ends;
    # warm-up stays in steps. Time spent before an interruption counts (kept in the checkpoint), so a
    # resumed run finishes the same budget. Not bit-reproducible: where it stops depends on the
    # machine's speed; a step-budgeted run (steps alone) is.
    time_budget: str | None = setting(None, parsed_by=duration_seconds)
    eval_every: int = setting(1000, above=0)  # steps between dev evaluations (and best-model selection)
    # Dev BLEU (a language model: perplexity) on at most this many sentences during training, spread
    # evenly over the dev set (every len/N-th line; running text: 8 evenly spaced stretches), not the
    # first N. null: all of them. The final score after training always uses the whole dev set.
    eval_max_sentences: int | None = setting(None, above=0)
    checkpoint_every: int = setting(500, above=0)
    keep_checkpoints: int = setting(3, above=0)
    # At the end of training, average the weights of the last N checkpoints into averaged/ (as `nmt
    # average --last N` does); best/ then holds whichever of them and the best weights scores higher on dev.
    average_last: int | None = setting(None, above=0)
    # Fine-tuning: a run directory whose best weights and tokenizers (its vocabulary) a new run starts
    # from, at step 0 with a fresh optimizer. model and tokenizer must be the source run's (dropout may
    # differ). Read when a run starts, not when it resumes.
    init_from: str | None = None
    early_stopping: int | None = setting(None, above=0)  # stop after this many evaluations without improvement
    # Language models only. null: one line = one sequence (BOS line EOS), lines batched by length.
    # N: truncated backpropagation through time: the text is one stream (EOS between lines) cut
    # into batch_size parallel streams, trained N tokens at a time, the hidden state carried from
    # one batch to the next.
    bptt_steps: int | None = setting(None, above=0)
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

    beam_size: int = setting(5, above=0)
    length_penalty: float = setting(0.6, at_least=0)  # GNMT alpha; 0 disables
    # Output at most ratio * source length + offset tokens.
    max_length_ratio: float = setting(2.0, above=0)
    max_length_offset: int = setting(10, at_least=0)
    batch_size: int = setting(32, above=0)
    # Decode over each batch's vocabulary shortlist (built after training by `nmt shortlist`) rather
    # than the whole target vocabulary: faster, and only as good as the shortlist's coverage.
    shortlist: bool = False
    # Inputs longer than this many tokens are cut to it before translation (and reported);
    # a longer language-model prompt is an error.
    max_source_length: int = setting(200, above=0)


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


def _check_combinations(config: Config) -> None:
    """The rules that need more than one field."""
    if config.data.dev is not None and config.data.dev.dedup != "none":
        raise NmtError("data.dev.dedup: only the training data is deduplicated; every dev example is scored")
    for split in ("train", "dev"):
        source = getattr(config.data, split)
        if source is not None and source.format == "text" and config.task == "translation":
            raise NmtError(f"data.{split}.format: 'text' has no targets; translation needs tsv, parallel or hf")
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
    train = config.train
    if train.average_last is not None and train.average_last > train.keep_checkpoints:
        raise NmtError(f"train.average_last: {train.average_last} is more than the {train.keep_checkpoints} "
                       "checkpoints kept (train.keep_checkpoints)")
    if train.init_from is not None and Path(train.init_from).expanduser().resolve() == \
            Path(config.run_dir).expanduser().resolve():
        raise NmtError(f"train.init_from: {train.init_from} is this run's own run_dir; name another run")
    if train.sampled_softmax is not None:
        if train.label_smoothing:
            raise NmtError("train.sampled_softmax: smoothing needs the whole vocabulary; set train.label_smoothing "
                           "to 0 or train.sampled_softmax to null")
        if train.sampled_softmax >= config.tokenizer.vocab_size:
            raise NmtError(f"train.sampled_softmax: {train.sampled_softmax} samples is not fewer than the "
                           f"{config.tokenizer.vocab_size} tokens of tokenizer.vocab_size; use the full softmax (null)")
    softmax_input = decoder.output_projection or decoder.units
    if config.model.tie_embeddings and config.model.embedding_dim != softmax_input:
        # The tied matrix is used both as embedding (dim) and as the softmax's weights (what it reads).
        what = "model.decoder.output_projection" if decoder.output_projection else "model.decoder.units"
        raise NmtError(f"model.tie_embeddings: needs model.embedding_dim == {what} "
                       f"({config.model.embedding_dim} != {softmax_input})")


def _check_values(config: Config) -> None:
    check_fields(config)
    _check_combinations(config)


def load_config(path: str | Path, overrides: list[str] | None = None, run_dir: str | None = None) -> Config:
    """Reads, overrides and validates an experiment file. Raises :class:`NmtError` on any problem.
    ``run_dir``: the run directory as typed (``nmt train --run-dir``), validated with the rest (it
    must not be ``train.init_from``'s run, for one)."""
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
        apply_override(tree, assignment)
    if run_dir is not None:
        if not run_dir.strip():
            raise NmtError("--run-dir is empty: give the run directory to write")
        tree["run_dir"] = run_dir  # a path, taken as typed (not parsed as YAML like an override)
    model_tree = tree.get("model")
    if tree.get("task") == "lm" and isinstance(model_tree, dict) and "encoder" in model_tree:
        raise NmtError(f"{path}: model.encoder: a language model has no encoder; remove the section")
    try:
        config = build_section(Config, tree, "")
        _resolve_paths(config, path.resolve().parent)
        _check_values(config)
    except NmtError as error:
        raise NmtError(f"{path}: {error}") from None
    return config


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Validates an already-resolved config (the copy stored in a run directory).

    Data files are not checked: a trained run must load for translation after its corpus is gone.
    """
    config = build_section(Config, tree, "")
    _check_values(config)
    return config

"""Tests for nmt/config.py: shipped configs, validation messages, overrides, path resolution."""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from pathlib import Path

import pytest
import yaml

from nmt.config import (
    CONFIG_DIR,
    Config,
    DataSourceConfig,
    config_from_dict,
    load_config,
    resolve_config_path,
)
from nmt.constants import MIN_VOCAB_SIZE
from nmt.errors import NmtError
from nmt.run_config import save_config

REPO_DATA = (CONFIG_DIR.parent / "data" / "en-ja").resolve()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def tsv(tmp_path) -> Path:
    return write(tmp_path / "train.tsv", "Hello.\tこんにちは。\nThanks.\tありがとう。\n")


@pytest.fixture
def minimal(tmp_path, tsv) -> Path:
    """A small valid config whose training data is a TSV next to it."""
    return write(
        tmp_path / "exp.yaml",
        """
        run_dir: runs/test
        data:
          train: {format: tsv, path: train.tsv}
        model:
          embedding_dim: 16
          encoder: {cell: lstm, units: 16}
          decoder: {cell: lstm, units: 16}
        train:
          steps: 10
          batch_size: 4
        """,
    )


def config_with(tmp_path, body: str) -> Path:
    """A config = the TSV data section + ``body`` (YAML text for the other sections)."""
    write(tmp_path / "train.tsv", "a\tb\n")
    return write(
        tmp_path / "exp.yaml",
        "data:\n  train: {format: tsv, path: train.tsv}\n" + textwrap.dedent(body).lstrip("\n"),
    )


def error_of(path, overrides=None) -> str:
    with pytest.raises(NmtError) as info:
        load_config(path, overrides)
    return str(info.value)


# --- shipped configs ---------------------------------------------------------------------------


SHIPPED = ["en-ja.yaml", "en-ja-tiny.yaml", "small-parallel-enja.yaml"]
# small-parallel-enja reads the benchmark corpus from ../shared beside the checkout (as in CI).
SHARED_BENCHMARK = CONFIG_DIR.parent.parent / "shared" / "data" / "small_parallel_enja"


def skip_unless_available(name):
    if not (CONFIG_DIR / name).is_file():
        pytest.skip(f"{name} is not shipped")
    if name == "small-parallel-enja.yaml" and not SHARED_BENCHMARK.is_dir():
        pytest.skip(f"{SHARED_BENCHMARK} is not beside this checkout")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads_by_path(name):
    skip_unless_available(name)
    path = CONFIG_DIR / name
    config = load_config(path)
    assert isinstance(config, Config)
    for split in (config.data.train, config.data.dev):
        if split is None:
            continue
        for field in ("path", "source_path", "target_path", "data_files"):
            value = getattr(split, field)
            if value is not None and not (split.format == "hf" and field == "path"):
                assert Path(value).is_absolute() and Path(value).exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads_by_bare_name(name, tmp_path, monkeypatch):
    skip_unless_available(name)
    monkeypatch.chdir(tmp_path)  # nothing of that name in the working directory
    by_name = load_config(name)
    without_suffix = load_config(name.removesuffix(".yaml"))
    assert by_name == load_config(CONFIG_DIR / name) == without_suffix


def test_en_ja_tiny_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config("en-ja-tiny.yaml")
    assert config.data.train.path == str(REPO_DATA / "train.tsv.gz")
    assert config.data.dev.path == str(REPO_DATA / "dev.tsv.gz")
    assert (config.data.train.limit, config.data.dev.limit) == (2000, 50)
    assert config.model.encoder.cell == config.model.decoder.cell == "gru"
    assert config.model.embedding_dim == 32
    assert config.train.steps == 60
    assert config.train.learning_rate == pytest.approx(0.003)
    assert config.decode.beam_size == 3
    # Keys not given keep the dataclass defaults.
    assert config.train.clip_norm == 5.0
    assert config.tokenizer.shared is False


def test_en_ja_values():
    config = load_config(CONFIG_DIR / "en-ja.yaml")
    assert config.data.train.path == str(REPO_DATA / "train.tsv.gz")
    assert config.data.train.limit is None
    assert config.model.encoder.cell == "lstm"
    assert config.train.decay == "cosine"
    assert config.train.label_smoothing == pytest.approx(0.1)
    assert config.train.early_stopping == 4


def test_resolve_config_path_prefers_existing_path(tmp_path, monkeypatch):
    local = write(tmp_path / "en-ja-tiny.yaml", "train: {steps: 3}\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("en-ja-tiny.yaml") == Path("en-ja-tiny.yaml")
    assert resolve_config_path(local) == local
    assert resolve_config_path("en-ja") == CONFIG_DIR / "en-ja.yaml"


def test_missing_config_file_lists_shipped_configs(tmp_path):
    message = error_of(tmp_path / "nope.yaml")
    assert message.startswith(f"config file not found: {tmp_path / 'nope.yaml'} (shipped configs: ")
    shipped = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    assert "en-ja.yaml" in shipped and "en-ja-tiny.yaml" in shipped
    assert message.endswith(f"(shipped configs: {', '.join(shipped)})")


# --- a small config of our own -----------------------------------------------------------------


def test_minimal_config_and_relative_data_path(minimal, tsv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # paths are relative to the YAML file, not the cwd
    config = load_config(minimal)
    assert config.data.train == DataSourceConfig(format="tsv", path=str(tsv.resolve()))
    assert config.data.dev is None
    assert config.run_dir == "runs/test"
    assert config.train.steps == 10 and config.train.batch_size == 4
    assert config.model.encoder.units == 16
    assert config.model.encoder.bidirectional is True  # default


def test_empty_yaml_needs_train_path(tmp_path):
    path = write(tmp_path / "empty.yaml", "")
    assert error_of(path) == f"{path}: data.train.path: required when data.train.format is 'tsv'"


def test_parallel_requires_both_paths(tmp_path):
    write(tmp_path / "a.en", "x\n")
    path = write(tmp_path / "exp.yaml", "data:\n  train: {format: parallel, source_path: a.en}\n")
    assert error_of(path) == f"{path}: data.train.target_path: required when data.train.format is 'parallel'"


def test_hf_builder_name_kept_and_data_files_resolved(tmp_path):
    data = write(tmp_path / "d" / "train.jsonl", "{}\n")
    path = write(
        tmp_path / "exp.yaml",
        "data:\n  train: {format: hf, path: json, data_files: d/train.jsonl}\n",
    )
    config = load_config(path)
    assert config.data.train.path == "json"
    assert config.data.train.data_files == str(data.resolve())


def test_hf_missing_data_files(tmp_path):
    path = write(tmp_path / "exp.yaml", "data:\n  train: {format: hf, path: json, data_files: gone.jsonl}\n")
    message = error_of(path)
    assert "data.train.data_files: file not found:" in message
    assert str(tmp_path / "gone.jsonl") in message


def test_missing_data_file_names_key_and_path(tmp_path):
    path = write(tmp_path / "exp.yaml", "data:\n  train: {format: tsv, path: missing/train.tsv}\n")
    assert error_of(path) == f"{path}: data.train.path: file not found: {tmp_path / 'missing' / 'train.tsv'}"


def test_missing_dev_file_names_dev_key(tmp_path, tsv):
    path = write(
        tmp_path / "exp.yaml",
        "data:\n  train: {format: tsv, path: train.tsv}\n  dev: {format: tsv, path: dev.tsv}\n",
    )
    assert error_of(path) == f"{path}: data.dev.path: file not found: {tmp_path / 'dev.tsv'}"


# --- unknown keys ------------------------------------------------------------------------------


def test_unknown_nested_key_suggests_closest(tmp_path):
    message = error_of(config_with(tmp_path, "train: {stpes: 10}\n"))
    assert "unknown config key" in message
    assert "stpes" in message
    hint = message.split("did you mean", 1)[1]
    assert "steps" in hint


def test_unknown_nested_key_is_named_by_its_dotted_path(tmp_path):
    message = error_of(config_with(tmp_path, "train: {stpes: 10}\n"))
    assert "train.stpes" in message
    assert "train.steps" in message


def test_unknown_top_level_key(tmp_path):
    path = config_with(tmp_path, "trian: {steps: 10}\n")
    message = error_of(path)
    assert message.startswith(f"{path}: unknown config key ")
    named, hint = message.split("did you mean", 1)
    assert "trian" in named and "train" in hint


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    message = error_of(config_with(tmp_path, "decode: {zzzzzz: 1}\n"))
    assert "zzzzzz" in message
    assert (
        "valid keys: beam_size, length_penalty, max_length_ratio, max_length_offset, batch_size, shortlist, "
        "max_source_length" in message
    )


def test_unknown_deeply_nested_key(tmp_path):
    message = error_of(config_with(tmp_path, "model:\n  encoder: {unit: 8}\n"))
    named, hint = message.split("did you mean", 1)
    assert "unknown config key" in named and "encoder" in named and "unit" in named
    assert "units" in hint


def test_unknown_deeply_nested_key_dotted(tmp_path):
    message = error_of(config_with(tmp_path, "model:\n  encoder: {unit: 8}\n"))
    assert "model.encoder.unit" in message and "model.encoder.units" in message


# --- types and choices -------------------------------------------------------------------------


WRONG_TYPES = [
    # (YAML body, dotted key, message after the key)
    ('train: {steps: "ten"}\n', "train.steps", "expected an integer, got 'ten'"),
    ("train: {steps: 10.5}\n", "train.steps", "expected an integer, got 10.5"),
    ("train: {steps: true}\n", "train.steps", "expected an integer, got True"),
    ("train: {learning_rate: fast}\n", "train.learning_rate", "expected a number, got 'fast'"),
    ("model: {tie_embeddings: 1}\n", "model.tie_embeddings", "expected true or false, got 1"),
    ("model:\n  encoder: {units: [1]}\n", "model.encoder.units", "expected an integer, got [1]"),
    ("run_dir: 5\n", "run_dir", "expected a string, got 5"),
    ("train: 5\n", "train", "expected a mapping of keys, got 5"),
    ("train: {batch_tokens: lots}\n", "train.batch_tokens", "expected an integer, got 'lots'"),
    ("data:\n  dev: 3\n", "data.dev", "expected a mapping of keys, got 3"),
]


def _wrong_type_config(tmp_path, body):
    if body.startswith("data:"):
        write(tmp_path / "train.tsv", "a\tb\n")
        return write(tmp_path / "exp.yaml", "data:\n  train: {format: tsv, path: train.tsv}\n  dev: 3\n")
    return config_with(tmp_path, body)


@pytest.mark.parametrize(("body", "key", "expected"), WRONG_TYPES)
def test_wrong_type_is_reported(tmp_path, body, key, expected):
    path = _wrong_type_config(tmp_path, body)
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    # The leaf name and the complaint are there (the dotted prefix: see the next test).
    assert message.endswith(f"{key.rsplit('.', 1)[-1]}: {expected}")


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    WRONG_TYPES,
)
def test_wrong_type_names_the_dotted_key(tmp_path, body, key, expected):
    path = _wrong_type_config(tmp_path, body)
    assert error_of(path) == f"{path}: {key}: {expected}"


def test_int_is_accepted_for_float_and_converted(tmp_path):
    config = load_config(config_with(tmp_path, "train: {learning_rate: 1, clip_norm: 2}\n"))
    assert config.train.learning_rate == 1.0 and type(config.train.learning_rate) is float
    assert type(config.train.clip_norm) is float


def test_optional_values_accept_null(tmp_path):
    config = load_config(config_with(tmp_path, "train: {batch_tokens: null, early_stopping: null}\n"))
    assert config.train.batch_tokens is None and config.train.early_stopping is None


def test_float_in_exponent_notation(tmp_path):
    config = load_config(config_with(tmp_path, "train: {learning_rate: 1e-3}\n"))
    assert config.train.learning_rate == pytest.approx(0.001)


BAD_CHOICES = [
    # (YAML body, dotted key, message after the key)
    (
        "model:\n  encoder: {cell: lstn}\n",
        "model.encoder.cell",
        "'lstn' is not one of 'rnn', 'gru', 'lstm', 'cifg' (did you mean 'lstm'?)",
    ),
    ("train: {decay: zzz}\n", "train.decay", "'zzz' is not one of 'none', 'inverse_sqrt', 'cosine'"),
    (
        "data:\n  train: {format: tvs, path: x}\n",
        "data.train.format",
        "'tvs' is not one of 'tsv', 'parallel', 'hf', 'text' (did you mean 'tsv'?)",
    ),
    ("task: translate\n", "task", "'translate' is not one of 'translation', 'lm' (did you mean 'translation'?)"),
]


def _choice_config(tmp_path, body):
    if body.startswith("data:"):
        return write(tmp_path / "exp.yaml", body)
    return config_with(tmp_path, body)


@pytest.mark.parametrize(("body", "key", "expected"), BAD_CHOICES)
def test_bad_choice_is_reported_with_suggestion(tmp_path, body, key, expected):
    path = _choice_config(tmp_path, body)
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert message.endswith(f"{key.rsplit('.', 1)[-1]}: {expected}")


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    BAD_CHOICES,
)
def test_bad_choice_names_the_dotted_key(tmp_path, body, key, expected):
    path = _choice_config(tmp_path, body)
    assert error_of(path) == f"{path}: {key}: {expected}"


def test_invalid_yaml(tmp_path):
    path = write(tmp_path / "bad.yaml", "train: [1, 2\n")
    assert error_of(path).startswith(f"{path}: not valid YAML:")


def test_top_level_must_be_mapping(tmp_path):
    path = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    assert error_of(path) == f"{path}: expected a mapping of config keys at the top level"


# --- value checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.steps=0", "train.steps: must be positive, got 0"),
        ("train.steps=-5", "train.steps: must be positive, got -5"),
        ("tokenizer.vocab_size=-1", "tokenizer.vocab_size: must be positive, got -1"),
        ("decode.beam_size=0", "decode.beam_size: must be positive, got 0"),
        ("data.max_target_length=0", "data.max_target_length: must be positive, got 0"),
        ("model.encoder.dropout=1.0", "model.encoder.dropout: must be in [0, 1), got 1.0"),
        ("model.decoder.embedding_dropout=1.5", "model.decoder.embedding_dropout: must be in [0, 1), got 1.5"),
        ("train.label_smoothing=-0.1", "train.label_smoothing: must be in [0, 1), got -0.1"),
    ],
)
def test_out_of_range_values_name_the_key(minimal, override, expected):
    assert error_of(minimal, [override]) == f"{minimal}: {expected}"


def test_tie_embeddings_needs_equal_dims(minimal):
    message = error_of(minimal, ["model.tie_embeddings=true", "model.decoder.units=32"])
    assert message == f"{minimal}: model.tie_embeddings: needs model.embedding_dim == model.decoder.units (16 != 32)"
    config = load_config(minimal, ["model.tie_embeddings=true"])  # 16 == 16
    assert config.model.tie_embeddings is True
    # With a projection before the softmax, the tied matrix meets the projection, not the units.
    config = load_config(minimal, ["model.tie_embeddings=true", "model.decoder.units=32",
                                   "model.decoder.output_projection=16"])
    assert config.model.decoder.output_projection == 16
    message = error_of(minimal, ["model.tie_embeddings=true", "model.decoder.output_projection=8"])
    expected = "model.tie_embeddings: needs model.embedding_dim == model.decoder.output_projection (16 != 8)"
    assert message == f"{minimal}: {expected}"


# --- --set overrides ---------------------------------------------------------------------------


def test_overrides_take_effect_with_types(minimal):
    config = load_config(
        minimal,
        [
            "train.steps=7",
            "model.encoder.cell=gru",
            "train.learning_rate=0.01",
            "train.batch_tokens=500",
            "model.encoder.bidirectional=false",
            "run_dir=runs/other",
            "decode.beam_size=2",  # a section the YAML does not have
        ],
    )
    assert config.train.steps == 7 and type(config.train.steps) is int
    assert config.model.encoder.cell == "gru"
    assert config.model.decoder.cell == "lstm"
    assert config.train.learning_rate == pytest.approx(0.01) and type(config.train.learning_rate) is float
    assert config.train.batch_tokens == 500
    assert config.model.encoder.bidirectional is False
    assert config.run_dir == "runs/other"
    assert config.decode.beam_size == 2
    assert config.train.batch_size == 4  # untouched keys of an overridden section survive


def test_override_to_null_and_empty(minimal):
    config = load_config(minimal, ["train.batch_tokens=500", "train.batch_tokens=null"])
    assert config.train.batch_tokens is None  # the last assignment wins
    config = load_config(minimal, ["data.dev="])
    assert config.data.dev is None


def test_override_with_spaces_around_key(minimal):
    assert load_config(minimal, [" train.steps =3"]).train.steps == 3


def test_override_of_non_section(minimal):
    with pytest.raises(NmtError) as info:
        load_config(minimal, ["train.steps.x=1"])
    assert str(info.value) == "--set train.steps.x: 'steps' is not a section"


def test_override_without_equals(minimal):
    with pytest.raises(NmtError) as info:
        load_config(minimal, ["train.steps"])
    assert str(info.value) == "--set 'train.steps': expected KEY=VALUE, for example train.steps=200"


def test_override_unknown_key_is_validated(minimal):
    message = error_of(minimal, ["train.stpes=3"])
    assert "stpes" in message and "did you mean" in message


def test_override_bad_type_is_validated(minimal):
    message = error_of(minimal, ["train.steps=ten"])
    assert message.startswith(f"{minimal}: ")
    assert message.endswith("steps: expected an integer, got 'ten'")


def test_override_does_not_modify_file(minimal):
    before = minimal.read_text(encoding="utf-8")
    load_config(minimal, ["train.steps=7"])
    assert minimal.read_text(encoding="utf-8") == before
    assert load_config(minimal).train.steps == 10


# --- save / reload -----------------------------------------------------------------------------


def test_save_and_config_from_dict_round_trip(minimal, tmp_path):
    config = load_config(minimal, ["train.batch_tokens=300", "model.decoder.attention=bahdanau"])
    out = tmp_path / "run" / "config.yaml"
    save_config(config, out)
    tree = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert tree["train"]["batch_tokens"] == 300
    assert config_from_dict(tree) == config


def test_config_from_dict_does_not_need_data_files(tmp_path):
    tree = Config().to_dict()
    tree["data"]["train"]["path"] = str(tmp_path / "gone.tsv")
    config = config_from_dict(tree)
    assert config.data.train.path == str(tmp_path / "gone.tsv")


def test_config_from_dict_still_validates():
    tree = Config().to_dict()
    tree["train"]["steps"] = 0
    with pytest.raises(NmtError, match=r"^train\.steps: must be positive, got 0$"):
        config_from_dict(tree)


def test_dot_attention_needs_matching_sizes():
    message = error_of(CONFIG_DIR / "en-ja-tiny.yaml", ["model.decoder.attention_score=dot"])
    assert "model.decoder.attention_score" in message and "'general'" in message
    config = load_config(CONFIG_DIR / "en-ja-tiny.yaml",
                         ["model.decoder.attention_score=dot", "model.decoder.units=64"])
    assert config.model.decoder.units == 64


def test_unknown_bleu_tokenizer_is_caught_before_training():
    message = error_of(CONFIG_DIR / "en-ja-tiny.yaml", ["data.bleu_tokenize=ja_mecab"])
    assert "data.bleu_tokenize" in message and "did you mean 'ja-mecab'" in message


@pytest.mark.parametrize("override,key", [
    ("train.keep_checkpoints=0", "train.keep_checkpoints"),
    ("train.shuffle_buffer=0", "train.shuffle_buffer"),
    ("train.early_stopping=0", "train.early_stopping"),
    ("decode.max_source_length=0", "decode.max_source_length"),
    ("decode.max_length_offset=-1", "decode.max_length_offset"),
    ("data.train.source_column=-1", "data.train.source_column"),
    ("data.train.limit=0", "data.train.limit"),
])
def test_out_of_range_integers_name_the_key(override, key):
    assert key in error_of(CONFIG_DIR / "en-ja-tiny.yaml", [override])


def test_set_with_invalid_yaml_value():
    assert "not valid YAML" in error_of(CONFIG_DIR / "en-ja-tiny.yaml", ["train.steps=[1"])


# --- the rules kept with the fields --------------------------------------------------------------


def _leaf_fields(cls=Config, prefix=""):
    """(dotted key, dataclasses.Field, type) of every leaf of a config, data.dev read as data.train's."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key, tp = f"{prefix}{field.name}", hints[field.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        section = tp if dataclasses.is_dataclass(tp) else args[0] if len(args) == 1 else None
        if dataclasses.is_dataclass(section):
            if key != "data.dev":
                yield from _leaf_fields(section, f"{key}.")
        else:
            yield key, field, args[0] if args else tp


FLOAT_KEYS = [key for key, _, tp in _leaf_fields() if tp is float]
# Fields with a range rule (one_of and parsed_by fields are checked by their functions).
BOUNDED = [(key, field.metadata, tp) for key, field, tp in _leaf_fields()
           if set(field.metadata) - {"why", "one_of", "parsed_by"}]


def test_every_float_key_is_found():
    assert {"train.learning_rate", "model.encoder.dropout", "decode.length_penalty"} <= set(FLOAT_KEYS)


def test_every_count_size_and_rate_has_its_range():
    positive = """tokenizer.vocab_size model.embedding_dim model.encoder.units model.encoder.layers
        model.decoder.units model.decoder.layers model.decoder.output_projection train.steps train.batch_size
        train.batch_tokens train.bucket_width
        train.shuffle_buffer train.learning_rate train.clip_norm train.eval_every train.eval_max_sentences
        train.checkpoint_every train.keep_checkpoints train.average_last train.early_stopping train.bptt_steps
        train.sampled_softmax
        decode.beam_size
        decode.max_length_ratio decode.batch_size decode.max_source_length data.max_source_length
        data.max_target_length data.train.limit""".split()
    not_negative = """data.train.source_column data.train.target_column train.warmup_steps decode.length_penalty
        decode.max_length_offset""".split()
    fractions = """model.encoder.dropout model.encoder.embedding_dropout model.decoder.dropout
        model.decoder.embedding_dropout train.label_smoothing""".split()
    rules = {key: rules for key, rules, _ in BOUNDED}
    assert set(rules) == {*positive, *not_negative, *fractions, "tokenizer.input_sentence_size"}
    assert all(rules[key]["above"] == 0 for key in positive)
    assert all(rules[key]["at_least"] == 0 for key in not_negative)
    assert all(rules[key]["within"] == (0, 1) for key in fractions)
    assert dict(rules["tokenizer.input_sentence_size"]) == {
        "above": 100, "why": "SentencePiece samples more than 100 sentences"}


def test_a_bounded_keys_messages_written_out():
    """The validator's own words for a few keys, spelled out here (the parametrized tests below
    build theirs from the rules, which the test above pins)."""
    tiny = CONFIG_DIR / "en-ja-tiny.yaml"
    assert error_of(tiny, ["train.steps=0"]).endswith("train.steps: must be positive, got 0")
    assert error_of(tiny, ["train.warmup_steps=-1"]).endswith("train.warmup_steps: must not be negative, got -1")
    assert error_of(tiny, ["model.encoder.dropout=1.0"]).endswith("model.encoder.dropout: must be in [0, 1), got 1.0")
    assert error_of(tiny, ["tokenizer.input_sentence_size=100"]).endswith(
        "tokenizer.input_sentence_size: must be more than 100 (SentencePiece samples more than 100 sentences), got 100")


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [".nan", "nan", ".inf", "-inf"])
def test_every_float_key_refuses_nan_and_infinity(key, value):
    message = error_of(CONFIG_DIR / "en-ja-tiny.yaml", [f"{key}={value}"])
    assert message.endswith(f"{key}: must be a finite number, got {float(value.lstrip('.'))!r}")


def _just_outside(rules, tp):
    """A value that breaks the first rule of a field, and the complaint about it."""
    why = f" ({rules['why']})" if "why" in rules else ""
    if "above" in rules:
        bound = rules["above"]
        return tp(bound), "must be positive" if bound == 0 else f"must be more than {bound}{why}"
    if "at_least" in rules:
        bound = rules["at_least"]
        value = tp(bound - (1 if tp is int else 0.5))
        return value, "must not be negative" if bound == 0 else f"must be at least {bound}{why}"
    low, high = rules["within"]
    return tp(high), f"must be in [{low}, {high})"


def _lowest_accepted(rules, tp):
    lows = [rules.get("at_least"), rules.get("within", (None,))[0]]
    if "above" in rules:
        lows.append(rules["above"] + (1 if tp is int else 0.5))
    return tp(max(low for low in lows if low is not None))


@pytest.mark.parametrize(("key", "rules", "tp"), BOUNDED, ids=[key for key, _, _ in BOUNDED])
def test_every_bounded_key_refuses_the_value_past_its_bound(key, rules, tp):
    value, complaint = _just_outside(rules, tp)
    message = error_of(CONFIG_DIR / "en-ja-tiny.yaml", [f"{key}={value}"])
    assert message.endswith(f"{key}: {complaint}, got {value}")


BOUNDED_FOR_TRANSLATION = [bounded for bounded in BOUNDED if bounded[0] != "train.bptt_steps"]  # lm only


@pytest.mark.parametrize(("key", "rules", "tp"), BOUNDED_FOR_TRANSLATION, ids=[b[0] for b in BOUNDED_FOR_TRANSLATION])
def test_every_bounded_key_accepts_its_bound(key, rules, tp):
    value = _lowest_accepted(rules, tp)
    section = load_config(CONFIG_DIR / "en-ja-tiny.yaml", [f"{key}={value}"])
    for part in key.split("."):
        section = getattr(section, part)
    assert section == value


def test_vocab_size_below_the_reserved_ids():
    message = error_of(CONFIG_DIR / "en-ja-tiny.yaml", ["tokenizer.vocab_size=5"])
    assert message.endswith(f"tokenizer.vocab_size: must be at least {MIN_VOCAB_SIZE} (4 ids are reserved), got 5")


def test_input_sentence_size_needs_more_than_100():
    message = error_of(CONFIG_DIR / "en-ja-tiny.yaml", ["tokenizer.input_sentence_size=100"])
    assert message.endswith("tokenizer.input_sentence_size: must be more than 100 "
                            "(SentencePiece samples more than 100 sentences), got 100")


def test_null_optional_values_are_not_range_checked():
    config = load_config(CONFIG_DIR / "en-ja-tiny.yaml",
                         ["train.batch_tokens=null", "model.encoder.embedding_dropout=null", "data.bleu_tokenize=null"])
    assert config.train.batch_tokens is None and config.data.bleu_tokenize is None


def test_bleu_tokenizer_choices_come_from_sacrebleu():
    assert load_config(CONFIG_DIR / "en-ja-tiny.yaml", ["data.bleu_tokenize=char"]).data.bleu_tokenize == "char"
    message = error_of(CONFIG_DIR / "en-ja-tiny.yaml", ["data.bleu_tokenize=zzz"])
    assert "data.bleu_tokenize: 'zzz' is not one of 'none', " in message and "'ja-mecab'" in message


def test_text_format_has_no_targets_for_translation(tmp_path):
    path = write(tmp_path / "exp.yaml", "data:\n  train: {format: text, path: exp.yaml}\n")
    message = error_of(path)
    assert message == f"{path}: data.train.format: 'text' has no targets; translation needs tsv, parallel or hf"


def test_input_feeding_needs_attention(minimal):
    message = error_of(minimal, ["model.decoder.attention=none", "model.decoder.input_feeding=true"])
    assert message == f"{minimal}: model.decoder.input_feeding: needs attention (model.decoder.attention is none)"


def test_field_rules_come_before_the_cross_field_rules(minimal):
    # train.bptt_steps=0 breaks its own range and, on a translation config, a cross-field rule.
    assert error_of(minimal, ["train.bptt_steps=0"]) == f"{minimal}: train.bptt_steps: must be positive, got 0"

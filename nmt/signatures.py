"""The contract between an export and the servers: signature and input names, limits, defaults,
and the record an export writes to say what each signature is for. No TensorFlow import, so the
CLI and the server check arguments with these before TensorFlow loads.

The export writes a :class:`ServingRecord` to ``assets.extra/nmt.json`` (TF Serving ignores that
folder); ``nmt serve`` reads it to choose a signature for a request (which one searches with beam
N, which one returns attention) instead of guessing from signature names.

Example:
>>> record = ServingRecord.for_translation(beam_size=5, max_source_tokens=200)
>>> record.translation_signature(beam_size=1)
'translate_greedy'
>>> ServingRecord.from_json(record.to_json()) == record
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any

# --- signature names -----------------------------------------------------------------------------

SERVING_DEFAULT = "serving_default"
TRANSLATE = "translate"  # beam search with the run's decode.beam_size (also serving_default)
TRANSLATE_GREEDY = "translate_greedy"
TRANSLATE_IDS = "translate_ids"
TRANSLATE_ATTENTION = "translate_attention"
INSPECT = "inspect"
SCORE = "score"  # translation: log P(target | source) of given pairs (forced decoding)
TRANSLATE_CONSTRAINED = "translate_constrained"  # beam search with terminology (nmt.constraints)
NEXT_WORDS = "next_words"
NEXT_WORDS_IDS = "next_words_ids"
GENERATE = "generate"
SUGGEST = "suggest"  # language model: completions of the word being typed, else the next words
GRADIENTS = "gradients"  # language model: how strongly the next-piece guess depends on each piece read

# --- input names ---------------------------------------------------------------------------------

TEXT = "text"
TARGET = "target"  # score: the translation of each text
CONSTRAINTS = "constraints"  # translate_constrained: [batch, n] phrases each translation must contain ("" = none)
AVOID = "avoid"  # translate_constrained: [batch, n] phrases it must not contain ("" = none)
IDS = "ids"
LENGTHS = "lengths"
K = "k"
MAX_TOKENS = "max_tokens"
TEMPERATURE = "temperature"
TOP_K = "top_k"
TOP_P = "top_p"
SEED = "seed"
GENERATE_INPUTS = (TEXT, MAX_TOKENS, TEMPERATURE, TOP_K, TOP_P, SEED)

# --- limits and defaults (one place for each) ----------------------------------------------------

MAX_GENERATED_TOKENS = 2000  # generate writes at most this many tokens, whatever is asked
MAX_EXPORTED_K = 20  # the most next words an exported next_words signature returns per row
MAX_K = 100  # the most next words one in-process query may ask for (fewer for a tiny vocabulary)
DEFAULT_K = 5  # next words when k is not given (serving_default of a language model, CLI, API)
SUGGEST_K = 3  # suggest's words when k is not given: a keyboard's suggestion strip
INSPECT_K = 5  # likeliest next pieces shown per token by inspect
DEFAULT_MAX_TOKENS = 100  # generate's default length
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 0  # off
DEFAULT_TOP_P = 1.0  # off

RECORD_FILE = "assets.extra/nmt.json"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"  # TF Serving replays it on load
MAX_VERSION = 2**63 - 1  # TF Serving reads a version folder's name as an int64

TRANSLATION = "translation"
LANGUAGE_MODEL = "lm"
TASK_DESCRIPTIONS = {TRANSLATION: "translation model", LANGUAGE_MODEL: "language model"}
# What `nmt export --format` can write for each task: a SavedModel always; the phone file only holds the
# next-word search, which only a language model has.
SAVEDMODEL, TFLITE = "savedmodel", "tflite"
EXPORT_FORMATS = {TRANSLATION: (SAVEDMODEL,), LANGUAGE_MODEL: (SAVEDMODEL, TFLITE)}


def check_export_format(task: str, export_format: str, run: str) -> None:
    """ValueError unless ``run`` (a run of ``task``) can be exported as ``export_format``."""
    formats = EXPORT_FORMATS.get(task, (SAVEDMODEL,))
    if export_format not in formats:
        raise ValueError(f"--format {export_format} is not an export of {run}, a "
                         f"{TASK_DESCRIPTIONS.get(task, task)}: it exports as {' or '.join(formats)}")


def check_k(k: Any, max_k: int, name: str = "k") -> int:
    """The number of next words asked for: an integer in [1, max_k]."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= max_k:
        raise ValueError(f"{name} must be an integer between 1 and {max_k}, got {k!r}")
    return k


def check_generation(max_tokens: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any = 0,
                     vocab_size: int | None = None) -> None:
    """Generation settings, one rule for the API, the CLI and the server (ValueError naming the
    setting). ``vocab_size`` bounds ``top_k`` where it is known."""
    whole = isinstance(max_tokens, numbers.Integral) and not isinstance(max_tokens, bool)
    if not whole or not 1 <= max_tokens <= MAX_GENERATED_TOKENS:
        raise ValueError(f"max_tokens must be an integer between 1 and {MAX_GENERATED_TOKENS}, got {max_tokens!r}")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    upper = vocab_size if vocab_size is not None else 2**31 - 1
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or not 0 <= top_k <= upper:
        where = f"the vocabulary size {vocab_size}" if vocab_size is not None else str(upper)
        raise ValueError(f"top_k must be an integer between 0 (off) and {where}, got {top_k!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be an integer between 0 and 2**31 - 1, got {seed!r}")


def _in_row(row: int, check: Any, *values: Any) -> None:
    try:
        check(*values)
    except ValueError as error:
        raise ValueError(f"row {row}: {error}") from None


@dataclasses.dataclass(frozen=True)
class SignatureRole:
    """What one exported signature does: its search (``beam_size``; 1 is greedy) and whether it
    returns attention weights. Signatures that do not search leave ``beam_size`` None."""

    beam_size: int | None = None
    attention: bool = False


@dataclasses.dataclass(frozen=True)
class ServingRecord:
    """What a server needs to know about an export beyond its signatures."""

    task: str  # TRANSLATION or LANGUAGE_MODEL
    signatures: dict[str, SignatureRole]
    max_source_tokens: int = 0  # translation: longer inputs are cut to this
    max_prompt_tokens: int = 0  # language model: the longest prompt
    max_k: int = 0  # language model: the most next words next_words returns
    running_text: bool = False  # language model trained on running text (EOS is a line break)

    @classmethod
    def for_translation(cls, beam_size: int, max_source_tokens: int, inspect: bool = True) -> ServingRecord:
        """``inspect`` False: no encoder-states signature (an ensemble has no single encoder)."""
        roles = {
            TRANSLATE: SignatureRole(beam_size),
            TRANSLATE_GREEDY: SignatureRole(1),
            TRANSLATE_IDS: SignatureRole(beam_size),
            TRANSLATE_ATTENTION: SignatureRole(beam_size, attention=True),
            INSPECT: SignatureRole(),
            SCORE: SignatureRole(),
            TRANSLATE_CONSTRAINED: SignatureRole(beam_size),
        }
        if not inspect:
            del roles[INSPECT]
        return cls(TRANSLATION, roles, max_source_tokens=max_source_tokens)

    @classmethod
    def for_language_model(cls, max_k: int, max_prompt_tokens: int, running_text: bool) -> ServingRecord:
        roles = {name: SignatureRole()
                 for name in (SERVING_DEFAULT, NEXT_WORDS, NEXT_WORDS_IDS, SUGGEST, GENERATE, INSPECT, GRADIENTS)}
        return cls(LANGUAGE_MODEL, roles, max_prompt_tokens=max_prompt_tokens, max_k=max_k, running_text=running_text)

    @property
    def description(self) -> str:
        return TASK_DESCRIPTIONS.get(self.task, self.task)

    @property
    def beam_size(self) -> int | None:
        """The beam of the text-to-text translation signature that searches with a beam."""
        return self.signatures[TRANSLATE].beam_size if TRANSLATE in self.signatures else None

    def translation_signature(self, beam_size: int | None = None, attention: bool = False) -> str:
        """The text-in signature that searches with ``beam_size`` (default: the export's beam) and
        returns attention if asked; ValueError naming what exists otherwise."""
        beam_size = beam_size if beam_size is not None else self.beam_size
        text_in = (TRANSLATE, TRANSLATE_GREEDY, TRANSLATE_ATTENTION)
        for name in text_in:
            role = self.signatures.get(name)
            if role is not None and role.beam_size == beam_size and role.attention == attention:
                return name
        offered = sorted({self.signatures[n].beam_size for n in text_in if n in self.signatures
                          and self.signatures[n].attention == attention} - {None})
        what = "attention maps are" if attention else "translation is"
        raise ValueError(f"{what} exported for beam {' or '.join(map(str, offered)) or 'none'}, not {beam_size}; "
                         "export the run again with another decode.beam_size for it")

    def check_request(self, inputs: dict[str, Any]) -> None:
        """The settings of one request's rows, by the rules the API and the CLI apply (ValueError
        naming the row and the setting), whichever API the request came through."""
        if K in inputs:
            for row, k in enumerate(inputs[K].reshape(-1).tolist()):
                _in_row(row, check_k, k, self.max_k)
        if MAX_TOKENS in inputs:
            settings = zip(*(inputs[name].reshape(-1).tolist() for name in GENERATE_INPUTS[1:]))
            for row, values in enumerate(settings):
                _in_row(row, check_generation, *values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServingRecord:
        data = json.loads(text)
        if "signatures" not in data:
            return cls._from_first_format(data)
        roles = {name: SignatureRole(**role) for name, role in data.pop("signatures").items()}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(signatures=roles, **{k: v for k, v in data.items() if k in known})

    @classmethod
    def _from_first_format(cls, data: dict[str, Any]) -> ServingRecord:
        """Exports written before the record listed signatures: {"task", "beam_size", ...} (and long
        before the gradients signature)."""
        if data.get("task") == LANGUAGE_MODEL:
            max_k, max_prompt = int(data.get("max_k", MAX_EXPORTED_K)), int(data.get("max_prompt_tokens", 0))
            record = cls.for_language_model(max_k, max_prompt, bool(data.get("running_text", False)))
            roles = {name: role for name, role in record.signatures.items() if name != GRADIENTS}
            return dataclasses.replace(record, signatures=roles)
        return cls.for_translation(int(data.get("beam_size", 1)), int(data.get("max_source_tokens", 0)))


def check_export_target(out_dir: Any, version: int | None) -> None:
    """Where a SavedModel export may go (ValueError otherwise): ``out_dir`` a folder (or not yet
    there), for its numbered version folders, and a version TF Serving can serve: 1 to int64's largest."""
    import pathlib

    if pathlib.Path(out_dir).exists() and not pathlib.Path(out_dir).is_dir():
        raise ValueError(f"--out {out_dir} is a file: it must be the model's folder, where each version is a "
                         "numbered subfolder (e.g. --out serve/models/en-ja)")
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise ValueError(f"--version must be between 1 and {MAX_VERSION} (TF Serving's versions are int64), "
                         f"got {version}")

"""The task endpoints over exported nmt models: ``/v1/translate`` (with attention maps),
``/v1/score`` (given translations' log-probabilities), ``/v1/next-word``, ``/v1/suggest`` (a
keyboard's: the word being typed completed, else the next words), ``/v1/generate`` and
``/v1/inspect`` (hidden states).

Each request model carries the export contract's checks (:mod:`nmt.signatures`', so a bad setting
gets the same message as from the CLI or the Python API). Every endpoint runs through
:func:`run_task`: the body read and validated, the model found, then the call core's limits,
deadline and metrics (:mod:`nmt.serving.calls`), as TF Serving's own calls are."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from nmt import signatures
from nmt.constraints import AVOID, CONSTRAINTS, Terminology
from nmt.inspection import HiddenStates  # norms and changes, computed as `nmt inspect` does
from nmt.serving.calls import calls_of, check_request_size
from nmt.serving.errors import RequestError
from nmt.serving.http_guard import read_json_body
from nmt.serving.registry import Servable
from nmt.serving.rest_codec import FLOAT32_MAX, INT32_MAX, to_json

router = APIRouter(tags=["Tasks"])


# --- request models ----------------------------------------------------------------------------


class TaskRequest(BaseModel):
    """What every task endpoint takes: one text or a list of them, and optionally a model name."""

    text: str | list[str] = Field(description="a text or a list of texts")
    model: str | None = Field(None, description="model name (default: the first model of the task)")

    @field_validator("text")
    @classmethod
    def _not_empty(cls, text: str | list[str]) -> str | list[str]:
        if not text and isinstance(text, list):
            raise ValueError("\"text\" is empty: nothing to do")
        return text

    @property
    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else self.text

    def strings(self) -> dict[str, list[str]]:
        """Every text of the request by its input's name: the server's size limits apply to each."""
        return {signatures.TEXT: self.texts}


class TranslateRequest(TaskRequest):
    text: str | list[str] = Field(description="a sentence or a list of sentences")
    beam: int | None = Field(None, description="beam size: 1 (greedy) or the model's (default)")
    attention: bool = Field(False, description="also return each translation's attention map (source and "
                            "output pieces, weights [output][source]); with the model's beam only")
    constraints: list[str] | list[list[str]] | None = Field(
        None, description="terminology: phrases the translation must contain (a list for one text, a list per text "
        "for a list of texts); decoded by the model's constrained beam search")
    avoid: list[str] | list[list[str]] | None = Field(
        None, description="terminology: phrases the translation must not contain (shaped as constraints)")
    model: str | None = Field(None, description="model name (default: the first translation model)")

    @model_validator(mode="after")
    def _terminology(self) -> TranslateRequest:
        if self.constraints is None and self.avoid is None:
            return self
        if self.attention:
            raise ValueError("\"attention\" is not available with \"constraints\"/\"avoid\"")
        if self.beam is not None:
            raise ValueError("\"beam\" is the model's with \"constraints\"/\"avoid\" (leave it out)")
        rows = {name: self._rows(name, getattr(self, name)) for name in (CONSTRAINTS, AVOID)}
        for row, (constraints, avoid) in enumerate(zip(rows[CONSTRAINTS], rows[AVOID])):
            try:
                Terminology.of(constraints, avoid)
            except ValueError as error:
                raise ValueError(f"text {row}: {error}") from None
        self.constraints, self.avoid = rows[CONSTRAINTS], rows[AVOID]
        return self

    def _rows(self, name: str, value: list | None) -> list[list[str]]:
        """One list of phrases per text."""
        if value is None:
            return [[] for _ in self.texts]
        if isinstance(self.text, str):
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"\"{name}\" must be a list of phrases for one text")
            return [value]
        if len(value) != len(self.texts) or not all(isinstance(v, list) for v in value):
            raise ValueError(f"\"{name}\" must hold one list of phrases per text: {len(self.texts)} text(s)")
        return value

    @property
    def constrained(self) -> bool:
        return self.constraints is not None

    def strings(self) -> dict[str, list[str]]:
        strings = super().strings()
        if self.constrained:
            strings.update({name: [p for row in getattr(self, name) for p in row] or [""]
                            for name in (CONSTRAINTS, AVOID)})
        return strings


class ScoreRequest(TaskRequest):
    text: str | list[str] = Field(description="a source sentence or a list of them")
    target: str | list[str] = Field(description="its translation, or one per source sentence: scored as given")
    model: str | None = Field(None, description="model name (default: the first translation model)")

    @model_validator(mode="after")
    def _pairs(self) -> ScoreRequest:
        if isinstance(self.text, str) != isinstance(self.target, str) or len(self.targets) != len(self.texts):
            raise ValueError(f"\"target\" must hold one translation per text: {len(self.texts)} text(s), "
                             f"{len(self.targets)} target(s)")
        return self

    @property
    def targets(self) -> list[str]:
        return [self.target] if isinstance(self.target, str) else self.target

    def strings(self) -> dict[str, list[str]]:
        return {signatures.TEXT: self.texts, signatures.TARGET: self.targets}


class InspectRequest(TaskRequest):
    model: str | None = Field(None, description="model name (default: the first language model, else the first "
                              "translation model)")
    gradients: bool = Field(False, description="language model: also return how strongly its likeliest next piece "
                            "depends on each piece read (the gradient norm of its log-probability with respect to "
                            "each piece's embedding)")


class NextWordRequest(TaskRequest):
    text: str | list[str] = Field(description="the text so far, or a list of texts")
    k: int = Field(signatures.DEFAULT_K, description="how many next words (1 to the export's limit, "
                   f"{signatures.MAX_EXPORTED_K} by default)")


class SuggestRequest(TaskRequest):
    text: str | list[str] = Field(description="the text typed so far (ending inside a word: its completions; after "
                                  "a space or punctuation: the next words), or a list of texts")
    k: int = Field(signatures.SUGGEST_K, description="how many words (1 to the export's limit, "
                   f"{signatures.MAX_EXPORTED_K} by default)")


class GenerateRequest(TaskRequest):
    text: str | list[str] = Field("", description="prompt(s) to continue")
    max_tokens: int = Field(signatures.DEFAULT_MAX_TOKENS,
                            description=f"tokens to write, 1 to {signatures.MAX_GENERATED_TOKENS}")
    temperature: float = Field(signatures.DEFAULT_TEMPERATURE, description="sampling temperature (0: greedy)")
    top_k: int = Field(signatures.DEFAULT_TOP_K, description="sample among the k likeliest tokens (0: off)")
    top_p: float = Field(signatures.DEFAULT_TOP_P, description="sample among the likeliest tokens of this "
                         "total probability (1: off)")
    seed: int = Field(0, description=f"0 to {INT32_MAX}: the same seed writes the same text")

    @model_validator(mode="after")
    def _settings(self) -> GenerateRequest:
        signatures.check_generation(self.max_tokens, self.temperature, self.top_k, self.top_p)
        # What check_generation leaves to the wire: the graph takes float32 and int32.
        if self.temperature > FLOAT32_MAX:
            raise ValueError(f"temperature must be a finite number >= 0 (float32), got {self.temperature}")
        if not 0 <= self.seed <= INT32_MAX:
            raise ValueError(f"seed must be between 0 and {INT32_MAX}, got {self.seed}")
        return self


R = TypeVar("R", bound=TaskRequest)


def validated(model: type[R], body: Any) -> R:
    """The JSON body as ``model``, or a RequestError (400): the message of a check as it is, and
    the wrong types and missing fields listed."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        checks = [str(e["ctx"]["error"]) for e in exc.errors() if e["type"] == "value_error"]
        types = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                 for e in exc.errors() if e["type"] != "value_error"]
        raise RequestError("; ".join([*checks, *([f"invalid request: {'; '.join(types)}"] if types else [])])) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI description of a JSON request body (the endpoints read the body themselves)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


@contextlib.contextmanager
def bad_request() -> Iterator[None]:
    """A ValueError of the export contract's checks is the client's mistake: 400 with its message."""
    try:
        yield
    except ValueError as error:
        raise RequestError(str(error)) from None


# --- the preamble, and the call core around each endpoint's work --------------------------------


@dataclasses.dataclass
class TaskCall(Generic[R]):
    request: R
    servable: Servable
    texts: np.ndarray  # the request's texts as the graph's string input


async def run_task(http: Request, api: str, model: type[R], task: str | None,
                   work: Callable[[TaskCall[R]], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """A task endpoint's request through the call core: the body read (the JSON whatever its
    Content-Type, as for TF Serving's clients) and validated into ``model``, the model found (the
    named one, which must do ``task``, or the first that does; ``task`` None: the first language
    model, else any), the server's limits, its deadline and its metrics (API ``api``, entry
    point REST), as for TF Serving's own calls."""
    calls = calls_of(http)
    async with calls.counted(api, "REST") as tally:
        limits = calls.limits
        request = validated(model, await read_json_body(http, limits.max_body_bytes, limits.body_timeout_s))
        tally.model = request.model or ""
        registry = calls.registry
        servable = registry.named_or_default(request.model) if task is None else registry.of_task(task, request.model)
        tally.model = servable.name
        check_request_size({name: np.array(texts, dtype=object) for name, texts in request.strings().items()},
                           limits)  # in characters
        texts = np.array([t.encode("utf-8") for t in request.texts], dtype=object)
        return await calls.within_deadline(work(TaskCall(request, servable, texts)))


# --- endpoints ---------------------------------------------------------------------------------


@router.post("/v1/translate", openapi_extra=json_body(TranslateRequest))
async def translate(http: Request) -> dict[str, Any]:
    """Translations by beam search (the export's beam) or greedy search (beam 1), with attention
    maps if asked."""
    return await run_task(http, "translate", TranslateRequest, signatures.TRANSLATION, translate_work)


async def translate_work(call: TaskCall[TranslateRequest]) -> dict[str, Any]:
    request, servable = call.request, call.servable
    record = servable.record  # a translation model's: of_task found its task there
    if request.constrained:
        return await constrained_work(call)
    beam = request.beam if request.beam is not None else record.beam_size
    with bad_request():
        signature = record.translation_signature(beam, request.attention)
    servable.check_signature(signature)  # an export from before this signature: a clear 400
    out = await servable.predict(signature, {signatures.TEXT: call.texts})
    answer = {"model": servable.name, "version": servable.version, "beam": beam,
              "translations": to_json(out["translations"]), "scores": out["scores"].tolist()}
    if request.attention:
        answer["attention"] = attention_maps(out)
    return answer


async def constrained_work(call: TaskCall[TranslateRequest]) -> dict[str, Any]:
    request, servable = call.request, call.servable
    servable.check_signature(signatures.TRANSLATE_CONSTRAINED)  # an export from before terminology: a clear 400
    inputs = {signatures.TEXT: call.texts}
    for name in (CONSTRAINTS, AVOID):  # [texts, phrases], "" where a text has fewer
        rows = getattr(request, name)
        width = max([len(row) for row in rows] + [1])
        inputs[name] = np.array([[p.encode("utf-8") for p in row] + [b""] * (width - len(row)) for row in rows],
                                dtype=object)
    out = await servable.predict(signatures.TRANSLATE_CONSTRAINED, inputs)
    return {"model": servable.name, "version": servable.version,
            "beam": servable.record.signatures[signatures.TRANSLATE_CONSTRAINED].beam_size,
            "translations": to_json(out["translations"]), "scores": out["scores"].tolist()}


def attention_maps(out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per row: its source and output pieces and the weights [output][source], padding cut off."""
    return [
        {"source_tokens": to_json(source[:n_source]), "target_tokens": to_json(target[:n_target]),
         "weights": np.round(weights[:n_target, :n_source], 4).tolist()}
        for source, n_source, target, n_target, weights in zip(
            out["source_tokens"], out["source_lengths"], out["target_tokens"], out["target_lengths"], out["attention"])
    ]


@router.post("/v1/score", openapi_extra=json_body(ScoreRequest))
async def score(http: Request) -> dict[str, Any]:
    """Each target's log-probability given its text (forced decoding, no search): the sum over its
    pieces and the end of sentence, the same divided by the search's length penalty, and each
    piece's log-probability."""
    return await run_task(http, "score", ScoreRequest, signatures.TRANSLATION, score_work)


async def score_work(call: TaskCall[ScoreRequest]) -> dict[str, Any]:
    servable = call.servable
    servable.check_signature(signatures.SCORE)  # an export from before `score`: a clear 400
    targets = np.array([t.encode("utf-8") for t in call.request.targets], dtype=object)
    out = await servable.predict(signatures.SCORE, {signatures.TEXT: call.texts, signatures.TARGET: targets})
    return {"model": servable.name, "version": servable.version, "results": [
        {"log_probability": float(total), "normalized": float(normalized), "tokens": to_json(tokens[:n]),
         "token_scores": pieces[:n].astype(np.float64).tolist()}
        for total, normalized, tokens, pieces, n in zip(out["scores"], out["normalized_scores"], out["target_tokens"],
                                                        out["piece_scores"], out["target_lengths"])]}


@router.post("/v1/inspect", openapi_extra=json_body(InspectRequest))
async def inspect(http: Request) -> dict[str, Any]:
    """Per text, the pieces read and the hidden state after each: its units, L2 norm and
    change from the previous piece; a language model adds its likeliest next pieces, and with
    ``"gradients": true`` how strongly its likeliest next piece depends on each piece read."""
    return await run_task(http, "inspect", InspectRequest, None, inspect_work)


async def inspect_work(call: TaskCall[InspectRequest]) -> dict[str, Any]:
    servable = call.servable
    servable.check_signature(signatures.INSPECT)  # an export from before `inspect`: a clear 400
    if call.request.gradients:
        check_gradients(servable)
    asked = [servable.predict(signatures.INSPECT, {signatures.TEXT: call.texts})]
    if call.request.gradients:
        asked.append(servable.predict(signatures.GRADIENTS, {signatures.TEXT: call.texts}))
    out, *gradients = await asyncio.gather(*asked)
    results = hidden_states(out)
    for result, row in zip(results, gradient_rows(gradients[0]) if gradients else []):
        result["gradients"] = row
    return {"model": servable.name, "version": servable.version, "task": servable.task,
            "units": int(out["states"].shape[-1]), "results": results}


def check_gradients(servable: Servable) -> None:
    """A 400 unless the servable is a language model exported with the gradients signature."""
    if servable.task != signatures.LANGUAGE_MODEL:
        raise RequestError(f"\"gradients\" is for language models; model {servable.name} is a "
                           f"{servable.record.description if servable.record else 'model nmt did not export'} "
                           "(`nmt inspect --gradients` shows a translation run's)")
    if signatures.GRADIENTS not in servable.record.signatures or signatures.GRADIENTS not in servable.signatures:
        raise RequestError(f"model {servable.name} version {servable.version} has no gradients signature (it was "
                           "exported before gradients existed); export the run again with `nmt export`")


def gradient_rows(out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """gradients' outputs -> per row the predicted piece, its log-probability, and per piece read
    its gradient norm and distance back from the predicted position (the last piece: 0)."""
    return [
        {"next_token": token, "log_probability": float(out["log_probability"][row]),
         "norms": out["norms"][row, :n].astype(np.float64).tolist(), "distances": list(range(int(n) - 1, -1, -1))}
        for row, (n, token) in enumerate(zip(out[signatures.LENGTHS], to_json(out["next_token"])))
    ]


def hidden_states(out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """inspect's outputs -> per row its pieces, states, norms, changes (and next-piece predictions)."""
    results = []
    for row, n in enumerate(out[signatures.LENGTHS]):
        states = HiddenStates(to_json(out["tokens"][row, :n]), out["states"][row, :n].astype(np.float64), [])
        result = {"tokens": states.tokens, "states": np.round(states.states, 4).tolist(),
                  "norms": np.round(states.norms, 4).tolist(), "changes": np.round(states.changes, 4).tolist()}
        if "top_tokens" in out:
            result["predictions"] = [
                [{"token": t, "probability": round(float(p), 4)} for t, p in zip(tokens, probabilities)]
                for tokens, probabilities in zip(to_json(out["top_tokens"][row, :n]), out["top_probabilities"][row, :n])
            ]
        results.append(result)
    return results


@router.post("/v1/next-word", openapi_extra=json_body(NextWordRequest))
async def next_word(http: Request) -> dict[str, Any]:
    """The k likeliest next words after each text, with their probabilities."""
    return await run_task(http, "next-word", NextWordRequest, signatures.LANGUAGE_MODEL, next_word_work)


async def next_word_work(call: TaskCall[NextWordRequest]) -> dict[str, Any]:
    request, servable = call.request, call.servable
    with bad_request():
        k = signatures.check_k(request.k, servable.record.max_k)
    texts = call.texts
    out = await servable.predict(signatures.NEXT_WORDS,
                                 {signatures.TEXT: texts, signatures.K: np.full(len(texts), k, np.int32)})
    words = [
        [{"word": w, "probability": float(p)} for w, p in zip(row_w, row_p) if w][:k]
        for row_w, row_p in zip(to_json(out["words"]), out["probabilities"])
    ]
    return {"model": servable.name, "version": servable.version, "next_words": words}


@router.post("/v1/suggest", openapi_extra=json_body(SuggestRequest))
async def suggest(http: Request) -> dict[str, Any]:
    """What a keyboard shows: the k likeliest completions of the word being typed, or after a space
    the k likeliest next words; each answer says which (``completing``: the typed prefix, or "")."""
    return await run_task(http, "suggest", SuggestRequest, signatures.LANGUAGE_MODEL, suggest_work)


async def suggest_work(call: TaskCall[SuggestRequest]) -> dict[str, Any]:
    request, servable = call.request, call.servable
    with bad_request():
        k = signatures.check_k(request.k, servable.record.max_k)
    servable.check_signature(signatures.SUGGEST)  # an export from before suggest: a clear 400
    texts = call.texts
    out = await servable.predict(signatures.SUGGEST,
                                 {signatures.TEXT: texts, signatures.K: np.full(len(texts), k, np.int32)})
    suggestions = [
        {"completing": completing,
         "words": [{"word": w, "probability": float(p)} for w, p in zip(row_w, row_p) if w][:k]}
        for completing, row_w, row_p in zip(to_json(out["completing"]), to_json(out["words"]), out["probabilities"])
    ]
    return {"model": servable.name, "version": servable.version, "suggestions": suggestions}


@router.post("/v1/generate", openapi_extra=json_body(GenerateRequest))
async def generate(http: Request) -> dict[str, Any]:
    """Each prompt continued by sampling (each row with its own settings and seed)."""
    return await run_task(http, "generate", GenerateRequest, signatures.LANGUAGE_MODEL, generate_work)


async def generate_work(call: TaskCall[GenerateRequest]) -> dict[str, Any]:
    request, servable = call.request, call.servable
    texts = call.texts
    n = len(texts)
    inputs = {
        signatures.TEXT: texts, signatures.MAX_TOKENS: np.full(n, request.max_tokens, np.int32),
        signatures.TEMPERATURE: np.full(n, request.temperature, np.float32),
        signatures.TOP_K: np.full(n, request.top_k, np.int32), signatures.TOP_P: np.full(n, request.top_p, np.float32),
        signatures.SEED: np.full(n, request.seed, np.int32),
    }
    out = await servable.predict(signatures.GENERATE, inputs)
    return {"model": servable.name, "version": servable.version, "text": to_json(out[signatures.TEXT])}

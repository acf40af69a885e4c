"""The `local` backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

Same `GradeRequest` as Gemini, same prompts, same response schema — enforced here by a llama.cpp
grammar compiled from the JSON Schema, so the output is always syntactically valid JSON of the
right shape. The static part of the prompt (system + rubric prefix) is tokenized on its own, so
its tokens are identical for every student, and llama.cpp's KV cache keeps it evaluated between
calls: only the student's part is evaluated per student (the local analogue of context caching).

llama.cpp is synchronous and holds one sequence, so calls run one at a time on one worker thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from grader.backends._local_models import (
    DEFAULT_MODEL,
    INSTALL_HINT,
    check_gguf,
    packaged_model_path,
)
from grader.config.settings import Settings
from grader.errors import BackendError, ConfigError, SubmissionError
from grader.prompting.request import GradeRequest, GradeResponse, Part, Usage

# Output tokens kept free in the context for the answer (request.max_output_tokens may be larger:
# the Gemini default is sized for thinking models; a grading JSON needs far less).
MAX_OUTPUT_TOKENS = 2048
# Small models loop inside a string or an array until the token limit; these bounds (stricter than
# the rubric schema, so every output still validates) make every generation terminate.
MAX_STRING_CHARS = 300
MAX_QUOTE_CHARS = 150
MAX_ARRAY_ITEMS = 3
# llama.cpp grammars do not enforce minimum/maximum on numbers: a continuous score range becomes
# the enum of its half points (what the prompt allows) when that list is short enough.
MAX_SCORE_STEPS = 400
# Fallback when a GGUF has no chat template: ChatML, which most small instruct models use.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SENTINEL = re.compile("\ue000(\\d+)\ue001")
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
T = TypeVar("T")


def default_model_notice() -> str:
    """The one line the CLI prints when grading falls back to the packaged local model."""
    m = DEFAULT_MODEL
    return (
        f"Grading offline with the built-in local model {m.title} ({m.quant}, {m.licence}): "
        "a tiny model for trying the pipeline, not for real marks. For real grading set "
        "GEMINI_API_KEY or pass --backend gemini (or, on Google Cloud, set "
        "GOOGLE_GENAI_USE_ENTERPRISE=true and GOOGLE_CLOUD_PROJECT; or --model-path to a bigger "
        "GGUF)."
    )


def ordered_schema(schema: Any) -> Any:
    """The schema the grammar is built from. Gemini's `propertyOrdering` is applied to
    `properties` (llama.cpp emits keys in that order; the rubric wants justification before
    score) and dropped; strings and arrays are bounded and a 0..max score range becomes its half
    points. All of it is stricter than the rubric schema, so every output still validates."""
    if isinstance(schema, list):
        return [ordered_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: ordered_schema(v) for k, v in schema.items() if k != "propertyOrdering"}
    order = schema.get("propertyOrdering")
    props = out.get("properties")
    if isinstance(order, list) and isinstance(props, dict):
        keys = [k for k in order if k in props] + [k for k in props if k not in order]
        out["properties"] = {k: props[k] for k in keys}
    kind = out.get("type")
    if kind == "string" and "enum" not in out:
        out.setdefault("maxLength", MAX_STRING_CHARS)
    elif kind == "array":
        out.setdefault("maxItems", MAX_ARRAY_ITEMS)
        items = out.get("items")
        if isinstance(items, dict) and items.get("type") == "string":
            items["maxLength"] = min(items.get("maxLength", MAX_QUOTE_CHARS), MAX_QUOTE_CHARS)
    elif kind == "number" and "enum" not in out:
        low, high = out.get("minimum"), out.get("maximum")
        if isinstance(low, int | float) and isinstance(high, int | float) \
                and 0 <= (high - low) * 2 <= MAX_SCORE_STEPS:
            steps = int((high - low) * 2)
            points = [low + n / 2 for n in range(steps + 1)]
            if high not in points:
                points.append(high)
            out["enum"] = [int(p) if float(p).is_integer() else p for p in points]
    return out


def media_note(part: Part) -> str:
    kind = "PDF" if part.mime_type == "application/pdf" else "image"
    return f"[{kind} omitted ({part.mime_type}): the local model cannot read {kind}s]"


def student_text(parts: tuple[Part, ...]) -> tuple[str, int]:
    """The student's parts as text, media replaced by a note; returns (text, media count)."""
    pieces: list[str] = []
    media = 0
    for part in parts:
        if part.is_text:
            pieces.append(part.text or "")
        else:
            media += 1
            pieces.append(media_note(part))
    return "\n".join(pieces), media


@dataclass
class Prompt:
    tokens: list[int]
    prefix_len: int  # tokens of the static part (identical for every student)
    media: int


class LocalBackend:
    """llama.cpp backend; construct with `LocalBackend(settings)`."""

    name: ClassVar[str] = "local"

    def __init__(self, settings: Settings) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise ConfigError(
                f"the local backend needs llama-cpp-python, which is not importable ({e})",
                fix=f"run `CMAKE_ARGS=-DGGML_NATIVE=OFF {INSTALL_HINT}` (the project's install "
                "script does this), or use Gemini: set GEMINI_API_KEY or --backend gemini",
            ) from None
        self._llama_cpp = llama_cpp
        self.model_path: Path = (
            packaged_model_path() if settings.model_path is None else Path(settings.model_path)
        )
        check_gguf(self.model_path)
        self.n_ctx = settings.n_ctx
        threads = settings.n_threads or max(1, os.cpu_count() or 1)
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=settings.n_ctx, n_threads=threads,
                n_threads_batch=threads, seed=settings.seed or 0, verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise ConfigError(
                f"llama.cpp could not load the model ({e}); the file is corrupt, truncated, or "
                "a GGUF of an architecture this llama-cpp-python does not support",
                path=self.model_path,
                fix="use another .gguf via --model-path / model_path in grader.toml, or leave it "
                "unset to use the packaged default model",
            ) from None
        self.model_version = self.model_path.name
        self.model = self.model_path.name  # the pipeline records `backend.model` with each grade
        self.n_ctx_train = int(self._llm._model.n_ctx_train())
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        self._eos = self._llm._model.token_get_text(eos) if eos != -1 else ""
        bos_text = self._llm._model.token_get_text(bos) if bos != -1 else ""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._format: Any = Jinja2ChatFormatter(
            template=self._llm.metadata.get("tokenizer.chat_template", CHATML), eos_token=self._eos,
            bos_token=bos_text, add_generation_prompt=True,
        )
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()
        # One dedicated OS thread for every llama.cpp call: its OpenMP worker team is created
        # once and stays warm (a fresh thread per call, as asyncio.to_thread may give, measured
        # about 10% slower on 2 cores).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    # ----- prompt ---------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            return str(self._format(messages=messages).prompt)
        except Exception:  # templates raise on a system role they do not support
            if messages and messages[0]["role"] == "system":
                merged = [{"role": "user", "content": "\ue0000\ue001\n\n"
                           + messages[1]["content"]}, *messages[2:]]
                return str(self._format(messages=merged).prompt)
            raise

    def build_prompt(self, request: GradeRequest) -> Prompt:
        """Tokens for the request. Template text is tokenized with special tokens allowed; every
        content piece (rubric, student text, history) without, so a student cannot forge a role
        boundary. The static part is tokenized on its own so its tokens never depend on the
        student's text, which is what lets the KV cache reuse it."""
        text, media = student_text(request.student_parts)
        contents = [request.system, request.static_prefix, text]
        contents += [turn.text for turn in request.history]
        messages = [{"role": "system", "content": "\ue0000\ue001"},
                    {"role": "user", "content": "\ue0001\ue001\ue0002\ue001"}]
        for n, turn in enumerate(request.history, start=3):
            role = "assistant" if turn.role == "model" else "user"
            messages.append({"role": role, "content": f"\ue000{n}\ue001"})
        rendered = self._render(messages)
        tokens: list[int] = []
        prefix_len = 0
        pos = 0
        for m in _SENTINEL.finditer(rendered):
            tokens += self._tok(rendered[pos:m.start()], special=True)
            index = int(m.group(1))
            tokens += self._tok(contents[index], special=False)
            if index == 1:
                prefix_len = len(tokens)
            pos = m.end()
        tokens += self._tok(rendered[pos:], special=True)
        return Prompt(tokens, prefix_len, media)

    def _tok(self, text: str, *, special: bool) -> list[int]:
        if not text:
            return []
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            text = json.dumps(ordered_schema(schema))
            self._grammars[key] = self._llama_cpp.LlamaGrammar.from_json_schema(
                text, verbose=False)
        return self._grammars[key]

    def _check_fits(self, request: GradeRequest, prompt: Prompt) -> int:
        reserve = min(request.max_output_tokens, MAX_OUTPUT_TOKENS)
        if prompt.prefix_len + reserve > self.n_ctx:
            raise ConfigError(
                f"the rubric prompt alone is {prompt.prefix_len} tokens; with {reserve} tokens "
                f"kept for the answer it does not fit the local context of {self.n_ctx} tokens",
                fix=f"raise n_ctx (--n-ctx / n_ctx in grader.toml; this model was trained on "
                f"{self.n_ctx_train}), or shorten the rubric",
            )
        if len(prompt.tokens) + reserve > self.n_ctx:
            raise SubmissionError(
                "too_long",
                f"submission too long for the local model: the prompt is {len(prompt.tokens)} "
                f"tokens and {reserve} are kept for the answer, over the context of {self.n_ctx}",
                fix=f"raise n_ctx (this model was trained on {self.n_ctx_train} tokens), "
                "grade this student with Gemini (--backend gemini), or mark it by hand",
            )
        return reserve

    # ----- Backend protocol -----------------------------------------------------------------

    async def generate(self, request: GradeRequest) -> GradeResponse:
        """Media parts become a note (a text model cannot see them); the pipeline does not send
        a media-only submission here at all (this backend lacks the `AcceptsMedia` capability)."""
        return await self._run(lambda: self._generate(request))

    def _generate(self, request: GradeRequest) -> GradeResponse:
        with self._lock:
            if self._llm is None:
                raise BackendError("the local model was closed", fix="create a new backend")
            prompt = self.build_prompt(request)
            reserve = self._check_fits(request, prompt)
            grammar = self._grammar(request.response_schema)
            cached = self._reusable(prompt.tokens)
            start = time.perf_counter()
            try:
                out = self._llm.create_completion(
                    # greedy and seeded unless the user set sampling: a small local model
                    # grades most consistently that way
                    prompt.tokens, max_tokens=reserve,
                    temperature=0.0 if request.temperature is None else request.temperature,
                    top_p=0.95 if request.top_p is None else request.top_p,
                    seed=request.seed or 0, grammar=grammar, stop=[self._eos] if self._eos else [],
                )
            except (RuntimeError, ValueError) as e:
                raise BackendError(f"llama.cpp failed: {e}", transient=False,
                                   fix="re-run with --debug and report it") from e
            latency = (time.perf_counter() - start) * 1000
        choice = out["choices"][0]
        usage = Usage(prompt_tokens=out["usage"]["prompt_tokens"],
                      output_tokens=out["usage"]["completion_tokens"], cached_tokens=cached)
        finish = _FINISH.get(choice.get("finish_reason") or "", choice.get("finish_reason"))
        text: str | None = choice["text"]
        blocked = None
        if finish == "MAX_TOKENS":
            text, blocked = None, "MAX_TOKENS"
        elif text is not None and prompt.media:
            text = _flag_media(text, prompt.media)
        return GradeResponse(
            text=text, finish_reason=finish, blocked_reason=blocked, usage=usage,
            model_version=self.model_version, latency_ms=latency,
            raw={"text": choice["text"], "finish_reason": choice.get("finish_reason"),
                 "usage": dict(out["usage"]), "cached_tokens": cached},
        )

    def _reusable(self, tokens: list[int]) -> int:
        """Prompt tokens already in the KV cache (llama.cpp reuses the longest common prefix)."""
        n = 0
        for a, b in zip(self._llm.input_ids[: self._llm.n_tokens], tokens, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(tokens) - 1)

    async def count_tokens(self, request: GradeRequest) -> int:
        def count() -> int:
            with self._lock:
                return len(self.build_prompt(request).tokens)

        return await self._run(count)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._llm is not None:
                    self._llm.close()
                    self._llm = None

        await self._run(close)
        self._worker.shutdown(wait=False)


def _flag_media(text: str, media: int) -> str:
    """The model graded only the text: make the grade ask for a human look at the media."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(data, dict):
        return text
    note = f"{media} image/PDF part(s) were not seen by the local text model"
    data["needs_review"] = True
    reason = str(data.get("review_reason") or "")
    data["review_reason"] = f"{note}; {reason}" if reason else note
    return json.dumps(data, ensure_ascii=False)

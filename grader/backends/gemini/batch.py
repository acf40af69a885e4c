"""`SupportsBatch` for the Gemini backends: Developer API batch mode (`batchGenerateContent`,
inline requests or a JSONL file from the Files API) and Enterprise batch prediction
(`batchPredictionJobs`, JSONL in a gs:// bucket, results under `prediction-model-*/`).

Requests are serialised by the SDK's own converters (the ones `client.batches.create` uses for
inline requests), so a JSONL line carries exactly what an online or inline request would:
contents, system instruction, `generationConfig` with the response schema and thinking level,
and `store: false` on the Developer API.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from google.genai import _common, types
from google.genai import batches as sdk_batches
from google.genai import models as sdk_models

from grader.backends.base import BatchInfo, BatchResult
from grader.backends.gemini.reply import reply_of
from grader.prompting.request import GradeRequest

T = TypeVar("T")
# Vertex echoes each input line's request in its output: the key rides in the request's labels.
KEY_LABEL = "grader_key"


def _state(job: types.BatchJob) -> str:
    state = job.state
    return str(getattr(state, "value", state) or "JOB_STATE_UNSPECIFIED")


def _plain(obj: Any) -> dict[str, Any]:
    """What the SDK sends for a converted object: plain JSON, bytes as base64."""
    out: dict[str, Any] = _common.encode_unserializable_types(_common.convert_to_dict(obj))
    return out


def _error_text(err: Any) -> str:
    """A line's or a job's error (google.rpc.Status: code, message), as one line of text."""
    if err is None:
        return "no reply"
    if isinstance(err, dict):
        code, message = err.get("code"), err.get("message")
    else:
        code, message = getattr(err, "code", None), getattr(err, "message", None)
    return f"{code or ''} {message or ''}".strip() or "failed"


class GeminiBatches:
    """Mixed into `GeminiBackend` / `VertexBackend` (which provide the client, request building,
    retries and response parsing)."""

    vertexai: ClassVar[bool]
    _aio: Any  # a property of the backend: the async client of the running loop
    _client: Any

    _contents: Callable[[GradeRequest], list[types.Content]]
    _config: Callable[[GradeRequest], types.GenerateContentConfig]
    _with_retries: Callable[..., Awaitable[Any]]
    _static_parts: Callable[[GradeRequest], list[types.Part]]
    download_file: Callable[[str, Path], Awaitable[None]]
    # (what the requests share, that part of a JSONL line, converted once)
    _line_template: tuple[Any, dict[str, Any]] | None = None
    prediction_files: Callable[[str], Awaitable[list[str]]]  # VertexBackend: its bucket

    @property
    def batch_source(self) -> str:
        return "gcs" if self.vertexai else "inline-or-file"

    # --- requests -----------------------------------------------------------------------------
    def _inlined(self, key: str, request: GradeRequest) -> types.InlinedRequest:
        return types.InlinedRequest(model=request.model, contents=self._contents(request),
                                    config=self._config(request), metadata={"key": key})

    def batch_line(self, key: str, request: GradeRequest) -> dict[str, Any]:
        """One JSONL line: `{"key", "request"}` (Developer API, REST camelCase) or
        `{"request"}` with the key in `labels` (Enterprise). What every request of a run shares
        (system instruction, static prefix, generation config) is converted once; each line
        converts only the student's parts and the history."""
        api = self._client._api_client
        if self.vertexai:
            config = self._config(request).model_copy(update={"labels": {KEY_LABEL: key}})
            body = sdk_models._GenerateContentParameters_to_vertex(
                api, types._GenerateContentParameters(
                    model=request.model, contents=self._contents(request), config=config))
            body.pop("_url", None)
            body.pop("model", None)
            return {"request": _plain(body)}
        contents = self._contents(request)
        static = len(self._static_parts(request)) if not request.cached_content else 0
        shared = (request.model, request.system, request.static_prefix, request.reference_parts,
                  request.cached_content, request.response_schema,
                  request.generation_config())
        if self._line_template is None or self._line_template[0] != shared:
            head = [types.Content(role="user", parts=(contents[0].parts or [])[:static])]
            item = sdk_batches._InlinedRequest_to_mldev(api, types.InlinedRequest(
                model=request.model, contents=head, config=self._config(request)))
            self._line_template = (shared, _plain(item["request"]))
        template = self._line_template[1]
        mine = [types.Content(role="user", parts=(contents[0].parts or [])[static:]),
                *contents[1:]]
        converted = _plain({"c": [sdk_batches._Content_to_mldev(c) for c in mine]})["c"]
        first = template["contents"][0]
        req = {**template, "contents": [
            {**first, "parts": [*first["parts"], *converted[0]["parts"]]}, *converted[1:]]}
        return {"key": key, "request": req}

    # --- jobs ---------------------------------------------------------------------------------
    def _info(self, job: types.BatchJob) -> BatchInfo:
        dest = job.dest
        inline = None
        output = None
        if dest is not None:
            output = dest.file_name or dest.gcs_uri
            if dest.inlined_responses is not None:
                inline = tuple(self._inline_result(i, r)
                               for i, r in enumerate(dest.inlined_responses))
        err = _error_text(job.error) if job.error is not None else None
        return BatchInfo(name=str(job.name), state=_state(job), display_name=job.display_name,
                         output=output, error=err, inline=inline)

    def _inline_result(self, i: int, r: types.InlinedResponse) -> BatchResult:
        key = str((r.metadata or {}).get("key", i))
        if r.response is None:
            return BatchResult(key, None, _error_text(r.error))
        return BatchResult(key, reply_of(
            r.response.model_dump(mode="json", by_alias=True, exclude_none=True),
            vertex=self.vertexai))

    async def create_batch(self, *, model: str, display_name: str,
                           inline: list[tuple[str, GradeRequest]] | None = None,
                           source: str | None = None,
                           destination: str | None = None) -> BatchInfo:
        """Create a job from inline requests, a Files API name (`files/…`) or a gs:// URI. Not
        retried: a create that may have reached the service is found again by its display
        name instead of being sent twice."""
        src: Any = ([self._inlined(k, r) for k, r in inline] if inline is not None else source)
        config = types.CreateBatchJobConfig(display_name=display_name, dest=destination)

        async def attempt() -> types.BatchJob:
            return await self._aio.batches.create(model=model, src=src, config=config)

        job, _ = await self._with_retries(attempt, what="batches.create", retry=False)
        return self._info(job)

    async def get_batch(self, name: str) -> BatchInfo:
        async def attempt() -> types.BatchJob:
            return await self._aio.batches.get(name=name)

        job, _ = await self._with_retries(attempt, what="batches.get")
        return self._info(job)

    async def list_batches(self) -> list[BatchInfo]:
        async def attempt() -> list[types.BatchJob]:
            return [j async for j in await self._aio.batches.list(config={"page_size": 100})]

        jobs, _ = await self._with_retries(attempt, what="batches.list")
        return [self._info(j) for j in jobs]

    async def cancel_batch(self, name: str) -> None:
        async def attempt() -> None:
            await self._aio.batches.cancel(name=name)

        await self._with_retries(attempt, what="batches.cancel")

    async def delete_batch(self, name: str) -> bool:
        async def attempt() -> None:
            await self._aio.batches.delete(name=name)

        await self._with_retries(attempt, what="batches.delete")
        return True

    # --- results ------------------------------------------------------------------------------
    async def batch_results(self, info: BatchInfo, workdir: Path) -> AsyncIterator[BatchResult]:
        """The results of a finished job, one at a time: inline ones from the job itself, a
        results file downloaded to `workdir` and read line by line (never whole in memory)."""
        if info.inline is not None:
            for r in info.inline:
                yield r
            return
        if info.output is None:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        for n, name in enumerate(await self._result_files(info.output)):
            path = workdir / f"{info.name.rsplit('/', 1)[-1]}-{n}.jsonl"
            await self.download_file(name, path)
            for r in self._read_results(path):
                yield r

    async def _result_files(self, output: str) -> list[str]:
        """Where a job's results are: the Files API file itself, or (Enterprise) the
        `prediction-model-*/*.jsonl` objects below the job's output prefix (the SDK reports
        only the prefix)."""
        return await self.prediction_files(output) if self.vertexai else [output]

    def _read_results(self, path: Path) -> Iterator[BatchResult]:
        with path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                item = json.loads(line)
                yield self._line_result(item)

    def _line_result(self, item: dict[str, Any]) -> BatchResult:
        if self.vertexai:
            labels = (item.get("request") or {}).get("labels") or {}
            key = str(labels.get(KEY_LABEL, ""))
            response, status = item.get("response"), item.get("status")
            if not response:
                return BatchResult(key, None, str(status or "no reply"))
        else:
            key = str(item.get("key", ""))
            response = item.get("response")
            if response is None:
                return BatchResult(key, None, _error_text(item.get("error")
                                                          or item.get("status")))
        return BatchResult(key, reply_of(response, vertex=self.vertexai))

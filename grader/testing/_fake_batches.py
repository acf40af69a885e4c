"""The fake's batch jobs: Developer API batch mode and Enterprise/Vertex batch prediction.

Shapes as google-genai 3.4's `batches.py` sends and parses them:
- Developer API: `POST /v1beta/models/{m}:batchGenerateContent` with `{"batch": {"displayName",
  "inputConfig": {"requests": {"requests": [{"request", "metadata"}]}} | {"fileName"}}}`;
  `GET/DELETE /v1beta/batches/{id}`, `POST /v1beta/batches/{id}:cancel`, `GET /v1beta/batches`
  (`{"operations": [...]}`). A job is `{"name": "batches/…", "metadata": {"state":
  "BATCH_STATE_*", "displayName", "model", "createTime", "updateTime", "endTime", "batchStats",
  "output": {"inlinedResponses": {"inlinedResponses": [...]}} | {"responsesFile": "files/…"}}}`.
  A file job's results are a generated file (JSONL of `{"key", "response"}` or
  `{"key", "error"}`), downloaded through the Files API.
- Enterprise: `…/projects/{p}/locations/{l}/batchPredictionJobs` (create, get, list, cancel,
  delete) with `inputConfig.gcsSource.uris` and `outputConfig.gcsDestination.outputUriPrefix`,
  read from and written to the GCS emulator (`storage_host`); results go to
  `<prefix>/prediction-model-<time>/predictions.jsonl`, each line the input request with
  `response` or `status`.

State advances on the fake's clock: PENDING for `batch_pending_s`, RUNNING for
`batch_running_s`, then the end state the job was created with (`batch_end_state`:
SUCCEEDED, FAILED or EXPIRED). A submission containing `FAKE_GEMINI:BATCH_LINE_FAIL` gets a
failed line, and `fail_rate` / `fault_kinds` reach the lines too (`FakeApp.batch_answer`).
Replies are computed and billed once, when a job is first seen finished.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grader.testing._fake_gcs import gcs_read, gcs_write

if TYPE_CHECKING:
    from grader.testing._fake_app import Call, FakeApp, Reply

_DEV = r"^/(?:v1beta|v1alpha)"
_CREATE = re.compile(_DEV + r"/models/(?P<model>[^/:]+):batchGenerateContent$")
_LIST = re.compile(_DEV + r"/batches$")
_ONE = re.compile(_DEV + r"/batches/(?P<id>[^/:]+)$")
_CANCEL = re.compile(_DEV + r"/batches/(?P<id>[^/:]+):cancel$")
_VX = r"^/(?:v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_VCREATE = re.compile(_VX + r"/batchPredictionJobs$")
_VONE = re.compile(_VX + r"/batchPredictionJobs/(?P<id>[0-9]+)$")
_VCANCEL = re.compile(_VX + r"/batchPredictionJobs/(?P<id>[0-9]+):cancel$")
END_STATES = ("SUCCEEDED", "FAILED", "EXPIRED")


@dataclass
class FakeBatch:
    name: str
    model: str
    display_name: str
    created: float  # the fake's clock
    pending_s: float
    running_s: float
    end_state: str
    vertex: bool
    lines: list[tuple[str, dict[str, Any], dict[str, Any]]]  # (key, request, echo)
    mode: str  # inline | file | gcs
    source: str | None = None
    destination: str | None = None
    cancelled_at: float | None = None
    results: list[dict[str, Any]] | None = None
    output: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def state(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "CANCELLED"
        age = now - self.created
        if age < self.pending_s:
            return "PENDING"
        if age < self.pending_s + self.running_s:
            return "RUNNING"
        return self.end_state


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000000Z"


class Batches:
    def __init__(self, app: FakeApp):
        self.app, self.state = app, app.state
        self.jobs: dict[str, FakeBatch] = {}
        self._finishing = threading.Lock()  # a job's replies are computed and billed once
        for method, pattern, handler in (
                ("POST", _CREATE, self.create), ("GET", _LIST, self.list),
                ("GET", _ONE, self.get), ("DELETE", _ONE, self.delete),
                ("POST", _CANCEL, self.cancel), ("POST", _VCREATE, self.create),
                ("GET", _VCREATE, self.list), ("GET", _VONE, self.get),
                ("DELETE", _VONE, self.delete), ("POST", _VCANCEL, self.cancel)):
            app.route(method, pattern, self._wrap(handler.__name__, handler))

    def _wrap(self, op: str, handler: Any) -> Any:
        endpoint = f"batches.{op}"

        def handle(call: Call) -> Reply:
            vertex = call.match is not None and "project" in call.match.groupdict()
            return self.app.guarded(endpoint, call, lambda: handler(call, vertex), vertex=vertex,
                                    keep_body=call.method == "POST" and op == "create")

        return handle

    # --- routes -------------------------------------------------------------------------------
    def create(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        body = call.body()
        cfg = self.state.config
        if vertex:
            assert call.match is not None
            model = str(body.get("model", "")).rsplit("/", 1)[-1]
            uris = ((body.get("inputConfig") or {}).get("gcsSource") or {}).get("uris") or []
            dest = (((body.get("outputConfig") or {}).get("gcsDestination") or {})
                    .get("outputUriPrefix"))
            if not uris or not dest:
                return error_reply(400, "inputConfig.gcsSource.uris and outputConfig."
                                        "gcsDestination.outputUriPrefix are required.")
            try:
                chunks = [gcs_read(cfg.storage_host, u) for u in uris]
            except OSError as e:
                return error_reply(400, f"Cannot read the input: {e}")
            missing = [u for u, c in zip(uris, chunks, strict=True) if c is None]
            if missing:
                return error_reply(400, f"Cannot read the input: {missing[0]} does not exist.")
            data = b"".join(c for c in chunks if c is not None)
            lines = []
            for text in data.decode().splitlines():
                if text.strip():
                    item = json.loads(text)
                    lines.append(("", item["request"], item))
            name = (f"projects/{call.match.group('project')}/locations/"
                    f"{call.match.group('location')}/batchPredictionJobs/"
                    f"{uuid.uuid4().int % 10**18}")
            job = FakeBatch(name=name, model=model, display_name=str(body.get("displayName", "")),
                            created=self.state.now(), pending_s=cfg.batch_pending_s,
                            running_s=cfg.batch_running_s, end_state=cfg.batch_end_state,
                            vertex=True, lines=lines, mode="gcs", source=",".join(uris),
                            destination=str(dest))
        else:
            assert call.match is not None
            batch = body.get("batch") or {}
            src = batch.get("inputConfig") or {}
            if "fileName" in src:
                f = self.app.files.live(str(src["fileName"]))
                if f is None:
                    return error_reply(400, f"File {src['fileName']} not found.")
                lines = []
                for text in f.data.decode().splitlines():
                    if text.strip():
                        item = json.loads(text)
                        lines.append((str(item.get("key", "")), item["request"], {}))
                mode = "file"
            else:
                items = (src.get("requests") or {}).get("requests") or []
                lines = [(str((i.get("metadata") or {}).get("key", "")), i["request"],
                          i.get("metadata") or {}) for i in items]
                mode = "inline"
            job = FakeBatch(name=f"batches/{uuid.uuid4().hex[:16]}",
                            model=call.match.group("model"),
                            display_name=str(batch.get("displayName", "")),
                            created=self.state.now(), pending_s=cfg.batch_pending_s,
                            running_s=cfg.batch_running_s, end_state=cfg.batch_end_state,
                            vertex=False, lines=lines, mode=mode)
        with self.state.lock:
            self.jobs[job.name] = job
        return json_reply(200, self._json(job))

    def _job(self, call: Call) -> FakeBatch | None:
        assert call.match is not None
        jid = call.match.group("id")
        for name, job in self.jobs.items():
            if name.rsplit("/", 1)[-1] == jid:
                return job
        return None

    def get(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        job = self._job(call)
        if job is None:
            return error_reply(404, "Requested entity was not found.")
        return json_reply(200, self._json(job))

    def list(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import json_reply

        size = int((call.query.get("pageSize") or ["50"])[0])
        start = int((call.query.get("pageToken") or ["0"])[0])
        with self.state.lock:
            jobs = [j for j in self.jobs.values() if j.vertex == vertex]
        page = [self._json(j) for j in jobs[start:start + size]]
        out: dict[str, Any] = {"batchPredictionJobs" if vertex else "operations": page}
        if start + size < len(jobs):
            out["nextPageToken"] = str(start + size)
        return json_reply(200, out)

    def cancel(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        job = self._job(call)
        if job is None:
            return error_reply(404, "Requested entity was not found.")
        if job.state(self.state.now()) in ("PENDING", "RUNNING"):
            job.cancelled_at = self.state.now()
        return json_reply(200, {})

    def delete(self, call: Call, vertex: bool) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        job = self._job(call)
        if job is None:
            return error_reply(404, "Requested entity was not found.")
        with self.state.lock:
            self.jobs.pop(job.name, None)
        return json_reply(200, {"name": job.name, "done": True})

    # --- running a job ------------------------------------------------------------------------
    def _finish(self, job: FakeBatch) -> None:
        """Answer every line (billed now, once) and write the results where they belong."""
        with self._finishing:
            if job.results is None:
                self._answer_all(job)

    def _answer_all(self, job: FakeBatch) -> None:
        results = []
        ok = failed = 0
        for key, request, echo in job.lines:
            resp, err = self.app.batch_answer(request, job.model, job.vertex)
            ok, failed = ok + (resp is not None), failed + (resp is None)
            if job.vertex:
                line = {**echo, "response": resp} if resp is not None else {
                    **echo, "status": json.dumps(err)}
                if resp is not None:
                    line["status"] = ""
            elif job.mode == "file":
                line = {"key": key, "response": resp} if resp is not None else {
                    "key": key, "error": err}
            else:
                line = {"response": resp} if resp is not None else {"error": err}
                line["metadata"] = echo
            results.append(line)
        job.results = results
        job.counts = {"requestCount": len(results), "successfulRequestCount": ok,
                      "failedRequestCount": failed}
        if job.vertex:
            folder = f"{(job.destination or '').rstrip('/')}/prediction-model-" + time.strftime(
                "%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(self.state.now()))
            gcs_write(self.state.config.storage_host, folder + "/predictions.jsonl",
                      "".join(json.dumps(r) + "\n" for r in results).encode())
            job.output = {"gcsOutputDirectory": folder}
        elif job.mode == "file":
            data = "".join(json.dumps(r) + "\n" for r in results).encode()
            host = "127.0.0.1"
            f = self.app.files.add(data, "application/jsonl", f"{job.display_name}-results",
                                   host, source="GENERATED")
            job.output = {"responsesFile": f.name}
        else:
            job.output = {"inlinedResponses": {"inlinedResponses": results}}

    def _json(self, job: FakeBatch) -> dict[str, Any]:
        now = self.state.now()
        state = job.state(now)
        if state == "SUCCEEDED":
            self._finish(job)
        ended = state in END_STATES or state == "CANCELLED"
        n = len(job.lines)
        stats = {k: str(v) for k, v in (job.counts or {"requestCount": n,
                                                       "pendingRequestCount": n}).items()}
        if job.vertex:
            out: dict[str, Any] = {
                "name": job.name, "displayName": job.display_name,
                "model": f"publishers/google/models/{job.model}",
                "inputConfig": {"instancesFormat": "jsonl",
                                "gcsSource": {"uris": (job.source or "").split(",")}},
                "outputConfig": {"predictionsFormat": "jsonl",
                                 "gcsDestination": {"outputUriPrefix": job.destination}},
                "state": f"JOB_STATE_{state}", "createTime": _ts(job.created),
                "updateTime": _ts(now)}
            if state == "SUCCEEDED":
                out["outputInfo"] = job.output
                out["completionStats"] = {"successfulCount": stats["successfulRequestCount"],
                                          "failedCount": stats["failedRequestCount"]}
            if state == "FAILED":
                out["error"] = {"code": 13, "message": "The batch prediction job failed."}
            if ended:
                out["endTime"] = _ts(now)
            return out
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main."
                     "GenerateContentBatch",
            "model": f"models/{job.model}", "displayName": job.display_name,
            "createTime": _ts(job.created), "updateTime": _ts(now),
            "state": f"BATCH_STATE_{state}", "batchStats": stats}
        if ended:
            meta["endTime"] = _ts(now)
        if state == "SUCCEEDED":
            meta["output"] = job.output
        out = {"name": job.name, "metadata": meta}
        if ended:
            out["done"] = True
        return out

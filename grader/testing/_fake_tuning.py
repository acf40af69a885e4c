"""The fake's Enterprise (Vertex) supervised tuning: `tuningJobs` create / get / list / cancel,
and generateContent on a tuned model's endpoint.

A job reads its JSONL dataset from the GCS emulator (`storage_host`; 400 when the object is
missing) and moves on the fake's clock: PENDING for `PENDING_S`, RUNNING until `RUN_S`, then
SUCCEEDED with a tuned model and an endpoint (or FAILED when the dataset is not valid tuning
JSONL: every line an object with `contents` of a user turn then a model turn, at least
`MIN_EXAMPLES` lines). `:cancel` stops a job that has not ended. The endpoint answers
generateContent like its base model (the same rules, scoring and billing).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grader.testing._fake_caches import rfc3339
from grader.testing._fake_gcs import gcs_read

if TYPE_CHECKING:
    from grader.testing._fake_app import Call, FakeApp, Reply

PENDING_S = 5.0
RUN_S = 60.0  # on the fake's clock: tests move it with `FakeGemini.advance`
MIN_EXAMPLES = 16  # the documented minimum of a supervised tuning dataset
_PARENT = r"^/(?:v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
ENDPOINT_PATH = re.compile(
    _PARENT + r"/endpoints/(?P<endpoint>[^/:]+):(?P<method>generateContent|countTokens)$")


@dataclass
class FakeJob:
    name: str
    base_model: str
    display_name: str
    spec: dict[str, Any]
    created: float
    problem: str | None  # why the job will fail (an invalid dataset), None when it will not
    cancelled: float | None = None

    def state(self, now: float) -> str:
        if self.cancelled is not None:
            return "JOB_STATE_CANCELLED"
        age = now - self.created
        if age < PENDING_S:
            return "JOB_STATE_PENDING"
        if age < RUN_S:
            return "JOB_STATE_RUNNING"
        return "JOB_STATE_FAILED" if self.problem else "JOB_STATE_SUCCEEDED"

    @property
    def job_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        return self.name.split("/tuningJobs/", 1)[0]

    def tuned(self) -> dict[str, str]:
        return {"model": f"{self.parent}/models/{self.job_id}@1",
                "endpoint": f"{self.parent}/endpoints/{self.job_id}"}

    def json(self, now: float) -> dict[str, Any]:
        state = self.state(now)
        out: dict[str, Any] = {
            "name": self.name, "baseModel": self.base_model, "state": state,
            "tunedModelDisplayName": self.display_name, "supervisedTuningSpec": self.spec,
            "createTime": rfc3339(self.created), "updateTime": rfc3339(now)}
        if state != "JOB_STATE_PENDING":
            out["startTime"] = rfc3339(self.created + PENDING_S)
        if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            out["endTime"] = rfc3339(self.cancelled or self.created + RUN_S)
        if state == "JOB_STATE_SUCCEEDED":
            out["tunedModel"] = self.tuned()
        if state == "JOB_STATE_FAILED":
            out["error"] = {"code": 3, "message": self.problem}
        return out


def dataset_problem(data: bytes, minimum: int) -> str | None:
    """Why `data` is not a supervised tuning dataset (None when it is one)."""
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return f"line {n} is not JSON"
        contents = row.get("contents") if isinstance(row, dict) else None
        roles = [c.get("role") for c in contents or [] if isinstance(c, dict)]
        if len(roles) < 2 or roles[0] != "user" or roles[-1] != "model":
            return f"line {n}: contents must be a user turn then a model turn"
        extra = set(row) - {"contents", "systemInstruction"}
        if extra:
            return f"line {n}: unknown fields {sorted(extra)}"
    if len(lines) < minimum:
        return f"the dataset has {len(lines)} examples; at least {minimum} are required"
    return None


class Tuning:
    """The routes; jobs live in `jobs` (name -> FakeJob), guarded by the state's lock."""

    def __init__(self, app: FakeApp):
        self.app, self.state = app, app.state
        self.jobs: dict[str, FakeJob] = {}
        base = _PARENT + r"/tuningJobs"
        one = base + r"/(?P<id>[^/:]+)"
        app.route("POST", re.compile(base + "$"), self._wrap("create", self.create))
        app.route("GET", re.compile(base + "$"), self._wrap("list", self.list))
        app.route("GET", re.compile(one + "$"), self._wrap("get", self.get))
        app.route("POST", re.compile(one + ":cancel$"), self._wrap("cancel", self.cancel))
        app.route("POST", ENDPOINT_PATH, self.endpoint_call)

    def _wrap(self, op: str, handler: Any) -> Any:
        endpoint = f"tuningJobs.{op}"

        def handle(call: Call) -> Reply:
            return self.app.guarded(endpoint, call, lambda: handler(call), vertex=True,
                                    keep_body=call.method == "POST")

        return handle

    def _parent(self, call: Call) -> str:
        assert call.match is not None
        return (f"projects/{call.match.group('project')}/locations/"
                f"{call.match.group('location')}")

    def create(self, call: Call) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        body = call.body()
        base = str(body.get("baseModel") or "")
        spec = body.get("supervisedTuningSpec") or {}
        train = str(spec.get("trainingDatasetUri") or "")
        if not base.startswith("gemini-"):
            return error_reply(400, f"Base model {base!r} does not support supervised tuning.")
        if not train.startswith("gs://"):
            return error_reply(400, "supervisedTuningSpec.trainingDatasetUri must be a gs:// URI.")
        problem = None
        host = self.state.config.storage_host
        for uri in (train, spec.get("validationDatasetUri")):
            if not uri or not host:  # no emulator configured: the datasets are not checked
                continue
            data = gcs_read(host, str(uri))
            if data is None:
                return error_reply(400, f"Dataset {uri} does not exist or is not readable.")
            minimum = MIN_EXAMPLES if uri == train else 1
            problem = problem or (dataset_problem(data, minimum) if data is not None else None)
        job = FakeJob(name=f"{self._parent(call)}/tuningJobs/{uuid.uuid4().int % 10**18}",
                      base_model=base, display_name=str(body.get("tunedModelDisplayName") or ""),
                      spec=spec, created=self.state.now(), problem=problem)
        with self.state.lock:
            self.jobs[job.name] = job
        return json_reply(200, job.json(self.state.now()))

    def _job(self, call: Call) -> FakeJob | None:
        assert call.match is not None
        with self.state.lock:
            return self.jobs.get(f"{self._parent(call)}/tuningJobs/{call.match.group('id')}")

    def get(self, call: Call) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        job = self._job(call)
        if job is None:
            return error_reply(404, "The TuningJob does not exist.")
        return json_reply(200, job.json(self.state.now()))

    def list(self, call: Call) -> Reply:
        from grader.testing._fake_app import json_reply

        parent, now = self._parent(call), self.state.now()
        with self.state.lock:
            jobs = [j for j in self.jobs.values() if j.name.startswith(parent + "/")]
        return json_reply(200, {"tuningJobs": [j.json(now) for j in reversed(jobs)]})

    def cancel(self, call: Call) -> Reply:
        from grader.testing._fake_app import error_reply, json_reply

        job = self._job(call)
        if job is None:
            return error_reply(404, "The TuningJob does not exist.")
        now = self.state.now()
        if job.state(now) not in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING"):
            return error_reply(400, f"The TuningJob is {job.state(now)}; it cannot be cancelled.")
        job.cancelled = now
        return json_reply(200, {})

    def endpoint_call(self, call: Call) -> Reply:
        """generateContent/countTokens on a tuned model's endpoint: its base model answers."""
        from grader.testing._fake_app import error_reply

        assert call.match is not None
        name = f"{self._parent(call)}/endpoints/{call.match.group('endpoint')}"
        now = self.state.now()
        with self.state.lock:
            job = next((j for j in self.jobs.values()
                        if j.tuned()["endpoint"] == name and j.state(now) == "JOB_STATE_SUCCEEDED"),
                       None)
        if job is None:
            return error_reply(404, f"Endpoint {name} not found.")
        return self.app.model_call(call, model=job.base_model)

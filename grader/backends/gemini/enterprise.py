"""Gemini Enterprise (Agent Platform, formerly Vertex AI): `VertexBackend` (`vertex`, the legacy
name) and `EnterpriseBackend` (`enterprise`). The same client as `GeminiBackend` on a Google
Cloud project and location; Enterprise has no Files API, so files too large to send inline are
staged in a gs:// bucket (google-cloud-storage), and it alone tunes models (supervised tuning
jobs, `--model tuned:NAME`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from google import genai
from google.genai import types

from grader.backends.base import FileInfo, TuningInfo
from grader.backends.gemini.client import GeminiBackend
from grader.backends.gemini.errors import RETRYABLE_STATUS
from grader.config.settings import ENTERPRISE_ENV
from grader.errors import BackendError, ConfigError
from grader.prompting.request import GradeRequest

T = TypeVar("T")


class VertexBackend(GeminiBackend):
    """Gemini Enterprise (Agent Platform, formerly Vertex AI): project/location from settings
    or GOOGLE_CLOUD_*; ADC credentials unless `credentials=` is given (tests pass
    `google.oauth2.credentials.Credentials`). `vertex` is the legacy name of `enterprise`."""

    name: ClassVar[str] = "vertex"
    vertexai: ClassVar[bool] = True
    api_version: ClassVar[str] = "v1beta1"

    def _base_url(self) -> str | None:
        return (os.environ.get("GOOGLE_VERTEX_BASE_URL") or self.settings.base_url) or None

    def _make_client(self, http_options: types.HttpOptions, credentials: Any) -> genai.Client:
        self._credentials = credentials
        self._gcs: Any = getattr(self, "_gcs", None)  # made again for each event loop's client
        project = self.settings.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        location = (self.settings.location or os.environ.get("GOOGLE_CLOUD_LOCATION")
                    or "global")
        if not project:
            raise ConfigError("Gemini Enterprise (Vertex AI) needs a Google Cloud project",
                              fix=f"set GOOGLE_CLOUD_PROJECT (with {ENTERPRISE_ENV}=true) or "
                              "pass --project")
        self._project, self._location = project, location
        return genai.Client(enterprise=True, project=project, location=location,
                            credentials=credentials, http_options=http_options)

    def _auth_fix(self) -> str:
        return ("run `gcloud auth application-default login`, and check that --project has the "
                "Gemini Enterprise Agent Platform (Vertex AI) API enabled and your account may "
                "use it")

    def _count_config(self, request: GradeRequest) -> types.CountTokensConfig | None:
        if request.cached_content:
            return None
        return types.CountTokensConfig(system_instruction=request.system)

    # --- SupportsCaching: the same `client.caches` calls; caches live per project and location
    @property
    def service_key(self) -> str:  # type: ignore[override]
        return f"enterprise:{self._project}/{self._location}"

    # --- SupportsFiles: Enterprise has no Files API; files go to a gs:// staging bucket ---------
    @property
    def files_available(self) -> bool:  # type: ignore[override]
        return self.settings.staging_bucket is not None

    files_fix = ("set staging_bucket = \"gs://BUCKET/PREFIX\" in grader.toml (a bucket the "
                 "project can read), so files too large to send inline are staged there")

    def _bucket(self) -> tuple[Any, str]:
        """The staging bucket (google-cloud-storage, imported only when it is used) and the
        object-name prefix."""
        from google.cloud import storage

        if self._gcs is None:
            self._gcs = storage.Client(project=self._project, credentials=self._credentials)
        spec = (self.settings.staging_bucket or "").removeprefix("gs://")
        bucket, _, prefix = spec.partition("/")
        prefix = prefix.strip("/")
        return self._gcs.bucket(bucket), f"{prefix}/" if prefix else ""

    async def _gcs_call(self, what: str, fn: Callable[[], T]) -> T:
        """A blocking google-cloud-storage call in a thread, its errors as BackendError."""
        from google.api_core import exceptions as gexc

        try:
            return await asyncio.to_thread(fn)
        except gexc.GoogleAPICallError as e:
            code = int(e.code or 0)
            raise BackendError(f"{self.name} staging bucket {what} failed: {code}: {e.message}",
                               fix=f"check staging_bucket ({self.settings.staging_bucket}) and "
                               "that the project may write to it", status=code,
                               transient=code in RETRYABLE_STATUS) from None
        except (OSError, gexc.RetryError) as e:
            raise BackendError(f"{self.name} staging bucket {what} failed: {e}", transient=True,
                               fix="check your network connection") from None

    def _staged(self, blob: Any) -> FileInfo:
        return FileInfo(name=f"gs://{blob.bucket.name}/{blob.name}",
                        uri=f"gs://{blob.bucket.name}/{blob.name}",
                        mime_type=str(blob.content_type or ""), expires_at=None,
                        display_name=str(blob.name).rsplit("/", 1)[-1])

    def _blob(self, name: str) -> Any:
        bucket, _ = self._bucket()
        spec = name.removeprefix("gs://")
        owner, _, obj = spec.partition("/")
        if owner != bucket.name:
            bucket = bucket.client.bucket(owner)
        return bucket.blob(obj)

    async def upload_file(self, source: bytes | Path, *, mime_type: str,
                          display_name: str) -> FileInfo:
        """Write the object `<prefix><display_name>` to the staging bucket."""
        bucket, prefix = self._bucket()
        blob = bucket.blob(prefix + display_name)

        def put() -> None:
            if isinstance(source, bytes):
                blob.upload_from_string(source, content_type=mime_type)
            else:
                blob.upload_from_filename(str(source), content_type=mime_type)

        await self._gcs_call("upload", put)
        blob.content_type = mime_type
        return self._staged(blob)

    async def get_file(self, name: str) -> FileInfo | None:
        blob = self._blob(name)
        found = await self._gcs_call("get", blob.exists)
        return self._staged(blob) if found else None

    async def delete_file(self, name: str) -> bool:
        from google.api_core import exceptions as gexc

        blob = self._blob(name)

        def delete() -> bool:
            try:
                blob.delete()
            except gexc.NotFound:
                return False
            return True

        return await self._gcs_call("delete", delete)

    async def list_files(self) -> list[FileInfo]:
        bucket, prefix = self._bucket()
        blobs = await self._gcs_call("list", lambda: list(bucket.list_blobs(prefix=prefix)))
        return [self._staged(b) for b in blobs]

    async def download_file(self, name: str, destination: Path) -> None:
        blob = self._blob(name)
        await self._gcs_call("download", lambda: blob.download_to_filename(str(destination)))

    async def prediction_files(self, prefix: str) -> list[str]:
        """The results of a batch prediction job with output prefix `prefix`."""
        bucket = self._blob(prefix.rstrip("/") + "/x").bucket
        below = prefix.removeprefix("gs://").partition("/")[2].rstrip("/") + "/prediction-model-"
        blobs = await self._gcs_call("list", lambda: list(bucket.list_blobs(prefix=below)))
        return sorted(f"gs://{bucket.name}/{b.name}" for b in blobs
                      if str(b.name).endswith(".jsonl"))


    # --- SupportsTuning: supervised tuning jobs (`client.tunings`), Enterprise only -------------
    async def start_tuning(self, *, base_model: str, train_uri: str,
                           validation_uri: str | None, display_name: str,
                           epochs: int | None) -> TuningInfo:
        config = types.CreateTuningJobConfig(
            tuned_model_display_name=display_name, epoch_count=epochs,
            validation_dataset=(types.TuningValidationDataset(gcs_uri=validation_uri)
                                if validation_uri else None))

        async def attempt() -> types.TuningJob:
            return await self._aio.tunings.tune(
                base_model=base_model, training_dataset=types.TuningDataset(gcs_uri=train_uri),
                config=config)

        job, _ = await self._with_retries(attempt, what="tunings.tune")
        return _tuning_info(job)

    async def get_tuning(self, name: str) -> TuningInfo:
        async def attempt() -> types.TuningJob:
            return await self._aio.tunings.get(name=name)

        job, _ = await self._with_retries(attempt, what="tunings.get")
        return _tuning_info(job)

    async def list_tunings(self) -> list[TuningInfo]:
        async def attempt() -> list[types.TuningJob]:
            return [j async for j in await self._aio.tunings.list(config={"page_size": 100})]

        jobs, _ = await self._with_retries(attempt, what="tunings.list")
        return [_tuning_info(j) for j in jobs]

    async def cancel_tuning(self, name: str) -> None:
        async def attempt() -> None:
            await self._aio.tunings.cancel(name=name)

        await self._with_retries(attempt, what="tunings.cancel")

    def _tuned_endpoint(self, name: str) -> str:
        """The endpoint of the newest succeeded tuning job whose tuned model is called `name`
        (its display name, or the job's id); asked once, when the backend is created."""
        found = [j for j in self._client.tunings.list(config={"page_size": 100})
                 if j.state == types.JobState.JOB_STATE_SUCCEEDED and j.tuned_model
                 and j.tuned_model.endpoint and name in (
                     j.tuned_model_display_name, (j.name or "").rsplit("/", 1)[-1])]
        if not found:
            raise ConfigError(f"no succeeded tuning job made a tuned model called {name!r} in "
                              f"project {self._project} ({self._location})",
                              fix="check `grade tune status` for the job's state and name, "
                                  "and pass --model tuned:NAME with its display name")
        newest = max(found, key=lambda j: str(j.create_time or ""))
        assert newest.tuned_model is not None and newest.tuned_model.endpoint is not None
        return newest.tuned_model.endpoint


def _tuning_info(job: types.TuningJob) -> TuningInfo:
    tuned = job.tuned_model
    return TuningInfo(
        name=job.name or "", state=job.state.value if job.state else "JOB_STATE_UNSPECIFIED",
        base_model=job.base_model or "", display_name=job.tuned_model_display_name or "",
        tuned_model=tuned.model if tuned else None, endpoint=tuned.endpoint if tuned else None,
        error=job.error.message if job.error else None)


class EnterpriseBackend(VertexBackend):
    """The same client under the name current Google docs use (GOOGLE_GENAI_USE_ENTERPRISE)."""

    name: ClassVar[str] = "enterprise"

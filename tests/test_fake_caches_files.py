"""The fake server's cachedContents and Files API, through the real google-genai SDK and raw
HTTP: the rules CI relies on (minimum size, no system instruction beside a cache, TTL expiry and
extension on a clock the test controls, cached billing, the resumable upload protocol, 48 h
retention, downloads of generated files only)."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

from grader.config.models import Pricing, packaged, today
from grader.prompting.request import Usage
from grader.testing import FakeGemini

MODEL = "gemini-3.8-flash"
BIG = "Marking scheme. " * 1100  # 17,600 characters: 4,400 tokens by the fake's estimate


def dev(fake: FakeGemini) -> genai.client.AsyncClient:
    opts = types.HttpOptions(base_url=fake.url, api_version="v1beta")
    return genai.Client(api_key="test-key", http_options=opts).aio


def vertex(fake: FakeGemini) -> genai.client.AsyncClient:
    opts = types.HttpOptions(base_url=fake.url, api_version="v1beta1")
    return genai.Client(vertexai=True, project="proj", location="global",
                        credentials=Credentials(token="test"), http_options=opts).aio


def cache_config(text: str = BIG, **extra: Any) -> types.CreateCachedContentConfig:
    return types.CreateCachedContentConfig(
        contents=[types.Content(role="user", parts=[types.Part(text=text)])],
        system_instruction="You grade fairly.", **extra)


def post(fake: FakeGemini, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(fake.url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_a_cache_below_the_model_minimum_is_refused(fake_gemini: FakeGemini) -> None:
    async def go() -> None:
        with pytest.raises(errors.ClientError) as e:
            await dev(fake_gemini).caches.create(model=MODEL, config=cache_config("short"))
        assert e.value.code == 400
        minimum = packaged().get(MODEL).cache_min_tokens
        assert f"min_total_token_count={minimum}" in str(e.value)

    asyncio.run(go())


@pytest.mark.today  # compares the fake's bill with the table's prices
def test_requests_naming_a_cache_are_billed_cached_and_must_not_repeat_the_system(
        fake_gemini: FakeGemini) -> None:
    async def go() -> None:
        c = dev(fake_gemini)
        cache = await c.caches.create(model=MODEL, config=cache_config(ttl="600s"))
        tokens = cache.usage_metadata.total_token_count
        assert tokens >= packaged().get(MODEL).cache_min_tokens
        r = await c.models.generate_content(
            model=MODEL, contents="<submission>my answer</submission>",
            config=types.GenerateContentConfig(cached_content=cache.name))
        assert r.usage_metadata.cached_content_token_count == tokens
        assert r.usage_metadata.prompt_token_count > tokens
        # the fake billed the call with the cached tokens at the cached-input price
        u = r.usage_metadata
        cost = Pricing.of(packaged(), MODEL).cost(Usage(
            prompt_tokens=u.prompt_token_count, cached_tokens=u.cached_content_token_count,
            output_tokens=u.candidates_token_count, thinking_tokens=u.thoughts_token_count),
            today())
        stats = fake_gemini.stats()
        assert stats["spend_usd"] == pytest.approx(cost + stats["cache_usd"]["create"])
        with pytest.raises(errors.ClientError) as e:
            await c.models.generate_content(
                model=MODEL, contents="x", config=types.GenerateContentConfig(
                    cached_content=cache.name, system_instruction="again"))
        assert e.value.code == 400 and "system_instruction" in str(e.value)
        with pytest.raises(errors.ClientError) as e:
            await c.models.generate_content(
                model="gemini-3.5-flash-lite", contents="x",
                config=types.GenerateContentConfig(cached_content=cache.name))
        assert e.value.code == 400 and "has to be the same" in str(e.value)

    asyncio.run(go())


def test_caches_expire_on_the_fake_clock_and_can_be_extended(fake_gemini: FakeGemini) -> None:
    async def go() -> None:
        c = dev(fake_gemini)
        a = await c.caches.create(model=MODEL, config=cache_config(ttl="600s"))
        b = await c.caches.create(model=MODEL, config=cache_config(ttl="600s"))
        assert {x.name async for x in await c.caches.list(config={"page_size": 1})} == \
            {a.name, b.name}  # paged
        longer = await c.caches.update(name=b.name,
                                       config=types.UpdateCachedContentConfig(ttl="7200s"))
        assert longer.expire_time > b.expire_time
        assert post(fake_gemini, "/_fake/clock", {"advance_s": 3600})["offset_s"] == 3600
        with pytest.raises(errors.ClientError) as e:
            await c.caches.get(name=a.name)
        assert e.value.code == 403 and "CachedContent not found" in str(e.value)
        with pytest.raises(errors.ClientError):
            await c.models.generate_content(
                model=MODEL, contents="x",
                config=types.GenerateContentConfig(cached_content=a.name))
        assert (await c.caches.get(name=b.name)).name == b.name
        await c.caches.delete(name=b.name)
        stats = fake_gemini.stats()
        assert stats["caches"] == {"created": 2, "deleted": 1, "expired": 1, "patched": 1}
        assert stats["cache_usd"]["storage"] > 0  # an hour for each, at the table's price

    asyncio.run(go())


def test_vertex_cache_paths(fake_gemini: FakeGemini) -> None:
    async def go() -> None:
        c = vertex(fake_gemini)
        cache = await c.caches.create(model=MODEL, config=cache_config())
        assert cache.name.startswith("projects/proj/locations/global/cachedContents/")
        r = await c.models.generate_content(
            model=MODEL, contents="<submission>hi</submission>",
            config=types.GenerateContentConfig(cached_content=cache.name))
        assert r.usage_metadata.cached_content_token_count > 0
        await c.caches.delete(name=cache.name)
        paths = [x["path"] for x in fake_gemini.requests()]
        assert "/v1beta1/projects/proj/locations/global/cachedContents" in paths

    asyncio.run(go())


def test_files_resumable_upload_list_get_delete_and_48_hours(fake_gemini: FakeGemini) -> None:
    data = b"%PDF-1.4 " + bytes(range(256)) * 40_000  # 10 MB: two chunks
    async def go() -> None:
        c = dev(fake_gemini)
        f = await c.files.upload(file=io.BytesIO(data), config=types.UploadFileConfig(
            mime_type="application/pdf", display_name="grader-x"))
        assert f.size_bytes == len(data) and f.display_name == "grader-x"
        assert fake_gemini.file_bytes(f.name) == data
        assert [x.name async for x in await c.files.list()] == [f.name]
        assert (await c.files.get(name=f.name)).state == types.FileState.ACTIVE
        with pytest.raises(errors.ClientError) as e:  # uploaded files cannot be downloaded
            await c.files.download(file=f.name)
        assert e.value.code == 400
        # a request naming the file works until the file is 48 h old
        part = types.Part(file_data=types.FileData(file_uri=f.uri, mime_type="application/pdf"))
        await c.models.generate_content(model=MODEL, contents=[part, "grade"])
        fake_gemini.advance(hours=49)
        with pytest.raises(errors.ClientError) as e:
            await c.models.generate_content(model=MODEL, contents=[part, "grade"])
        assert e.value.code == 403 and "may not exist" in str(e.value)
        with pytest.raises(errors.ClientError):
            await c.files.get(name=f.name)
        g = await c.files.upload(file=io.BytesIO(b"abc"), config=types.UploadFileConfig(
            mime_type="text/plain"))
        await c.files.delete(name=g.name)
        stats = fake_gemini.stats()["files"]
        assert stats == {"uploaded": 2, "bytes": len(data) + 3, "deleted": 1, "expired": 1}
        uploads = [r for r in fake_gemini.requests() if r["endpoint"] == "files.upload"]
        assert len(uploads) == 3 + 2  # start + 2 chunks, start + 1 chunk

    asyncio.run(go())


def test_generated_files_download_and_faults_can_be_scripted(fake_gemini: FakeGemini) -> None:
    made = fake_gemini.put_file(b'{"key": "a"}\n', display_name="batch results")
    assert made["source"] == "GENERATED" and made["downloadUri"].endswith(":download?alt=media")

    async def go() -> None:
        c = dev(fake_gemini)
        assert await c.files.download(file=made["name"]) == b'{"key": "a"}\n'
        fake_gemini.inject_for("files.upload", "503")
        with pytest.raises(errors.ServerError):
            await c.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})
        await c.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})

    asyncio.run(go())
    post(fake_gemini, "/_fake/inject", {"endpoint": "cachedContents.create", "faults": ["500"]})
    with pytest.raises(errors.ServerError):
        asyncio.run(dev(fake_gemini).caches.create(model=MODEL, config=cache_config()))


def test_the_upload_protocol_checks_offsets_and_sizes(fake_gemini: FakeGemini) -> None:
    def call(url: str, headers: dict[str, str], body: bytes = b"") -> Any:
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"x-goog-api-key": "k", **headers})
        return urllib.request.urlopen(req, timeout=10)

    start = call(fake_gemini.url + "/upload/v1beta/files", {
        "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "6",
        "X-Goog-Upload-Header-Content-Type": "text/plain", "Content-Type": "application/json"},
        b'{"file": {"displayName": "t"}}')
    url = start.headers["X-Goog-Upload-URL"]
    assert start.headers["X-Goog-Upload-Status"] == "active"
    first = call(url, {"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}, b"abc")
    assert first.headers["X-Goog-Upload-Status"] == "active"
    query = call(url, {"X-Goog-Upload-Command": "query"})
    assert query.headers["X-Goog-Upload-Size-Received"] == "3"
    with pytest.raises(urllib.error.HTTPError) as e:  # not where the upload stands
        call(url, {"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "1"}, b"def")
    assert e.value.code == 400
    done = call(url, {"X-Goog-Upload-Command": "upload, finalize",
                      "X-Goog-Upload-Offset": "3"}, b"def")
    assert done.headers["X-Goog-Upload-Status"] == "final"
    name = json.loads(done.read())["file"]["name"]
    assert fake_gemini.file_bytes(name) == b"abcdef"


def test_vertex_requests_naming_gs_objects_are_checked_in_the_gcs_emulator(
        fake_gemini: FakeGemini, gcs_emulator: Any) -> None:
    fake_gemini.configure(storage_host=gcs_emulator.url)
    part = types.Part(file_data=types.FileData(file_uri="gs://grader-staging/a.pdf",
                                               mime_type="application/pdf"))

    async def go() -> None:
        c = vertex(fake_gemini)
        with pytest.raises(errors.ClientError) as e:
            await c.models.generate_content(model=MODEL, contents=[part, "grade"])
        assert e.value.code == 400 and "gs://grader-staging/a.pdf not found" in str(e.value)
        gcs_emulator.write("grader-staging", "a.pdf", b"%PDF-1.4", "application/pdf")
        assert gcs_emulator.objects("grader-staging") == ["a.pdf"]
        assert gcs_emulator.read("grader-staging", "a.pdf") == b"%PDF-1.4"
        await c.models.generate_content(model=MODEL, contents=[part, "grade"])

    asyncio.run(go())

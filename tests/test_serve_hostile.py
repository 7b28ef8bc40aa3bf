"""`vsr serve` under hostile and careless clients (issue #13): every case refused early, cheaply, and
without leaking paths; each test fails on the server before the hardening."""
import asyncio
import io
import json
import logging
import os
import subprocess
import threading
import time
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import starlette.formparsers
import torch
from clips import frame_image, make_clip
from clips import wait_for_job as _wait
from conftest import tiny_model
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import vsr.images as images_mod
from vsr.atomic import HOST
from vsr.config import ServeConfig, UpscaleConfig
from vsr.errors import VsrError
from vsr.inference import Upscaler
from vsr.pipeline import Engine, build_engine
from vsr.serve import create_app
from vsr.serve import batcher as batcher_mod
from vsr.serve import guard as guard_mod
from vsr.serve import jobs as jobs_mod
from vsr.serve import requests as rq

BASE = "http://127.0.0.1:8000"


def _engine() -> Engine:
    return Engine(Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32"), batch_size=4)


def _client(tmp_path: Path, meta: dict | None = None, base_url: str = BASE, **kw) -> TestClient:
    cfg = ServeConfig(workdir=str(tmp_path / "work"), **kw)
    return TestClient(create_app(_engine(), meta or {"name": "tiny"}, cfg), base_url=base_url)


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels (a decompression bomb when large)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- images: size from the header, before any decode -------------------------------------------

@pytest.mark.parametrize("kind", ["png-bomb", "jpeg"])
def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path, monkeypatch, kind: str):
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(images_mod.cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))  # vsr.images decodes
    big = _png_declaring(4000, 3000) if kind == "png-bomb" else cv2.imencode(".jpg", frame_image(0, 160, 120))[1].tobytes()
    name = "a.png" if kind == "png-bomb" else "a.jpg"
    with _client(tmp_path, max_pixels=10_000) as client:
        r = client.post("/v1/images", files={"file": (name, big, "image/png")})
        assert r.status_code == 413 and "pixels" in r.json()["detail"], r.text
        assert decoded == []  # the pixels were never decompressed
        small = _png(frame_image(0, 40, 30))  # negative control: within the limit, decoded and upscaled
        r = client.post("/v1/images", files={"file": ("b.png", small, "image/png")})
        assert r.status_code == 200 and decoded == [1]
    from PIL import Image
    assert Image.MAX_IMAGE_PIXELS == 10_000  # Pillow's own check set to match


# --- the ASGI admission layer -------------------------------------------------------------------

def _guard(app, limit: int = 100, **kw) -> guard_mod.Guard:
    args = dict(token=None, body_limit=lambda m, p, c: limit, allowed_hosts=None, allowed_origins=set(),
                public_paths={"/healthz"}, read_timeout=0.2) | kw
    return guard_mod.Guard(app, **args)


def _call(guard, receive, headers=()) -> list[dict]:
    """Run one HTTP request through ``guard``; returns the messages it sent to the client."""
    sent: list[dict] = []
    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": [(k.encode(), v.encode()) for k, v in headers]}

    async def send(m):
        sent.append(m)

    asyncio.run(guard(scope, receive, send))
    return sent


async def _reading_app(scope, receive, send):
    """An app that reads the whole body, then answers 200 with its length."""
    n = 0
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            raise RuntimeError("client went away")  # what Starlette does (ClientDisconnect)
        n += len(m.get("body", b""))
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(n).encode()})


def test_guard_counts_streamed_bytes_and_stops_reading():
    pulled = []

    async def endless_chunks():  # chunked transfer encoding: no Content-Length, bytes forever
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 30, "more_body": True}

    sent = _call(_guard(_reading_app, limit=100), endless_chunks)
    assert sent[0]["status"] == 413 and len(sent) == 2  # the app's answer to the disconnect was dropped
    assert len(pulled) == 4  # 120 bytes pulled: refused at the first chunk over the limit
    chunks = iter([b"x" * 30, b"x" * 30, b""])

    async def small():  # negative control: 60 bytes in three chunks pass
        b = next(chunks)
        return {"type": "http.request", "body": b, "more_body": bool(b)}

    sent = _call(_guard(_reading_app, limit=100), small)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"60"


def test_guard_refuses_a_declared_length_before_reading_and_times_out_stalled_bodies():
    async def never():
        raise AssertionError("the body must not be read")

    sent = _call(_guard(_reading_app, limit=100), never, headers=[("content-length", "101")])
    assert sent[0]["status"] == 413
    sent = _call(_guard(_reading_app, limit=100), never, headers=[("content-length", "1e9")])
    assert sent[0]["status"] == 400

    async def stalled():
        await asyncio.sleep(30)

    start = time.perf_counter()
    sent = _call(_guard(_reading_app, limit=100, read_timeout=0.2), stalled)
    assert sent[0]["status"] == 408 and time.perf_counter() - start < 5


def test_body_limits_follow_the_pixel_and_batch_limits(tmp_path: Path, monkeypatch):
    parsed = []
    real = rq.parse_json_instances
    monkeypatch.setattr(rq, "parse_json_instances", lambda *a: parsed.append(1) or real(*a))
    limits = rq.Limits(max_pixels=100, max_batch=2, max_video_bytes=1000)
    json_limit = limits.body_limit("POST", "/v1/predict", "application/json")
    assert json_limit == 2 * 100 * 3 * rq.JSON_BYTES_PER_VALUE + rq.ENVELOPE_BYTES
    assert limits.body_limit("POST", "/v1/predict", rq.NPY) < json_limit
    assert limits.body_limit("POST", "/v1/images", "multipart/form-data") == 100 * rq.IMAGE_BYTES_PER_PIXEL + rq.ENVELOPE_BYTES
    with _client(tmp_path, max_pixels=100, max_batch=2) as client:
        r = client.post("/v1/predict", content=b" " * (json_limit + 1), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["detail"] and parsed == []
        ok = {"instances": np.zeros((2, 10, 10, 3), int).tolist()}  # the largest request allowed fits
        assert client.post("/v1/predict", json=ok).status_code == 200 and parsed == [1]


def test_multipart_upload_is_not_spooled_without_the_token(tmp_path: Path, monkeypatch):
    spooled = []
    real = starlette.formparsers.SpooledTemporaryFile
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", lambda *a, **k: spooled.append(1) or real(*a, **k))
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    with _client(tmp_path, token="s3cret", queue_length=4) as client:
        for path in ("/v1/jobs", "/v1/images"):
            r = client.post(path, files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")},
                            headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
        assert spooled == [] and not list((tmp_path / "work" / "jobs").iterdir())
        r = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")},
                        headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 202 and spooled  # negative control: with the token it is read


def test_empty_token_is_refused_and_the_compare_is_constant_time(tmp_path: Path, monkeypatch, tiny_weights: Path):
    with pytest.raises(VsrError, match="empty"):
        create_app(_engine(), {}, ServeConfig(workdir=str(tmp_path), token=""))
    from vsr.cli import app as cli
    r = CliRunner().invoke(cli, ["serve", "--token", "", "--weights", str(tiny_weights), "--device", "cpu",
                                 "--workdir", str(tmp_path / "w")])
    assert r.exit_code == 1 and "--token is empty" in r.output
    compared = []
    real = guard_mod.hmac.compare_digest
    monkeypatch.setattr(guard_mod.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with _client(tmp_path, token="s3cret") as client:
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert compared == [1]


def test_host_origin_and_content_type(tmp_path: Path):
    body = json.dumps({"instances": np.zeros((1, 2, 2, 3), int).tolist()})
    with _client(tmp_path) as client:
        assert client.get("/healthz", headers={"host": "evil.example:8000"}).status_code == 400  # DNS rebinding
        for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
            assert client.get("/healthz", headers={"host": host}).status_code == 200, host
        r = client.post("/v1/predict", content=body, headers={"content-type": "text/plain"})  # a 'simple' CORS POST
        assert r.status_code == 415
        r = client.post("/v1/predict", content=body, headers={"content-type": "application/json",
                                                               "origin": "https://evil.example"})
        assert r.status_code == 403
        assert client.post("/v1/predict", content=body, headers={"content-type": "application/json"}).status_code == 200
    with _client(tmp_path, host="0.0.0.0", base_url="http://example.org") as client:  # bound in public on purpose
        assert client.get("/healthz").status_code == 200
    with _client(tmp_path, cors_origins=["http://app.example"]) as client:
        pre = client.options("/v1/predict", headers={"origin": "http://app.example", "access-control-request-method": "POST",
                                                     "access-control-request-headers": "content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://app.example"
        r = client.post("/v1/predict", content=body, headers={"content-type": "application/json", "origin": "http://app.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"


def test_docs_are_self_contained_declare_bearer_and_sit_behind_the_token(tmp_path: Path):
    with _client(tmp_path, token="s3cret") as client:
        assert client.get("/openapi.json").status_code == 401 and client.get("/docs").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        schema = client.get("/openapi.json", headers=auth).json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert {"HTTPBearer": []} in schema["paths"]["/v1/predict"]["post"]["security"]
        page = client.get("/docs", headers=auth)
        assert page.status_code == 200 and "/v1/jobs" in page.text
        assert "<script" not in page.text and "http" not in page.text.replace("openapi.json", "")  # nothing fetched
    with _client(tmp_path, docs=False) as client:
        assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


# --- off the event loop -------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["predict", "images"])
def test_healthz_answers_while_a_request_is_parsed(tmp_path: Path, monkeypatch, endpoint: str):
    name = "parse_json_instances" if endpoint == "predict" else "decode_image"
    real = getattr(rq, name)

    def slow(*a):  # stands for a large body: CPU-bound work holding whatever thread runs it
        time.sleep(1.5)
        return real(*a)

    monkeypatch.setattr(rq, name, slow)
    with _client(tmp_path) as client:
        def heavy():
            if endpoint == "predict":
                client.post("/v1/predict", json={"instances": np.zeros((1, 4, 4, 3), int).tolist()})
            else:
                client.post("/v1/images", files={"file": ("a.png", _png(frame_image(0, 8, 8)), "image/png")})

        t = threading.Thread(target=heavy)
        t.start()
        time.sleep(0.3)
        start = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        waited = time.perf_counter() - start
        t.join()
    assert waited < 0.6, f"/healthz waited {waited:.2f} s behind the parse"


# --- JSON and .npy bodies -----------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"instances": ' + b"9" * 5000 + b"}",
                                  b'{"instances": [[[[' + b"[" * 3000 + b"1" + b"]" * 3000 + b"]]]]}",
                                  b"\xff\xfe{}"])
def test_deep_nesting_and_huge_integers_are_400(tmp_path: Path, body: bytes):
    with _client(tmp_path) as client:
        r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "malformed JSON" in r.json()["detail"], r.text[:200]


def test_npy_bodies_in_and_out(tmp_path: Path):
    frames = np.random.default_rng(0).integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    np.save(buf, frames)
    with _client(tmp_path, max_pixels=1000) as client:
        as_json = np.array(client.post("/v1/predict", json={"instances": frames.tolist()}).json()["predictions"])
        r = client.post("/v1/predict", content=buf.getvalue(),
                        headers={"content-type": rq.NPY, "accept": rq.NPY})
        assert r.status_code == 200 and r.headers["content-type"] == rq.NPY
        out = np.load(io.BytesIO(r.content), allow_pickle=False)
        assert out.dtype == np.uint8 and out.shape == (2, 24, 20, 3) and np.array_equal(out, as_json)
        assert len(r.content) < len(json.dumps(as_json.tolist())) / 3
        floats = io.BytesIO()
        np.save(floats, (frames / 255).astype(np.float32))
        r = client.post("/v1/predict", content=floats.getvalue(), headers={"content-type": rq.NPY})
        assert r.status_code == 200 and r.json()["range"] == "0-1"  # .npy in, JSON out when not asked otherwise
        pickled = io.BytesIO()
        np.save(pickled, np.array([[[[{"a": 1}]]]], dtype=object), allow_pickle=True)
        r = client.post("/v1/predict", content=pickled.getvalue(), headers={"content-type": rq.NPY})
        assert r.status_code == 422 and "object" in r.json()["detail"]
        header = io.BytesIO()  # a header announcing a huge array, with no data behind it
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (1, 100_000, 100_000, 3)})
        r = client.post("/v1/predict", content=header.getvalue(), headers={"content-type": rq.NPY})
        assert r.status_code == 413 and "pixels" in r.json()["detail"]


# --- uploads: an allow-list, a fixed output container, no orphans, no paths ------------------------

@pytest.mark.parametrize("name", ["x.txt", "x.png", "run.sh", "x." + "a" * 300, "x.mp4\x00.sh", "list.m3u8", "noext"])
def test_job_upload_names_outside_the_allow_list_are_415(tmp_path: Path, name: str):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    with _client(tmp_path) as client:
        r = client.post("/v1/jobs", files={"file": (name, clip.read_bytes(), "video/mp4")})
        assert r.status_code == 415 and "unsupported file type" in r.json()["detail"], r.text
        assert str(tmp_path) not in r.text and len(r.json()["detail"]) < 200
        assert not list((tmp_path / "work" / "jobs").iterdir())


def test_upload_content_must_match_its_name_and_results_are_matroska(tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    hls = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    with _client(tmp_path) as client:
        for name, data in (("in.mkv", clip.read_bytes()), ("in.mp4", hls), ("in.avi", b"RIFF" + b"\x00" * 64)):
            r = client.post("/v1/jobs", files={"file": (name, data, "video/mp4")})
            assert r.status_code == 415 and str(tmp_path) not in r.text, (name, r.text)
        r = client.post("/v1/images", files={"file": ("a.jpg", _png(frame_image(0, 8, 8)), "image/jpeg")})
        assert r.status_code == 415 and "PNG, not JPEG" in r.json()["detail"]
        assert not list((tmp_path / "work" / "jobs").iterdir())
        job = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}).json()
        assert _wait(client, job["id"])["status"] == "done"
        r = client.get(f"/v1/jobs/{job['id']}/result")
        assert r.headers["content-disposition"].endswith('_x4.mkv"')
        with av.open(io.BytesIO(r.content)) as c:
            assert "matroska" in c.format.name


def test_failed_job_error_has_no_paths_or_pids(tmp_path: Path, monkeypatch):
    def broken(self, src, dst, **kw):
        raise VsrError(f"{src}: decode failed writing {dst.parent}/.result.vsr-tmp-{HOST}-{os.getpid()}.mkv")

    monkeypatch.setattr(Engine, "upscale_video", broken)
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    with _client(tmp_path) as client:
        job = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}).json()
        job = _wait(client, job["id"])
    assert job["status"] == "failed" and "input.mp4: decode failed writing result.mkv" == job["error"]
    assert str(tmp_path) not in job["error"] and str(os.getpid()) not in job["error"]


def test_models_do_not_leak_paths(tmp_path: Path):
    meta = {"name": "tiny", "file": "/secret/place/tiny.pt", "init_train_config": {"data": ["/work/shared/x"]},
            "train_config": {"val": "/work/y"}, "note": "trained on CPU"}
    with _client(tmp_path, meta=meta) as client:
        r = client.get("/v1/models")
    assert r.json()["models"][0]["file"] == "tiny.pt" and r.json()["models"][0]["note"] == "trained on CPU"
    assert "/secret" not in r.text and "/work" not in r.text


# --- the batcher --------------------------------------------------------------------------------

def test_batcher_survives_cancelled_requests_and_healthz_sees_a_dead_one(tmp_path: Path, monkeypatch):
    up = _engine().upscaler
    b = batcher_mod.Batcher(up, window_ms=1, max_frames=8, queue_length=8)  # not started: steps by hand
    frames = np.zeros((1, 4, 4, 3), np.uint8)
    gone, kept = b.submit(frames), b.submit(frames)
    assert gone.cancel()  # the client disconnected before the batch ran
    b.step([b.queue.get(), b.queue.get()])  # the old loop died here with InvalidStateError
    assert gone.cancelled() and kept.result(timeout=1).shape == (1, 16, 16, 3)
    with batcher_mod.Batcher(up, window_ms=50, max_frames=8, queue_length=8) as running:
        for _ in range(3):
            running.submit(frames).cancel()
        assert running.submit(frames).result(timeout=10).shape == (1, 16, 16, 3) and running.alive
    monkeypatch.setattr(batcher_mod.Batcher, "_loop", lambda self: None)  # a batcher thread that stopped
    with _client(tmp_path) as client:
        time.sleep(0.1)
        r = client.get("/healthz")
        assert r.status_code == 503 and r.json()["stopped"] == ["batcher"]


def test_model_calls_never_overlap():
    inside, overlaps = [0], []

    class Probe:
        device, scale = torch.device("cpu"), 4

        def upscale(self, frames, **kw):
            inside[0] += 1
            overlaps.append(inside[0] > 1)
            time.sleep(0.01)
            inside[0] -= 1
            return frames

    serial = batcher_mod.SerialUpscaler(Probe())
    threads = [threading.Thread(target=lambda: [serial.upscale(None) for _ in range(5)]) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(overlaps) == 20 and not any(overlaps)
    assert serial.scale == 4


# --- the job table ------------------------------------------------------------------------------

def test_claim_is_atomic_and_cancel_never_races_a_start(tmp_path: Path):
    with jobs_mod.JobStore(tmp_path / "work") as store:
        for i in range(40):
            store.folder(f"j{i:02d}").mkdir()
            store.create(f"j{i:02d}", "input.mp4", 1, max_queued=100)
        claimed: list[str] = []
        cancelled: list[str] = []

        def claimer():
            while (job := store.claim()) is not None:
                claimed.append(job["id"])

        def canceller():
            for i in range(40):
                if store.cancel_queued(f"j{i:02d}"):
                    cancelled.append(f"j{i:02d}")

        threads = [threading.Thread(target=claimer) for _ in range(3)] + [threading.Thread(target=canceller)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert len(claimed) == len(set(claimed)) and not set(claimed) & set(cancelled)
        assert sorted(claimed + cancelled) == [f"j{i:02d}" for i in range(40)]
        assert all(store.get(j)["status"] == "running" for j in claimed)
        with pytest.raises(jobs_mod.QueueFull):
            store.create("late", "input.mp4", 1, max_queued=0)


def test_finished_jobs_are_deleted_with_their_files_and_expire(tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    with _client(tmp_path) as client:
        job = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}).json()
        assert _wait(client, job["id"])["status"] == "done"
        folder = tmp_path / "work" / "jobs" / job["id"]
        assert (folder / "result.mkv").is_file()
        assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "deleted"
        assert not folder.exists() and client.get(f"/v1/jobs/{job['id']}").status_code == 404
    with _client(tmp_path / "short", keep_results_hours=0.5 / 3600) as client:  # kept half a second
        job = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}).json()
        _wait(client, job["id"])
        end = time.time() + 10
        while client.get(f"/v1/jobs/{job['id']}").status_code != 404 and time.time() < end:
            time.sleep(0.1)
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert not (tmp_path / "short" / "work" / "jobs" / job["id"]).exists()


def test_restart_removes_dead_temps_and_orphans_and_logs_it(tmp_path: Path, caplog):
    with jobs_mod.JobStore(tmp_path / "work") as store:
        store.folder("j1").mkdir()
        make_clip(store.folder("j1") / "input.mp4", frames=2)
        store.create("j1", "input.mp4", 2, max_queued=1)
        store.update("j1", status="running")  # as if the server was killed mid-job
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / "work" / "jobs" / "j1" / f".result.vsr-tmp-{HOST}-{dead.pid}.mkv"
    stale.write_bytes(b"half a video")
    orphan = tmp_path / "work" / "jobs" / "orphan"  # a folder whose row was never written
    orphan.mkdir()
    caplog.set_level(logging.INFO, logger="vsr.serve")
    with _client(tmp_path) as client:
        assert not stale.exists() and not orphan.exists()
        assert _wait(client, "j1")["status"] == "done"
        client.get("/healthz")
    assert "1 interrupted job(s) queued again, 1 orphan folder(s) and 1 stale temp file(s) removed" in caplog.text
    assert "GET /healthz 200" in caplog.text


# --- issue #12: a job computes what `vsr upscale` computes -----------------------------------------

def _decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_job_output_equals_the_cli_with_requests_running_beside_it(tmp_path: Path, tiny_weights: Path):
    from vsr.cli import app as cli

    clip = make_clip(tmp_path / "in.mp4", frames=10, width=48, height=32)
    r = CliRunner().invoke(cli, ["upscale", str(clip), "-o", str(tmp_path / "cli.mkv"), "--weights", str(tiny_weights),
                                 "--device", "cpu", "--precision", "fp32", "-q"])
    assert r.exit_code == 0, r.output
    engine, _, _ = build_engine(UpscaleConfig(weights=str(tiny_weights), device="cpu", precision="fp32"))
    cfg = ServeConfig(workdir=str(tmp_path / "work"), batch_window_ms=2)
    with TestClient(create_app(engine, {"name": "tiny"}, cfg), base_url=BASE) as client:
        stop = threading.Event()

        def requests():  # other clients' frames, of another size, batched beside the job
            x = {"instances": np.random.default_rng(1).integers(0, 256, (2, 20, 12, 3)).tolist()}
            while not stop.is_set():
                assert client.post("/v1/predict", json=x).status_code == 200

        threads = [threading.Thread(target=requests) for _ in range(2)]
        [t.start() for t in threads]
        job = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}).json()
        job = _wait(client, job["id"])
        stop.set()
        [t.join() for t in threads]
        assert job["status"] == "done"
        (tmp_path / "job.mkv").write_bytes(client.get(f"/v1/jobs/{job['id']}/result").content)
    served, direct = _decoded(tmp_path / "job.mkv"), _decoded(tmp_path / "cli.mkv")
    assert served.shape == (10, 128, 192, 3) and np.array_equal(served, direct)


def test_cli_wires_the_options_and_refuses_an_empty_env_token(tmp_path: Path, monkeypatch, tiny_weights: Path):
    import uvicorn

    from vsr.cli import app as cli

    seen = {}

    def run(server, sockets):
        seen.update(timeout_keep_alive=server.config.timeout_keep_alive, host=server.config.host,
                    app=server.config.app, sockets=sockets)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    args = ["serve", "--weights", str(tiny_weights), "--device", "cpu", "--workdir", str(tmp_path / "w"),
            "--cors-origin", "http://a.example", "--cors-origin", "http://b.example", "--no-docs", "--port", "0"]
    r = CliRunner().invoke(cli, args, env={"VSR_TOKEN": "from-env"})
    assert r.exit_code == 0, r.output
    assert seen["timeout_keep_alive"] == ServeConfig().keep_alive_s and seen["host"] == "127.0.0.1"
    assert seen["sockets"][0].fileno() == -1  # the listening socket was closed when the server returned
    with TestClient(seen["app"], base_url=BASE) as client:  # slow clients: keep-alive closed; token from the env
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200
        assert client.get("/openapi.json", headers={"Authorization": "Bearer from-env"}).status_code == 404
        pre = client.options("/v1/predict", headers={"origin": "http://b.example", "access-control-request-method": "POST"})
        assert pre.headers["access-control-allow-origin"] == "http://b.example"
    r = CliRunner().invoke(cli, args, env={"VSR_TOKEN": ""})
    assert r.exit_code == 1 and "--token is empty" in r.output

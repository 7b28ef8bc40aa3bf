"""`vsr serve`: every endpoint and error in-process, a restart with jobs queued, a real server over
loopback, and a bounded concurrent load test with and without dynamic batching."""
import http.client
import json
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from clips import frame_image, make_clip, probe
from clips import wait_for_job as _wait
from conftest import tiny_model, tiny_temporal
from fastapi.testclient import TestClient

from vsr.inference import Upscaler
from vsr.pipeline import Engine
from vsr.serve import ServeConfig, create_app
from vsr.serve import batcher as batcher_mod
from vsr.serve import jobs as jobs_mod
from vsr.video import EncodeSettings


BASE = "http://127.0.0.1:8000"  # the Host a loopback-bound server answers to


def _engine() -> Engine:
    return Engine(Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32"), batch_size=4)


def _client(tmp_path: Path, **kw) -> TestClient:
    cfg = ServeConfig(workdir=str(tmp_path / "work"), **kw)
    return TestClient(create_app(_engine(), {"name": "tiny"}, cfg), base_url=BASE)


def test_predict_uint8_and_float_match_the_upscaler(tmp_path: Path):
    frames = np.random.default_rng(0).integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    expected = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32").upscale(frames)
    with _client(tmp_path) as client:
        r = client.post("/v1/predict", json={"instances": frames.tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dtype"] == "uint8" and body["range"] == "0-255" and body["shape"] == [2, 24, 20, 3]
        assert np.abs(np.array(body["predictions"]) - expected.astype(int)).max() <= 1
        r = client.post("/v1/predict", json={"instances": (frames / 255.0).tolist()})
        pred = np.array(r.json()["predictions"])
        assert r.json()["range"] == "0-1" and 0 <= pred.min() and pred.max() <= 1
        assert np.abs(pred * 255 - expected).max() <= 1.0


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "malformed JSON"),
    (json.dumps({"inputs": []}).encode(), 422, "instances"),
    (json.dumps({"instances": [[1, 2, 3]]}).encode(), 422, "4-D"),
    (json.dumps({"instances": np.zeros((1, 4, 4, 4)).tolist()}).encode(), 422, "3 channels"),
    (json.dumps({"instances": np.full((1, 4, 4, 3), 300).tolist()}).encode(), 422, "0-255"),
    (json.dumps({"instances": np.full((1, 4, 4, 3), 1.5).tolist()}).encode(), 422, "0-1"),
    (json.dumps({"instances": np.zeros((5, 4, 4, 3), int).tolist()}).encode(), 413, "instances is over"),
    (json.dumps({"instances": np.zeros((1, 40, 40, 3), int).tolist()}).encode(), 413, "pixels"),
])
def test_predict_rejects_bad_input(tmp_path: Path, body: bytes, status: int, words: str):
    with _client(tmp_path, max_batch=4, max_pixels=1000) as client:
        r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status and words in r.json()["detail"], r.text


def test_token(tmp_path: Path):
    with _client(tmp_path, token="s3cret") as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/v1/models")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cre"}).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        models = client.get("/v1/models", headers=auth).json()["models"]
        assert models[0]["name"] == "tiny" and models[0]["scale"] == 4
        ok = {"instances": np.zeros((1, 3, 3, 3), int).tolist()}
        assert client.post("/v1/predict", json=ok, headers=auth).status_code == 200


def test_images_endpoint(tmp_path: Path):
    ok, png = cv2.imencode(".png", frame_image(0, 10, 8))
    with _client(tmp_path) as client:
        r = client.post("/v1/images", files={"file": ("a.png", png.tobytes(), "image/png")})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).shape == (32, 40, 3)
        r = client.post("/v1/images", files={"file": ("a.png", b"not an image", "image/png")})
        assert r.status_code == 415 and "not an image" in r.json()["detail"]
        assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_video_job_lifecycle(tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", frames=8)
    with _client(tmp_path) as client:
        r = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")})
        assert r.status_code == 202, r.text
        job = _wait(client, r.json()["id"])
        assert job["status"] == "done" and job["frames_done"] == 8 and job["progress"] == 1.0
        r = client.get(f"/v1/jobs/{job['id']}/result")
        assert r.status_code == 200
        (tmp_path / "out.mkv").write_bytes(r.content)
        out = probe(tmp_path / "out.mkv")
        assert out["frames"] == 8 and (out["width"], out["height"]) == (128, 96) and out["audio_codec"] == "aac"
        bad = client.post("/v1/jobs", files={"file": ("x.mp4", b"hello" * 100, "video/mp4")})
        assert bad.status_code == 415 and "not a readable media file" in bad.json()["detail"]
        assert client.get("/v1/jobs/nope").status_code == 404


def test_jobs_survive_a_restart_and_can_be_cancelled(tmp_path: Path, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", frames=6)
    cfg = ServeConfig(workdir=str(tmp_path / "work"))
    run_jobs = jobs_mod.JobWorker._loop
    monkeypatch.setattr(jobs_mod.JobWorker, "_loop", lambda self: self._stop.wait())  # a server that never gets to them
    with TestClient(create_app(_engine(), {"name": "tiny"}, cfg), base_url=BASE) as first:
        ids = [first.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}).json()["id"]
               for _ in range(2)]
        assert first.delete(f"/v1/jobs/{ids[1]}").json()["status"] == "cancelled"
        assert first.get(f"/v1/jobs/{ids[0]}").json()["status"] == "queued"
    monkeypatch.setattr(jobs_mod.JobWorker, "_loop", run_jobs)
    with TestClient(create_app(_engine(), {"name": "tiny"}, cfg), base_url=BASE) as restarted:  # a new server, same workdir
        assert _wait(restarted, ids[0])["status"] == "done"
        assert restarted.get(f"/v1/jobs/{ids[1]}").json()["status"] == "cancelled"
        assert restarted.get(f"/v1/jobs/{ids[1]}/result").status_code == 409


def test_job_queue_and_upload_limits(tmp_path: Path, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", frames=4)
    monkeypatch.setattr(jobs_mod.JobWorker, "_loop", lambda self: self._stop.wait())  # jobs stay queued
    with _client(tmp_path, queue_length=1) as client:
        files = {"file": ("in.mp4", clip.read_bytes(), "video/mp4")}
        assert client.post("/v1/jobs", files=files).status_code == 202
        r = client.post("/v1/jobs", files=files)
        assert r.status_code == 429 and "queue is full" in r.json()["detail"]
    with _client(tmp_path / "small", max_upload_mb=0.001) as client:
        r = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")})
        assert r.status_code == 413 and not list((tmp_path / "small" / "work" / "jobs").iterdir())


def test_batcher_queue_full_is_429(tmp_path: Path, monkeypatch):
    batcher = batcher_mod.Batcher(_engine().upscaler, window_ms=1, max_frames=8, queue_length=1)  # never started
    batcher.submit(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(batcher_mod.Busy):
        batcher.submit(np.zeros((1, 4, 4, 3), np.uint8))

    def busy(self, frames):
        raise batcher_mod.Busy

    monkeypatch.setattr(batcher_mod.Batcher, "submit", busy)
    with _client(tmp_path) as client:
        r = client.post("/v1/predict", json={"instances": np.zeros((1, 4, 4, 3), int).tolist()})
        assert r.status_code == 429 and "retry" in r.json()["detail"]


def test_cancel_a_running_job(tmp_path: Path):
    clip = make_clip(tmp_path / "long.mp4", frames=120)
    with _client(tmp_path) as client:
        job_id = client.post("/v1/jobs", files={"file": ("long.mp4", clip.read_bytes(), "video/mp4")}).json()["id"]
        _wait(client, job_id, until=("running",))
        client.delete(f"/v1/jobs/{job_id}")
        assert _wait(client, job_id)["status"] == "cancelled"
        assert not (tmp_path / "work" / "jobs" / job_id).exists()


def test_running_job_interrupted_by_restart_is_run_again(tmp_path: Path):
    with jobs_mod.JobStore(tmp_path / "work") as store:
        store.folder("j1").mkdir(parents=True)
        make_clip(store.folder("j1") / "input.mp4", frames=4)
        store.create("j1", "input.mp4", 4, max_queued=1)
        store.update("j1", status="running", frames_done=2)  # as if the server died mid-job
    with _client(tmp_path) as client:
        job = _wait(client, "j1")
        assert job["status"] == "done" and "restart" in job["note"]


def _decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_a_temporal_model_serves_jobs_as_vsr_upscale_does_and_pictures_as_stills(tmp_path: Path):
    """A video job of a temporal model goes through its segments side by side with the state carried (the file
    `vsr upscale`'s engine writes, not per-frame pictures); the pictures of /v1/predict are fresh one-frame streams."""
    def temporal_engine(model: torch.nn.Module) -> Engine:
        return Engine(Upscaler(model, device=torch.device("cpu"), precision="fp32"), batch_size=3, segment_seconds=0.5)

    frames = np.random.default_rng(2).integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    stills = Upscaler(tiny_temporal(), device=torch.device("cpu"), precision="fp32").upscale_stills(frames)
    clip = make_clip(tmp_path / "in.mp4", frames=14)  # 12 fps: segments of about 0.5 s, run side by side
    cfg = ServeConfig(workdir=str(tmp_path / "work"))
    with TestClient(create_app(temporal_engine(tiny_temporal()), {"name": "rec"}, cfg), base_url=BASE) as client:
        assert client.get("/v1/models").json()["models"][0]["temporal"] is True
        r = client.post("/v1/predict", json={"instances": frames.tolist()})
        assert r.status_code == 200, r.text
        assert np.abs(np.array(r.json()["predictions"]) - stills.astype(int)).max() <= 1
        r = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}, data={"codec": "ffv1"})
        assert r.status_code == 202, r.text
        job = _wait(client, r.json()["id"])
        assert job["status"] == "done" and job["frames_done"] == 14, job
        (tmp_path / "job.mkv").write_bytes(client.get(f"/v1/jobs/{job['id']}/result").content)
    settings = EncodeSettings(codec="ffv1")
    temporal_engine(tiny_temporal()).like(settings=settings).upscale_video(clip, tmp_path / "cli.mkv")
    temporal_engine(tiny_model()).like(settings=settings).upscale_video(clip, tmp_path / "plain.mkv")  # its core alone
    got, cli, plain = (_decoded(tmp_path / f"{n}.mkv") for n in ("job", "cli", "plain"))
    assert got.shape == cli.shape == (14, 96, 128, 3)
    assert np.abs(got.astype(int) - cli).max() <= 1
    assert np.abs(got[1:].astype(int) - plain[1:]).max() > 3  # the state was carried: not per-frame pictures
    assert probe(tmp_path / "job.mkv")["audio_codec"] == "aac"


@pytest.mark.slow
def test_real_server_over_loopback_and_load(tmp_path: Path, tiny_weights: Path):
    """`vsr serve` in a subprocess on a free loopback port: 8 concurrent clients x 20 requests, every answer
    checked, with and without dynamic batching (the figures for the full model are in benchmarks/RESULTS.md)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from serve_load import load, server

    frames = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    expected = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32").upscale(frames).astype(int)
    common = ["--weights", str(tiny_weights), "--precision", "fp32", "--device", "cpu"]
    rates = {}
    for label, window, frames_per_batch in (("batching", "20", "8"), ("no batching", "0", "1")):
        with server([*common, "--batch-window-ms", window, "--max-batch-frames", frames_per_batch],
                    str(tmp_path / label)) as url:
            assert json.loads(urllib.request.urlopen(url + "/healthz").read())["status"] == "ok"
            rates[label] = load(url, frames, expected, clients=8, requests=20)
            if label == "batching":
                _hostile_over_a_real_socket(int(url.rsplit(":", 1)[1]))
    print("load test, 8 clients x 20 requests of 1x16x16x3, tiny model, CPU fp32: "
          + ", ".join(f"{k} {v:.1f} req/s" for k, v in rates.items()))


def _hostile_over_a_real_socket(port: int) -> None:
    """What TestClient cannot show: refusals on a real connection, before the body is sent."""
    def ask(method: str, path: str, headers: dict, body: bytes | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host="host" in headers)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            return conn.getresponse().status
        finally:
            conn.close()

    start = time.perf_counter()  # a 100 GB body is announced, none of it sent: refused from the headers
    assert ask("POST", "/v1/predict", {"content-type": "application/json", "content-length": str(100 << 30)}) == 413
    assert time.perf_counter() - start < 5
    assert ask("GET", "/healthz", {"host": "evil.example"}) == 400
    assert ask("GET", "/healthz", {"host": f"localhost:{port}"}) == 200
    deep = b"[" * 100_000 + b"]" * 100_000
    assert ask("POST", "/v1/predict", {"content-type": "application/json", "content-length": str(len(deep))}, deep) == 400

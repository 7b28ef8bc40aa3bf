"""The endpoints behind the web page (issue #18), usable by any client: the job list, per-job encoder options,
previews of a finished job (result frame and bicubic input frame at the same size), a thumbnail, the page
itself, and the model's description; all behind the same token and input checks as the rest."""
import io
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from clips import make_clip, probe
from clips import wait_for_job as _wait
from conftest import tiny_model
from fastapi.testclient import TestClient
from PIL import Image

from vsr.cli.serve import bind, page_url
from vsr.errors import VsrError
from vsr.inference import Upscaler
from vsr.pipeline import Engine
from vsr.serve import ServeConfig, create_app
from vsr.serve import jobs as jobs_mod
from vsr.serve import previews
from vsr.video import Frame, VideoReader
from vsr.weights import SHIPPED

BASE = "http://127.0.0.1:8000"
AUTH = {"Authorization": "Bearer s3cret"}


def _client(tmp_path: Path, meta: dict | None = None, base_url: str = BASE, **kw) -> TestClient:
    cfg = ServeConfig(workdir=str(tmp_path / "work"), **kw)
    engine = Engine(Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32"), batch_size=4)
    return TestClient(create_app(engine, meta or {"name": "tiny"}, cfg), base_url=base_url)


def _frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [item.image for item in reader if isinstance(item, Frame)]


def _png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def _upload(client: TestClient, clip: Path, name: str = "in.mp4", headers: dict | None = None, **fields) -> dict:
    r = client.post("/v1/jobs", files={"file": (name, clip.read_bytes(), "video/mp4")}, data=fields, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def test_previews_thumbnail_and_list_of_a_finished_job(tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", frames=8, width=40, height=24)
    with _client(tmp_path) as client:
        job = _wait(client, _upload(client, clip, name="../holiday clip.mp4")["id"])
        assert job["status"] == "done" and job["name"] == "holiday clip.mp4" and job["eta_s"] is None
        listed = client.get("/v1/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]] and listed[0]["status"] == "done"
        r = client.get(f"/v1/jobs/{job['id']}/result")
        assert r.headers["content-disposition"].endswith("holiday%20clip_x4.mkv")  # the upload's name, not the id
        (tmp_path / "out.mkv").write_bytes(r.content)
        outputs, inputs = _frames(tmp_path / "out.mkv"), _frames(clip)
        for index in (0, 5, 7):  # every frame is its own: the frames move, so a wrong index shows
            result = _png(client.get(f"/v1/jobs/{job['id']}/preview", params={"frame": index}).content)
            assert np.array_equal(result, outputs[index])
            r = client.get(f"/v1/jobs/{job['id']}/preview", params={"frame": index, "kind": "bicubic"})
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            before = _png(r.content)
            assert before.shape == result.shape == (96, 160, 3)
            assert np.array_equal(before, previews.bicubic(inputs[index], 4))
            assert not np.array_equal(before, previews.bicubic(inputs[index - 1], 4))
        r = client.get(f"/v1/jobs/{job['id']}/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        thumb = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
        assert thumb.shape == (24, 40, 3) and np.abs(thumb.astype(int) - inputs[0]).mean() < 8


def test_thumbnail_is_scaled_down_to_160_pixels(tmp_path: Path):
    clip = make_clip(tmp_path / "wide.mp4", frames=1, width=320, height=120)
    data = previews.thumbnail(clip)
    assert Image.open(io.BytesIO(data)).size == (160, 60)


@pytest.mark.parametrize("params, status, words", [
    ({"frame": "8"}, 422, "from 0 to 7"),
    ({"frame": "-1"}, 422, "from 0 to 7"),
    ({"frame": "two"}, 422, "whole number"),
    ({"frame": "9" * 40}, 422, "whole number"),
    ({"kind": "input"}, 422, "result, bicubic"),
])
def test_preview_refuses_a_bad_frame_or_kind(tmp_path: Path, params: dict, status: int, words: str):
    clip = make_clip(tmp_path / "in.mp4", frames=8)
    with _client(tmp_path) as client:
        job = _wait(client, _upload(client, clip)["id"])
        r = client.get(f"/v1/jobs/{job['id']}/preview", params=params)
        assert r.status_code == status and words in r.json()["detail"], r.text
        assert client.get(f"/v1/jobs/{job['id']}/preview", params={"frame": "7"}).status_code == 200  # control


def test_previews_need_a_finished_job_and_its_files(tmp_path: Path, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", frames=4)
    monkeypatch.setattr(jobs_mod.JobWorker, "_loop", lambda self: self._stop.wait())  # jobs stay queued
    with _client(tmp_path) as client:
        job = _upload(client, clip)
        r = client.get(f"/v1/jobs/{job['id']}/preview")
        assert r.status_code == 409 and "queued, not done" in r.json()["detail"]
        assert client.get(f"/v1/jobs/{job['id']}/thumbnail").status_code == 200  # the input is there already
        assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        r = client.get(f"/v1/jobs/{job['id']}/thumbnail")
        assert r.status_code == 409 and "removed" in r.json()["detail"]
        for path in ("/v1/jobs/nope/preview", "/v1/jobs/nope/thumbnail"):
            r = client.get(path)
            assert r.status_code == 404 and "no job" in r.json()["detail"]


def test_new_endpoints_sit_behind_the_token_but_the_page_does_not(tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", frames=4)
    with _client(tmp_path, token="s3cret") as client:
        client.headers.update(AUTH)
        job = _wait(client, _upload(client, clip)["id"])
        del client.headers["Authorization"]
        for path in ("/v1/jobs", f"/v1/jobs/{job['id']}/preview", f"/v1/jobs/{job['id']}/thumbnail"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=AUTH).status_code == 200, path
        page = client.get("/")  # a browser cannot send a token with a navigation: the page asks for it
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for asset, media in (("/web/app.js", "text/javascript"), ("/web/app.css", "text/css")):
            r = client.get(asset)
            assert r.status_code == 200 and r.headers["content-type"].startswith(media), asset
            assert "default-src 'self'" in r.headers["content-security-policy"]
        assert client.get("/web/other.js").status_code == 401  # only the page's own files are public


def test_the_page_loads_nothing_from_elsewhere(tmp_path: Path):
    with _client(tmp_path) as client:
        texts = [client.get(p).text for p in ("/", "/web/app.js", "/web/app.css")]
    assert 'src="/web/app.js"' in texts[0] and 'href="/web/app.css"' in texts[0]
    for text in texts:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), "an external URL in the page"
        assert "@import" not in text


def test_models_describe_shipped_weights_encoders_and_limits(tmp_path: Path):
    shipped = {"name": "srresnet-mse", "file": str(SHIPPED["srresnet-mse"].path)}
    with _client(tmp_path, meta=shipped, max_upload_mb=2) as client:
        body = client.get("/v1/models").json()
    model = body["models"][0]
    assert model["file"] == "srresnet-mse.pt" and "MSE" in model["description"]
    assert model["psnr"] == {"Set5": 31.10, "Set14": 27.84, "Vid4": 24.98}
    assert body["encoders"]["libx264"] == {"crf": [0, 51], "default_crf": 18}
    assert body["encoders"]["ffv1"]["crf"] is None
    assert body["limits"]["max_upload_bytes"] == 2 * 1024 * 1024
    with _client(tmp_path / "other", meta={"name": "srresnet-mse", "file": str(tmp_path / "mine.pt")}) as client:
        model = client.get("/v1/models").json()["models"][0]  # same name, another file: no borrowed figures
    assert "psnr" not in model and "description" not in model


@pytest.mark.parametrize("fields, words", [
    ({"codec": "libfoo"}, "not offered"),
    ({"codec": "ffv1", "crf": "10"}, "lossless"),
    ({"crf": "52"}, "from 0 to 51 for libx264"),  # the input is H.264: x264's range applies
    ({"codec": "libvpx-vp9", "crf": "64"}, "from 0 to 63"),
    ({"crf": "1e3"}, "whole number"),
])
def test_job_options_are_checked(tmp_path: Path, fields: dict, words: str):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    with _client(tmp_path) as client:
        r = client.post("/v1/jobs", files={"file": ("in.mp4", clip.read_bytes(), "video/mp4")}, data=fields)
        assert r.status_code == 422 and words in r.json()["detail"], r.text
        assert not list((tmp_path / "work" / "jobs").iterdir())  # nothing kept of a refused upload


def test_job_options_choose_the_encoder(tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", frames=4)
    with _client(tmp_path) as client:
        lossless = _wait(client, _upload(client, clip, codec="ffv1")["id"])
        default = _wait(client, _upload(client, clip, crf="40")["id"])
        assert lossless["options"] == {"codec": "ffv1", "crf": None} and default["options"]["crf"] == 40
        for job, codec in ((lossless, "ffv1"), (default, "h264")):
            assert job["status"] == "done", job
            (tmp_path / "out.mkv").write_bytes(client.get(f"/v1/jobs/{job['id']}/result").content)
            out = probe(tmp_path / "out.mkv")
            assert out["codec"] == codec and out["frames"] == 4


def test_a_job_table_from_before_gets_the_new_columns(tmp_path: Path):
    (tmp_path / "work").mkdir()
    db = sqlite3.connect(tmp_path / "work" / "jobs.sqlite")
    db.execute("""CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, filename TEXT NOT NULL,
                  frames_done INTEGER DEFAULT 0, frames_total INTEGER DEFAULT 0, fps REAL DEFAULT 0, error TEXT,
                  note TEXT, created REAL NOT NULL, updated REAL NOT NULL)""")
    db.execute("INSERT INTO jobs (id, status, filename, created, updated) VALUES ('old', 'done', 'input.mp4', 1, 1)")
    db.commit()
    db.close()
    with jobs_mod.JobStore(tmp_path / "work") as store:
        view = jobs_mod.job_view(store.get("old"))
        assert view["name"] == "" and view["options"] == {"codec": None, "crf": None}
        store.create("new", "input.mp4", 3, max_queued=5, name="a.mp4")
        assert [j["id"] for j in store.list()] == ["new", "old"]


def test_progress_is_written_by_time_not_by_frame_count(tmp_path: Path, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", frames=12)
    seen = []
    real = jobs_mod.JobStore.update

    def update(self, job_id, **fields):
        if "frames_done" in fields and fields.get("status") is None:
            seen.append(fields["frames_done"])
        return real(self, job_id, **fields)

    monkeypatch.setattr(jobs_mod.JobStore, "update", update)
    monkeypatch.setattr(jobs_mod, "PROGRESS_EVERY_S", 0.0)
    with _client(tmp_path) as client:
        # as for a slow model (960x540 runs at 0.09 fps on a CPU): each frame is shown as it comes, where a rule
        # by count (every 5th frame) left the page without news for a minute
        assert _wait(client, _upload(client, clip)["id"])["status"] == "done"
    assert seen == list(range(1, 13))


def test_the_page_may_call_its_own_server_on_any_address(tmp_path: Path):
    body = {"instances": np.zeros((1, 2, 2, 3), int).tolist()}
    with _client(tmp_path, host="0.0.0.0", base_url="http://192.168.1.5:8000") as client:  # bound in public
        r = client.post("/v1/predict", json=body, headers={"origin": "http://192.168.1.5:8000"})
        assert r.status_code == 200, r.text
        assert client.post("/v1/predict", json=body, headers={"origin": "http://evil.example"}).status_code == 403
        assert client.post("/v1/predict", json=body, headers={"origin": "http://192.168.1.5:9000"}).status_code == 403


def test_page_url_and_a_port_in_use():
    assert page_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert page_url("0.0.0.0", 81) == "http://127.0.0.1:81/"
    assert page_url("::1", 8000) == "http://[::1]:8000/"
    with bind("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # listening already
            pass
        with pytest.raises(VsrError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            bind("127.0.0.1", port).close()


@pytest.mark.slow
def test_vsr_serve_prints_the_url_to_open(tmp_path: Path, tiny_weights: Path):
    """`vsr serve --port 0` in a subprocess: its first line names the page's URL, which answers at once."""
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([sys.executable, "-m", "vsr", "serve", "--port", "0", "--weights", str(tiny_weights),
                                 "--device", "cpu", "--workdir", str(tmp_path / "work")], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while not (m := re.search(r"open (http://127\.0\.0\.1:(\d+)/) in a browser", log.read_text())):
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.1)
        assert int(m[2]) > 0
        with urllib.request.urlopen(m[1], timeout=30) as r:
            assert r.status == 200 and b"/web/app.js" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("name, expected", [("a.mp4", "a_x4.mkv"), ('x"; y.mov', "x__ y_x4.mkv"),
                                            ("été.mkv", "_t__x4.mkv"), ("", "J_x4.mkv"), (".mp4", "mp4_x4.mkv")])
def test_result_name(name: str, expected: str):
    from vsr.serve.requests import result_name

    assert result_name(name, "J") == expected

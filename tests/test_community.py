"""Community models (spandrel): random-init files of several architectures run through vsr exactly as the
module itself runs them; unsafe, unknown and unsupported files are refused with one line naming the file."""
import os
import pickle
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from clips import make_clip
from typer.testing import CliRunner

spandrel = pytest.importorskip("spandrel")
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402
from spandrel.architectures.SPAN import SPAN  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402

from vsr import weights as weights_io  # noqa: E402
from vsr.cli import app  # noqa: E402
from vsr.errors import WeightsError  # noqa: E402
from vsr.inference import Upscaler  # noqa: E402

CPU = torch.device("cpu")


def _models() -> dict[str, tuple[torch.nn.Module, int]]:
    torch.manual_seed(0)
    return {
        "esrgan-x4": (ESRGAN(num_filters=8, num_blocks=1, scale=4), 4),
        "compact-x2": (Compact(num_feat=8, num_conv=2, upscale=2), 2),
        "compact-x1": (Compact(num_feat=8, num_conv=2, upscale=1), 1),
        "span-x4": (SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4), 4),
        "swinir-x2": (SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                             upsampler="pixelshuffledirect", mlp_ratio=2.0), 2),
    }


def _save(tmp_path: Path, name: str, model: torch.nn.Module, suffix: str = ".pth") -> Path:
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


def _frames(n: int = 3, h: int = 20, w: int = 26) -> np.ndarray:
    rng = np.random.default_rng(1)
    return cv2.GaussianBlur(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8).reshape(n * h, w, 3), (3, 3),
                            0).reshape(n, h, w, 3)


def _direct(path: Path, frames: np.ndarray) -> np.ndarray:
    """What the architecture itself gives, through spandrel's own call (its padding and clamping), rounded."""
    desc = spandrel.ModelLoader().load_from_file(path).eval()
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        y = torch.cat([desc(x[i:i + 1]) for i in range(len(x))])
    return (y * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", list(_models()))
def test_each_architecture_runs_as_the_module_does_in_batches(tmp_path: Path, name: str):
    model, scale = _models()[name]
    path = _save(tmp_path, name, model, ".safetensors" if name == "compact-x2" else ".pth")
    loaded = weights_io.load(str(path))
    d = loaded.descriptor
    assert d.scale == scale and d.source == "spandrel" and d.num_parameters == sum(p.numel() for p in model.parameters())
    assert d.output_range == (0.0, 1.0) and "fp32" in d.precisions
    frames = _frames()
    up = Upscaler(loaded.model, device=CPU, precision="fp32", descriptor=d)
    batched = up.upscale(frames)
    assert batched.shape == (3, 20 * scale, 26 * scale, 3)
    one_by_one = np.concatenate([up.upscale(frames[i:i + 1]) for i in range(3)])
    direct = _direct(path, frames)
    assert np.abs(batched.astype(int) - one_by_one).max() <= 1  # batch N == batch 1
    assert np.abs(batched.astype(int) - direct).max() <= 1  # == the module called on its own (fp32 rounding)
    assert batched.std() > 1  # not a constant picture


def test_tiled_output_is_close_to_untiled(tmp_path: Path):
    model, _ = _models()["compact-x2"]
    loaded = weights_io.load(str(_save(tmp_path, "c", model)))
    frames = _frames(1, 40, 48)
    whole = Upscaler(loaded.model, device=CPU, descriptor=loaded.descriptor).upscale(frames)
    tiled = Upscaler(loaded.model, device=CPU, descriptor=loaded.descriptor, tile=16, tile_overlap=8).upscale(frames)
    no_overlap = Upscaler(loaded.model, device=CPU, descriptor=loaded.descriptor, tile=16, tile_overlap=0).upscale(frames)
    assert np.abs(whole.astype(int) - tiled).max() <= 1
    assert np.abs(whole.astype(int) - no_overlap).max() > 1  # negative control: overlap is what makes it close


def test_small_inputs_are_padded_to_the_models_minimum(tmp_path: Path):
    model, _ = _models()["swinir-x2"]
    loaded = weights_io.load(str(_save(tmp_path, "s", model)))
    assert loaded.descriptor.min_size == 16 and loaded.descriptor.tiling  # spandrel: tiling discouraged, allowed
    frames = _frames(1, 9, 11)  # smaller than the 16 px minimum
    out = Upscaler(loaded.model, device=CPU, descriptor=loaded.descriptor).upscale(frames)
    assert out.shape == (1, 18, 22, 3)
    assert np.abs(out.astype(int) - _direct(loaded.path, frames)).max() <= 1


def test_video_and_image_through_the_cli_keep_frames_audio_and_scale(tmp_path: Path):
    model, _ = _models()["compact-x2"]
    path = _save(tmp_path, "compact", model)
    clip = make_clip(tmp_path / "in.mp4", frames=5, width=32, height=24)
    res = CliRunner().invoke(app, ["upscale", str(clip), "-o", str(tmp_path / "out.mkv"), "--weights", str(path), "-q"])
    assert res.exit_code == 0, res.output
    with av.open(str(tmp_path / "out.mkv")) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (64, 48)
        assert len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 5
    img = tmp_path / "in.png"
    cv2.imwrite(str(img), cv2.cvtColor(_frames(1)[0], cv2.COLOR_RGB2BGR))
    res = CliRunner().invoke(app, ["upscale", str(img), "--weights", str(path), "-q"])
    assert res.exit_code == 0, res.output
    out = cv2.imread(str(tmp_path / "in_x2.png"))
    assert out.shape == (40, 52, 3)
    assert np.abs(cv2.cvtColor(out, cv2.COLOR_BGR2RGB).astype(int) - _direct(path, _frames(1))[0]).max() <= 1


def test_vsr_models_describes_a_community_file(tmp_path: Path):
    model, _ = _models()["span-x4"]
    path = _save(tmp_path, "span", model)
    res = CliRunner().invoke(app, ["models", str(path)])
    assert res.exit_code == 0, res.output
    assert "SPAN x4" in res.output and f"{sum(p.numel() for p in model.parameters()):,} parameters" in res.output
    assert "community model" in res.output and "licence" in res.output


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "ran"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "model.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": torch.zeros(1), "x": evil}, f)
    with pytest.raises(WeightsError, match="model.pth") as err:
        weights_io.load(str(path))
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["unknown", "grey", "garbage"])
def test_unknown_unsupported_and_corrupt_files_are_one_clear_line(tmp_path: Path, case: str):
    path = tmp_path / f"{case}.pth"
    if case == "unknown":
        torch.save({"encoder.layer.0.weight": torch.zeros(4, 4)}, path)
        expect = "no architecture spandrel knows"
    elif case == "grey":
        torch.save(Compact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2, upscale=2).state_dict(), path)
        expect = "RGB (3->3) models only"
    else:
        path.write_bytes(b"not a model at all")
        expect = "not a readable weights file"
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    res = CliRunner().invoke(app, ["upscale", str(tmp_path / "x.png"), "--weights", str(path)])
    assert res.exit_code == 1 and expect in res.output and path.name in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "x_x4.png").exists()


def test_bench_and_serve_run_a_community_model(tmp_path: Path):
    from fastapi.testclient import TestClient

    from vsr.config import ServeConfig, UpscaleConfig
    from vsr.pipeline import build_engine
    from vsr.serve import create_app

    model, _ = _models()["compact-x2"]
    path = _save(tmp_path, "compact", model)
    hr = tmp_path / "hr"
    hr.mkdir()
    cv2.imwrite(str(hr / "a.png"), cv2.cvtColor(_frames(1, 32, 40)[0], cv2.COLOR_RGB2BGR))
    res = CliRunner().invoke(app, ["bench", str(hr), "--weights", str(path), "--device", "cpu"])
    assert res.exit_code == 0 and "| **average** | 1 |" in res.output, res.output  # LR made at the model's x2
    res = CliRunner().invoke(app, ["bench", "vid4", "--data", str(tmp_path), "--weights", str(path)])
    (tmp_path / "GT").mkdir()
    for clip in ("calendar", "city", "foliage", "walk"):
        for sub in ("GT", "BIx4"):
            (tmp_path / sub / clip).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / sub / clip / "0.png"), np.zeros((16, 16, 3), np.uint8))
    res = CliRunner().invoke(app, ["bench", "vid4", "--data", str(tmp_path), "--weights", str(path)])
    assert res.exit_code == 1 and "x2 model" in res.output and "folder of HR images" in res.output, res.output
    engine, loaded, _ = build_engine(UpscaleConfig(weights=str(path), device="cpu"))
    cfg = ServeConfig(workdir=str(tmp_path / "work"))
    ok, png = cv2.imencode(".png", cv2.cvtColor(_frames(1)[0], cv2.COLOR_RGB2BGR))
    with TestClient(create_app(engine, loaded.meta | {"file": str(loaded.path)}, cfg), base_url="http://127.0.0.1") as c:
        models = c.get("/v1/models").json()
        assert "Compact" in str(models) and str(tmp_path) not in str(models)
        r = c.post("/v1/images", files={"file": ("a.png", png.tobytes(), "image/png")})
        assert r.status_code == 200, r.text
        out = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert out.shape == (40, 52, 3)
        assert np.abs(cv2.cvtColor(out, cv2.COLOR_BGR2RGB).astype(int) - _direct(path, _frames(1))[0]).max() <= 1


def test_a_precision_the_model_lacks_falls_back_with_a_note_or_is_refused_when_asked_for(tmp_path: Path, monkeypatch):
    import vsr.pipeline as pipeline
    from vsr.config import UpscaleConfig
    from vsr.errors import VsrError

    model, _ = _models()["swinir-x2"]  # spandrel: SwinIR does not support fp16
    path = _save(tmp_path, "swinir", model)
    assert "fp16" not in weights_io.load(str(path)).descriptor.precisions
    monkeypatch.setattr(pipeline, "resolve_precision", lambda device, name: "fp16")  # as auto would on an older GPU
    engine, _, precision = pipeline.build_engine(UpscaleConfig(weights=str(path), device="cpu"))
    assert precision == "fp32" and engine.upscaler.precision == "fp32"
    assert engine.notes == ["SwinIR does not support fp16; running in fp32"]
    with pytest.raises(VsrError, match="does not run in fp16; it supports fp32"):
        pipeline.build_engine(UpscaleConfig(weights=str(path), device="cpu", precision="fp16"))

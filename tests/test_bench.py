"""`vsr bench`: the protocol reproduces published bicubic numbers; the command runs end to end."""
import json
from pathlib import Path

import cv2
import pytest
import torch
from clips import frame_image
from conftest import tiny_model
from typer.testing import CliRunner

from vsr import bench
from vsr.cli import app
from vsr.inference import Upscaler
from vsr.pipeline import Engine

PUBLISHED_BICUBIC = {"set5": 28.42, "set14": 26.00, "vid4": 23.78}


class Bicubic(torch.nn.Module):
    """A 'model' that is MATLAB bicubic x4 in the generator's value ranges, to check the protocol."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from vsr.metrics import imresize

        return imresize(x * 255.0, 4.0, quantize=False) / 127.5 - 1.0


def test_folder_bench_via_cli_writes_json(tmp_path: Path, tiny_weights: Path):
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(2):
        cv2.imwrite(str(hr / f"{i}.png"), frame_image(i, 40, 32))
    cv2.imwrite(str(hr / "grey.png"), frame_image(5, 40, 32)[:, :, 0])
    res = CliRunner().invoke(app, ["bench", str(hr), "--weights", str(tiny_weights), "--weights", str(tiny_weights),
                                   "--json", str(tmp_path / "r.json"), "--save-frames", str(tmp_path / "frames"),
                                   "--report", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    assert "| **average** | 3 |" in res.output and "crop 4 px" in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data) == 2 and [r["name"] for r in data[0]["rows"]] == ["0", "1", "grey"]
    assert data[0]["average"]["bicubic_psnr_y"] > 20
    assert len(list((tmp_path / "frames").rglob("*.png"))) == 3
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<svg" in page and page.count("<img") == 3 and "PSNR-Y" in page
    strip = cv2.imread(str(tmp_path / "report" / "compare_0.png"))
    assert strip.shape[0] == 32 + 18 and strip.shape[1] == 5 * 32 + 4 * 4  # LR | bicubic | 2 models | HR


def test_missing_dataset_is_a_clear_error(tmp_path: Path, tiny_weights: Path):
    res = CliRunner().invoke(app, ["bench", "vid4", "--data", str(tmp_path), "--weights", str(tiny_weights)])
    assert res.exit_code == 1 and "no Vid4 here" in res.output


@pytest.mark.parametrize("dataset", ["set5", "set14", pytest.param("vid4", marks=pytest.mark.slow)])
def test_bicubic_protocol_matches_published_numbers(shared, dataset):
    """Upscaling by bicubic through the bench path must give the published bicubic PSNR within 0.05 dB."""
    up = Upscaler(Bicubic(), device=torch.device("cpu"), precision="fp32")
    result = bench.run(dataset, Engine(up, batch_size=8), weights_name="bicubic", data=shared / dataset)
    avg = result.average()
    diff = avg.psnr_y - PUBLISHED_BICUBIC[dataset]
    print(f"{dataset}: bicubic Y-PSNR {avg.psnr_y:.3f} dB, published {PUBLISHED_BICUBIC[dataset]:.2f}, diff {diff:+.3f}")
    assert abs(diff) <= 0.05
    assert avg.bicubic_psnr_y == pytest.approx(avg.psnr_y, abs=0.02)  # the baseline column is the same thing


def test_bd_degradation_matches_shipped_vid4_frames(shared):
    from vsr.data import degrade_gaussian
    from vsr.images import read_image

    hr = torch.from_numpy(read_image(shared / "vid4/GT/calendar/00000000.png").rgb).permute(2, 0, 1)
    lr = torch.from_numpy(read_image(shared / "vid4/BDx4/calendar/00000000.png").rgb).permute(2, 0, 1)
    assert torch.equal(degrade_gaussian(hr), lr)


def test_tiny_model_bench_on_set5(shared):
    up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
    result = bench.run("set5", Engine(up), weights_name="tiny", data=shared / "set5")
    assert len(result.rows) == 5 and all(r.frames == 1 for r in result.rows)

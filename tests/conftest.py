"""Shared fixtures: random-init generators saved as weights files, and the shared data folder."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/clips.py

from vsr.inference import Upscaler  # noqa: E402
from vsr.models import SRResNet  # noqa: E402
from vsr.models.recurrent import RecurrentSRResNet, from_srresnet  # noqa: E402
from vsr.pipeline import Engine  # noqa: E402
from vsr.weights import save  # noqa: E402

# Tests use tiny tensors: one intra-op thread is fastest and avoids OpenMP spin-waits when the
# machine's cores are busy with something else.
torch.set_num_threads(1)

# For tests that compare two separate x264 encodes of the same frames exactly (packet bytes, or timestamps
# and pictures within a level). libx264 (through PyAV) gives the same bytes on an idle machine, but on some
# AVX512 machines with other work on their cores it was seen to give another encode now and then (2-4 in
# 150 encodes of one tiny clip; `no-asm` stopped it): CI failed once on that, at one packet of 60. A real
# mismatch (a segment joined twice, a frame lost, another model) fails every run; a rare encoder variation
# passes on a rerun, which makes both files again.
X264_RERUN = pytest.mark.flaky(reruns=2, only_rerun=["AssertionError"])

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
TINY = {"num_blocks": 2, "channels": 16, "scale": 4}


def tiny_model(seed: int = 0) -> SRResNet:
    """A small SRResNet (2 blocks, 16 channels) with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = SRResNet(**TINY)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_temporal(seed: int = 0) -> RecurrentSRResNet:
    """A tiny recurrent model (``tiny_model`` as its core) whose temporal conv is not zero, so that its state
    changes the pictures."""
    rec = from_srresnet(tiny_model(seed)).eval()
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        rec.temporal.weight.normal_(0.0, 0.05)
        rec.temporal.bias.normal_(0.0, 0.05)
    return rec


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """A weights file holding a tiny random-init generator."""
    return save(tiny_model(), tmp_path / "tiny.pt", meta={"name": "tiny", "arch": "srresnet", "arch_kwargs": TINY})


@pytest.fixture
def engine() -> Engine:
    """A CPU fp32 engine around a tiny random-init generator."""
    up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
    return Engine(up, batch_size=3)


@pytest.fixture
def shared() -> Path:
    """The read-only datasets folder beside the repo; tests that need it skip without it."""
    if not SHARED.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED}")
    return SHARED

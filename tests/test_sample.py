"""The README's first example: the shipped sample clip through the shipped default weights."""
from pathlib import Path

import pytest
from clips import probe
from typer.testing import CliRunner

from vsr.cli import app

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "calendar.mp4"


def test_sample_clip_is_small_and_has_sound():
    assert SAMPLE.stat().st_size < 1_000_000
    info = probe(SAMPLE)
    assert info["frames"] == 41 and (info["width"], info["height"]) == (180, 144)
    assert info["audio_codec"] == "aac" and info["audio_duration"] > 4.0


@pytest.mark.slow
def test_readme_example_upscales_the_sample_with_default_weights(tmp_path: Path):
    res = CliRunner().invoke(app, ["upscale", str(SAMPLE), "-o", str(tmp_path / "calendar_x4.mp4"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "41 frames in, 41 out, 180x144 -> 720x576" in res.output and "model srresnet-flow" in res.output
    a, b = probe(SAMPLE), probe(tmp_path / "calendar_x4.mp4")
    assert b["frames"] == 41 and (b["width"], b["height"]) == (720, 576)
    assert b["audio_codec"] == "aac" and abs(b["audio_duration"] - a["audio_duration"]) <= 1024 / 48000

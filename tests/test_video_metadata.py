"""What real files carry besides pictures, through the engine: aspect ratio, tags, chapters, HDR10, audio offset."""
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip

from vsr.pipeline import Engine
from vsr.video import EncodeSettings, Hdr10

HDR_PARAMS = ("log-level=error:hdr10=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
              "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400")


def _streams(path: Path) -> list[tuple]:
    with av.open(str(path)) as c:
        return [(s.type, s.metadata.get("language"), s.metadata.get("title") or s.metadata.get("name"), int(s.disposition))
                for s in c.streams if s.type in ("audio", "subtitle")]


@pytest.mark.parametrize("sar", [Fraction(32, 27), Fraction(16, 11)])
@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_anamorphic_sar_is_kept_so_the_display_aspect_stays(tmp_path: Path, engine: Engine, sar: Fraction, ext: str):
    src = make_clip(tmp_path / f"in.{ext}", frames=3, width=36, height=24, sar=sar, audio=None)
    result = engine.upscale_video(src, tmp_path / f"out.{ext}")
    with av.open(str(src)) as a, av.open(str(tmp_path / f"out.{ext}")) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert va.sample_aspect_ratio == vb.sample_aspect_ratio == sar
        assert va.display_aspect_ratio == vb.display_aspect_ratio == Fraction(36, 24) * sar
    assert not any("aspect" in n for n in result.notes)


def test_sar_an_encoder_cannot_store_is_reported(tmp_path: Path, engine: Engine):
    src = make_clip(tmp_path / "in.mkv", frames=2, sar=Fraction(32, 27), audio=None)
    engine.settings = EncodeSettings(codec="libvpx-vp9")
    result = engine.upscale_video(src, tmp_path / "out.mkv")
    assert any("aspect ratio 32:27 not carried" in n for n in result.notes)


def _tagged_clip(path: Path) -> Path:
    return make_clip(path, frames=6, title="A film", audio="aac", subtitles=True,
                     audio_tracks=[{"metadata": {"language": "eng", "title": "English"}, "disposition": 1},
                                   {"metadata": {"language": "fre", "title": "Français"}, "disposition": 64}],
                     subtitle_tags={"metadata": {"language": "ger", "title": "Deutsch"}, "disposition": 64 | 1},
                     chapters=[(0.0, 0.2, "One"), (0.2, 0.5, "Two")])


def test_languages_titles_dispositions_chapters_and_title_are_kept_in_mkv(tmp_path: Path, engine: Engine):
    src = _tagged_clip(tmp_path / "in.mkv")
    engine.upscale_video(src, tmp_path / "out.mkv")
    assert _streams(tmp_path / "out.mkv") == _streams(src) == [
        ("audio", "eng", "English", 1), ("audio", "fre", "Français", 64), ("subtitle", "ger", "Deutsch", 65)]
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        assert b.metadata["title"] == "A film"
        got = [(float(c["start"] * c["time_base"]), float(c["end"] * c["time_base"]), c["metadata"]["title"]) for c in b.chapters()]
        assert got == [(0.0, 0.2, "One"), (0.2, 0.5, "Two")] and len(a.chapters()) == 2


def test_mp4_keeps_what_it_can_and_reencoded_audio_keeps_its_tags(tmp_path: Path, engine: Engine):
    src = _tagged_clip(tmp_path / "in.mkv")
    result = engine.upscale_video(src, tmp_path / "out.mp4")
    assert _streams(tmp_path / "out.mp4") == [("audio", "eng", "English", 1), ("audio", "fre", "Français", 64)]
    assert any("subtitle" in n and "not carried" in n for n in result.notes)
    with av.open(str(tmp_path / "out.mp4")) as b:
        assert b.metadata["title"] == "A film" and [c["metadata"]["title"] for c in b.chapters()] == ["One", "Two"]
    again = engine.upscale_video(tmp_path / "out.mp4", tmp_path / "again.mkv")  # mp4's chapter track is no stream to drop
    assert not any("data stream" in n for n in again.notes)
    engine.upscale_video(src, tmp_path / "out.webm")  # opus re-encoded from aac: tags kept
    assert _streams(tmp_path / "out.webm") == [("audio", "eng", "English", 1), ("audio", "fre", "Français", 64)]


def _first_hdr(path: Path) -> Hdr10 | None:
    with av.open(str(path)) as c:
        return Hdr10.of(next(c.decode(video=0)))


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_hdr10_mastering_display_and_light_level_reach_the_output(tmp_path: Path, engine: Engine, ext: str):
    src = make_clip(tmp_path / f"in.{ext}", frames=3, codec="libx265", pix_fmt="yuv420p10le", audio=None,
                    colorspace=9, options={"x265-params": HDR_PARAMS})
    hdr = _first_hdr(src)
    assert hdr is not None and hdr.max_cll == 1000 and hdr.max_fall == 400
    assert hdr.primaries[0] == (Fraction(34000, 50000), Fraction(16000, 50000))  # R
    assert hdr.luminance == (Fraction(1, 10000), Fraction(1000))
    engine.upscale_video(src, tmp_path / f"out.{ext}")
    assert _first_hdr(tmp_path / f"out.{ext}") == hdr
    plain = make_clip(tmp_path / f"sdr.{ext}", frames=3, codec="libx265", pix_fmt="yuv420p10le", audio=None)
    engine.upscale_video(plain, tmp_path / f"sdr_out.{ext}")
    assert _first_hdr(tmp_path / f"sdr_out.{ext}") is None  # nothing invented


def _audio_start(path: Path) -> float:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return min(float(p.pts * p.time_base) for p in c.demux(a) if p.pts is not None and p.size)


def test_reencoded_audio_keeps_its_start_offset(tmp_path: Path, engine: Engine):
    src = make_clip(tmp_path / "in.mkv", frames=12, audio="aac", audio_start=0.5)
    assert abs(_audio_start(src) - 0.5) < 0.03
    result = engine.upscale_video(src, tmp_path / "out.webm")  # webm cannot hold aac: re-encoded to opus
    assert any("re-encoded" in n for n in result.notes)
    assert abs(_audio_start(tmp_path / "out.webm") - 0.5) < 0.03
    with av.open(str(tmp_path / "out.webm")) as c:
        assert np.isclose(float(c.streams.video[0].start_time or 0), 0.0)

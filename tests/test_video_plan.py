"""``plan_output`` on hand-made ``VideoInfo``s (no files): encoder, pixel format, limits, streams, metadata."""
from fractions import Fraction
from pathlib import Path

import pytest

from vsr.colour import Yuv420
from vsr.errors import OutputError
from vsr.video import (Colour, ContainerCaps, EncodeSettings, Hdr10, StreamInfo, VideoInfo, plan_output)

MKV = ContainerCaps.for_path(Path("x.mkv"))
MP4 = ContainerCaps.for_path(Path("x.mp4"))
HDR = Hdr10(primaries=((Fraction(34000, 50000), Fraction(16000, 50000)), (Fraction(13250, 50000), Fraction(34500, 50000)),
                       (Fraction(7500, 50000), Fraction(3000, 50000))),
            white=(Fraction(15635, 50000), Fraction(16450, 50000)), luminance=(Fraction(1, 10000), Fraction(1000)),
            max_cll=1000, max_fall=400)


def info(**kw) -> VideoInfo:
    base = dict(path=Path("in.mkv"), width=32, height=24, codec="h264", pix_fmt="yuv420p", bit_depth=8, fps=Fraction(12),
                time_base=Fraction(1, 1200), frames=0, duration_s=None, format_name="matroska")
    return VideoInfo(**{**base, **kw})


def test_plan_keeps_codec_format_colour_sar_and_rotation():
    p = plan_output(info(sar=Fraction(32, 27), rotation=90, colour=Colour(1, 1, 1, 1)), MKV, scale=4, settings=EncodeSettings())
    assert (p.encoder, p.pix_fmt, p.width, p.height, p.time_base) == ("libx264", "yuv420p", 128, 96, Fraction(1, 1200))
    assert p.sar == Fraction(32, 27) and p.rotation == 90 and p.colour == Colour(1, 1, 1, 1)
    assert p.yuv420 == Yuv420.for_tags(1, 1) and p.options["preset"] == "medium"
    ten = plan_output(info(codec="hevc", pix_fmt="yuv420p10le", bit_depth=10), MKV, scale=4, settings=EncodeSettings())
    assert (ten.encoder, ten.pix_fmt, ten.yuv420) == ("libx265", "yuv420p10le", None)  # no 8-bit device target


def test_plan_names_what_each_stream_becomes_with_its_tags():
    streams = [StreamInfo(1, "audio", "aac", {"language": "fre", "title": "VF"}, 1),
               StreamInfo(2, "subtitle", "subrip", {"language": "ger"}, 64),
               StreamInfo(3, "data", "bin_data")]
    holds = lambda fmt, st: not (fmt == "mp4" and st.type == "subtitle")  # noqa: E731
    chapters = [{"id": 1, "start": 0, "end": 5, "time_base": Fraction(1, 10), "metadata": {"title": "One"}}]
    src = info(streams=streams, metadata={"title": "Film"}, chapters=chapters)
    p = plan_output(src, MP4, scale=4, settings=EncodeSettings(), holds=holds)
    assert [(s.index, s.action) for s in p.streams] == [(1, "copy"), (2, "drop"), (3, "drop")]
    assert p.streams[0].metadata == {"language": "fre", "title": "VF"} and p.streams[0].disposition == 1
    assert p.metadata == {"title": "Film"} and p.chapters == tuple(chapters)
    assert any("subtitle stream #2" in n and "use .mkv" in n for n in p.notes)
    assert any("data stream #3" in n for n in p.notes)
    webm = plan_output(src, ContainerCaps.for_path(Path("x.webm")), scale=4, settings=EncodeSettings(),
                       holds=lambda fmt, st: False)
    assert webm.streams[0].action == "transcode" and webm.streams[0].codec == "opus"
    assert webm.streams[0].metadata == {"language": "fre", "title": "VF"}  # re-encoded, still tagged


def test_hdr10_metadata_goes_into_x265_params_or_a_note():
    src = info(codec="hevc", pix_fmt="yuv420p10le", bit_depth=10, hdr=HDR)
    p = plan_output(src, MKV, scale=4, settings=EncodeSettings())
    params = p.options["x265-params"].split(":")
    assert "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)" in params
    assert "max-cll=1000,400" in params
    other = plan_output(src, MKV, scale=4, settings=EncodeSettings(codec="libvpx-vp9"))
    assert any("HDR10" in n and "libx265" in n for n in other.notes)


def test_frame_too_large_for_the_encoder_is_refused_at_plan_time_naming_a_codec_that_takes_it():
    # libx264 takes at most 16384 pixels a side (measured: 16384 opens, 16386 does not)
    assert plan_output(info(width=4096, height=16), MKV, scale=4, settings=EncodeSettings()).width == 16384
    with pytest.raises(OutputError) as err:
        plan_output(info(width=4200, height=16), MKV, scale=4, settings=EncodeSettings())
    msg = str(err.value)
    assert "16800x64" in msg and "too large for libx264" in msg and "--codec libx265" in msg and "\n" not in msg
    with pytest.raises(OutputError, match="too large for mpeg4"):  # mpeg4: 8190 at most
        plan_output(info(width=2048, height=16), MP4, scale=4, settings=EncodeSettings(codec="mpeg4"))


def test_time_base_the_encoder_refuses_is_replaced_by_a_standard_one():
    p = plan_output(info(time_base=Fraction(1, 90000)), MP4, scale=4, settings=EncodeSettings(codec="mpeg4"))
    assert p.time_base == Fraction(1, 12) and any("time base" in n for n in p.notes)
    assert plan_output(info(time_base=Fraction(1, 90000)), MP4, scale=4, settings=EncodeSettings()).time_base == Fraction(1, 90000)

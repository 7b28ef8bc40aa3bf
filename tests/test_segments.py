"""Segmented upscaling: the same file for one segment or many, resume after an interruption, refusals."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import make_clip
from conftest import X264_RERUN, tiny_model, tiny_temporal

from vsr.errors import VsrError
from vsr.inference import Upscaler
from vsr.pipeline import WARMUP_FRAMES as WARMUP
from vsr.pipeline import Engine
from vsr.segments import plan_segments
from vsr.video import EncodeSettings
from vsr.workdir import work_dir_for


def make_engine(seconds: float, *, seed: int = 0, codec: str | None = None, crf: int | None = None) -> Engine:
    up = Upscaler(tiny_model(seed), device=torch.device("cpu"), precision="fp32")
    return Engine(up, batch_size=3, segment_seconds=seconds, settings=EncodeSettings(codec=codec, crf=crf))


def packets(path: Path, kind: str) -> list[tuple]:
    """(pts, dts, duration, bytes) of every packet of the first stream of ``kind``."""
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        if not streams:
            return []
        return [(p.pts, p.dts, p.duration, bytes(p)) for p in c.demux(streams[0]) if p.size]


def pictures(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_plan_cuts_by_display_time_and_keeps_short_videos_whole():
    times = [i * 10 for i in range(100)]
    segs = plan_segments(times, Fraction(12), 2.0)  # 24 frames each; the 4-frame tail joins the last
    assert [(s.first_frame, s.frames, s.start, s.end) for s in segs] == [
        (0, 24, None, 240), (24, 24, 240, 480), (48, 24, 480, 720), (72, 28, 720, None)]
    assert sum(s.frames for s in segs) == 100
    assert len(plan_segments(times, Fraction(12), 0)) == 1  # segmenting off
    assert len(plan_segments(times[:40], Fraction(12), 2.0)) == 1  # shorter than two segments
    assert len(plan_segments(None, Fraction(12), 2.0)) == 1  # timestamps unknown or repeated


def test_many_segments_make_the_same_file_as_one(tmp_path: Path):
    """Lossless video (ffv1): the pictures, every timestamp, the audio packets, subtitles and tags are the same."""
    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio="aac", subtitles=True, title="A film",
                    chapters=[(0.0, 1.0, "One"), (1.0, 3.0, "Two")])
    one = make_engine(0, codec="ffv1").upscale_video(src, tmp_path / "one.mkv")
    many = make_engine(0.75, codec="ffv1").upscale_video(src, tmp_path / "many.mkv")  # 9 frames: 5 segments
    assert one.frames_out == many.frames_out == 40
    a, b = tmp_path / "one.mkv", tmp_path / "many.mkv"
    assert [p[:3] for p in packets(a, "video")] == [p[:3] for p in packets(b, "video")]
    assert packets(a, "audio") == packets(b, "audio")  # copied once, never cut
    assert [(p[0], p[3]) for p in packets(b, "audio")] == [(p[0], p[3]) for p in packets(src, "audio")]
    assert packets(a, "subtitle") == packets(b, "subtitle") != []
    assert all((x == y).all() for x, y in zip(pictures(a), pictures(b), strict=True))
    with av.open(str(b)) as c:
        assert c.metadata["title"] == "A film" and [ch["metadata"]["title"] for ch in c.chapters()] == ["One", "Two"]
    assert leftovers(tmp_path) == []  # work folders and temp files gone


def test_vfr_timestamps_survive_segments(tmp_path: Path):
    pts = [0, 100, 250, 300, 700, 720, 900, 1500, 1510, 1600, 2000, 2100, 2300, 2350, 2400, 3000, 3100, 3200]
    src = make_clip(tmp_path / "vfr.mp4", frames=len(pts), fps=10, vfr_pts=pts, time_base=Fraction(1, 1000), audio=None)
    make_engine(0).upscale_video(src, tmp_path / "one.mp4")
    res = make_engine(0.5).upscale_video(src, tmp_path / "many.mp4")  # 5 frames: 3 segments
    assert res.frames_out == len(pts) and not res.notes
    with av.open(str(tmp_path / "many.mp4")) as c, av.open(str(tmp_path / "one.mp4")) as d:
        got = [f.pts * f.time_base for f in c.decode(video=0)]
        want = [f.pts * f.time_base for f in d.decode(video=0)]
    assert got == want == [Fraction(p, 1000) for p in pts]


class Stop(KeyboardInterrupt):
    pass


def interrupt_after(frames: int):
    seen = [0]

    def progress(n: int) -> None:
        seen[0] += n
        if seen[0] > frames:
            raise Stop

    return progress


@X264_RERUN
def test_an_interrupted_run_resumes_and_makes_the_same_packets(tmp_path: Path):
    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio="aac")
    make_engine(0.75).upscale_video(src, tmp_path / "whole.mkv")
    out = tmp_path / "out.mkv"
    first = make_engine(0.75)
    with pytest.raises(Stop):
        first.upscale_video(src, out, progress=interrupt_after(20))  # in the third of five segments
    work = work_dir_for(out)
    assert sorted(p.name for p in work.glob("seg-*.json")) == ["seg-00000.json", "seg-00001.json"]
    assert not list(work.glob(".*vsr-tmp*")) and not out.exists()  # the cut segment's temp file is gone
    assert "2 of 5 segments" in first.interrupted() and "resume" in first.interrupted()

    done = [0]
    again = make_engine(0.75)
    res = again.upscale_video(src, out, progress=lambda n: done.__setitem__(0, done[0] + n),
                              on_start=lambda info, before: done.__setitem__(0, before))
    assert res.frames_out == 40 and done[0] == 40  # the finished segments count in the progress
    assert any("resumed: 2 of 5 segments (18 frames)" in n for n in res.notes), res.notes
    assert packets(out, "video") == packets(tmp_path / "whole.mkv", "video")  # bit-identical
    assert packets(out, "audio") == packets(tmp_path / "whole.mkv", "audio") != []
    assert not work.exists() and leftovers(tmp_path) == []


def test_a_changed_input_model_or_setting_is_refused_and_restart_discards(tmp_path: Path):
    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio=None)
    out = tmp_path / "out.mkv"
    with pytest.raises(Stop):
        make_engine(0.75).upscale_video(src, out, progress=interrupt_after(12))
    with pytest.raises(VsrError, match=r"crf None -> 30.*|options .*crf"):
        make_engine(0.75, crf=30).upscale_video(src, out)
    with pytest.raises(VsrError, match="the model changed"):
        make_engine(0.75, seed=1).upscale_video(src, out)
    with pytest.raises(VsrError, match="segment_seconds 0.75 -> 1.0"):
        make_engine(1.0).upscale_video(src, out)
    make_clip(src, frames=40, fps=12, audio=None, width=36)  # another picture in the same file name
    with pytest.raises(VsrError, match="--restart"):
        make_engine(0.75).upscale_video(src, out)
    res = make_engine(0.75, seed=1).upscale_video(src, out, restart=True)
    assert res.frames_out == 40 and any("--restart: discarded" in n for n in res.notes)
    with pytest.raises(VsrError, match="nothing to resume"):
        make_engine(0.75).upscale_video(src, tmp_path / "new.mkv", resume=True)


@X264_RERUN
@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_a_damaged_segment_is_made_again_not_joined(tmp_path: Path, damage: str):
    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio=None)
    make_engine(0.75).upscale_video(src, tmp_path / "whole.mkv")
    out = tmp_path / "out.mkv"
    with pytest.raises(Stop):
        make_engine(0.75).upscale_video(src, out, progress=interrupt_after(20))
    seg = work_dir_for(out) / "seg-00001.vsrseg"
    data = bytearray(seg.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    seg.write_bytes(bytes(data))
    res = make_engine(0.75).upscale_video(src, out)
    assert any("segment 1 of the earlier run was damaged" in n for n in res.notes), res.notes
    assert any("resumed: 1 of 5" in n for n in res.notes)
    assert packets(out, "video") == packets(tmp_path / "whole.mkv", "video")


def test_a_live_run_holds_its_work_folder(tmp_path: Path):
    import os

    from vsr.atomic import HOST

    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio=None)
    out = tmp_path / "out.mkv"
    with pytest.raises(Stop):
        make_engine(0.75).upscale_video(src, out, progress=interrupt_after(12))
    (work_dir_for(out) / "lock").write_text(f"{HOST} {os.getppid()}\n")  # our parent: alive
    with pytest.raises(VsrError, match="another vsr .* is writing this output"):
        make_engine(0.75).upscale_video(src, out)
    manifest = json.loads((work_dir_for(out) / "manifest.json").read_text())
    assert manifest["input"]["size"] == src.stat().st_size and len(manifest["segments"]) == 5


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_frames_between_decodes_forward_to_the_exact_frame(tmp_path: Path, ext: str):
    """B-frames and a keyframe every 7 frames: every range is the same pictures as a decode from the start."""
    from vsr.video import VideoReader

    src = make_clip(tmp_path / f"in.{ext}", frames=40, fps=12, audio="aac",
                    options={"preset": "medium", "g": "7", "bf": "3"})
    with VideoReader(src) as r:
        whole = [f for f in r if not isinstance(f, av.Packet)]
    times = [f.pts for f in whole]
    for first, last in [(0, 5), (3, 11), (7, 8), (13, 40), (20, 33)]:
        with VideoReader(src, video_only=True) as r:
            got = list(r.frames_between(times[first] if first else None, times[last] if last < 40 else None,
                                        first_index=first))
        assert [f.index for f in got] == list(range(first, last))
        assert [f.pts for f in got] == times[first:last]
        assert all((a.image == b.image).all() for a, b in zip(got, whole[first:last]))


def test_a_seek_that_lands_after_the_frame_falls_back_to_the_beginning(tmp_path: Path):
    from vsr.video import VideoReader

    src = make_clip(tmp_path / "in.mkv", frames=20, fps=12, audio=None)
    with VideoReader(src) as r:
        whole = [f for f in r if not isinstance(f, av.Packet)]

    class NoSeek:  # a container whose seeks do nothing: the reader is at the end of the file
        def __init__(self, c):
            self.c = c

        def seek(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return getattr(self.c, name)

    with VideoReader(src, video_only=True) as r:
        list(r)  # read to the end
        r.container = NoSeek(r.container)
        got = list(r.frames_between(whole[9].pts, None, first_index=9))
    assert [f.pts for f in got] == [f.pts for f in whole[9:]]
    assert all((a.image == b.image).all() for a, b in zip(got, whole[9:]))


def _temporal_engine(seconds: float, *, batch: int = 3) -> Engine:
    """A tiny random recurrent model whose state changes the pictures, writing lossless RGB."""
    up = Upscaler(tiny_temporal(), device=torch.device("cpu"), precision="fp32")
    return Engine(up, batch_size=batch, segment_seconds=seconds,
                  settings=EncodeSettings(codec="ffv1", pix_fmt="bgr0"))  # lossless RGB: exact pictures


def test_a_temporal_model_streams_each_segment_from_its_warm_up_frames(tmp_path: Path):
    """Each segment's pictures are those of a fresh stream started ``warmup`` frames before it, whatever the batch
    size; the state is carried across batches (one segment differs from per-segment streams)."""
    from vsr.video import VideoReader

    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio="aac")
    with VideoReader(src) as r:
        lr = [f.image for f in r if not isinstance(f, av.Packet)]
    engine = _temporal_engine(0.75)
    res = engine.upscale_video(src, tmp_path / "out.mkv")
    assert res.frames_out == 40 and packets(tmp_path / "out.mkv", "audio") != []
    got = pictures(tmp_path / "out.mkv")
    segs = plan_segments(list(range(40)), Fraction(12), 0.75, warmup=engine.warmup_frames)
    assert [s.warmup for s in segs] == [0, 5, 5, 5, 5]

    def stream(frames: list[np.ndarray]) -> list[np.ndarray]:
        state, out = None, []
        for f in frames:
            y, state = engine.upscaler.upscale_stream(f[None], state)
            out.append(y[0])
        return out

    for s in segs:
        first = s.first_frame - s.warmup
        want = stream(lr[first: s.first_frame + s.frames])[s.warmup:]
        assert all((a == b).all() for a, b in zip(got[s.first_frame: s.first_frame + s.frames], want, strict=True))
    one = _temporal_engine(0, batch=1).upscale_frames(lr)  # one stream over the whole clip, in batches of 1 ...
    assert all((a == b).all() for a, b in zip(one, stream(lr), strict=True))  # ... equals the frame loop
    assert not all((a == b).all() for a, b in zip(got[9:], stream(lr)[9:]))  # (the warm-up starts are real)


@X264_RERUN
def test_a_temporal_model_runs_segments_side_by_side(tmp_path: Path, monkeypatch):
    """With a batch of 3, three segments share each model call (frame t of each) and a finished one makes room
    for the next; the file is the one segments run one after another make (the same pictures, frames, audio)."""
    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio="aac")
    calls: list[int] = []
    lanes = Upscaler.upscale_lanes

    def spy(self, frames, states, **kw):
        calls.append(len(frames))
        return lanes(self, frames, states, **kw)

    monkeypatch.setattr(Upscaler, "upscale_lanes", spy)
    side = _temporal_engine(0.75, batch=3).upscale_video(src, tmp_path / "side.mkv")
    segs = plan_segments(list(range(40)), Fraction(12), 0.75, warmup=WARMUP)
    assert sum(calls) == 40 + sum(s.warmup for s in segs)  # every frame and warm-up frame once
    assert max(calls) == 3 and len(calls) < sum(calls) / 2  # batched: most calls hold several segments
    calls.clear()
    alone = _temporal_engine(0.75, batch=1).upscale_video(src, tmp_path / "alone.mkv")
    assert max(calls) == 1 and sum(calls) == 40 + sum(s.warmup for s in segs)  # batch 1: one segment after another
    assert side.frames_out == alone.frames_out == 40
    a, b = pictures(tmp_path / "side.mkv"), pictures(tmp_path / "alone.mkv")
    assert len(a) == len(b) == 40 and max(np.abs(x.astype(int) - y).max() for x, y in zip(a, b)) <= 1
    assert packets(tmp_path / "side.mkv", "audio") == packets(tmp_path / "alone.mkv", "audio")
    assert [p[:3] for p in packets(tmp_path / "side.mkv", "video")] == [p[:3] for p in packets(tmp_path / "alone.mkv", "video")]
    assert leftovers(tmp_path) == []


@X264_RERUN
def test_an_interrupted_side_by_side_run_keeps_its_finished_segments_and_resumes(tmp_path: Path):
    src = make_clip(tmp_path / "in.mkv", frames=40, fps=12, audio="aac")
    _temporal_engine(0.75, batch=3).upscale_video(src, tmp_path / "whole.mkv")
    out = tmp_path / "out.mkv"
    first = _temporal_engine(0.75, batch=3)
    with pytest.raises(Stop):  # segments 0-2 (27 frames) finish side by side, then 3 and 4 start
        first.upscale_video(src, out, progress=interrupt_after(30))
    work = work_dir_for(out)
    assert sorted(p.name for p in work.glob("seg-*.json")) == [f"seg-0000{i}.json" for i in range(3)]
    assert "3 of 5 segments" in first.interrupted() and not out.exists()
    res = _temporal_engine(0.75, batch=3).upscale_video(src, out)
    assert res.frames_out == 40 and any("resumed: 3 of 5 segments" in n for n in res.notes), res.notes
    # segment 3 now shares its calls with segment 4 rather than 1 and 2: the same pictures to a batch's rounding
    a, b = pictures(out), pictures(tmp_path / "whole.mkv")
    assert len(a) == len(b) == 40 and max(np.abs(x.astype(int) - y).max() for x, y in zip(a, b)) <= 1
    assert [p[:3] for p in packets(out, "video")] == [p[:3] for p in packets(tmp_path / "whole.mkv", "video")]
    assert not work.exists() and leftovers(tmp_path) == []

"""Tiny synthetic media made with PyAV for the tests: moving gradients, a tone, optional subtitles."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsr.video import _TO_YUV


def frame_image(i: int, width: int, height: int, *, dtype: type = np.uint8) -> np.ndarray:
    """A smooth moving colour pattern (compresses well, survives YUV round trips)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 0.5 + 0.4 * np.sin((x + 3 * i) / 7.0)
    g = 0.5 + 0.4 * np.cos((y - 2 * i) / 5.0)
    b = 0.5 + 0.4 * np.sin((x + y + i) / 9.0)
    img = np.stack([r, g, b], axis=-1)
    peak = 65535 if dtype == np.uint16 else 255
    return (img * peak).round().astype(dtype)


def make_clip(path: Path, *, frames: int = 12, width: int = 32, height: int = 24, fps: int = 12,
              codec: str = "libx264", pix_fmt: str = "yuv420p", audio: str | None = "aac",
              vfr_pts: list[int] | None = None, time_base: Fraction | None = None, rotation: int = 0,
              subtitles: bool = False, colorspace: int | None = None, color_range: int | None = None,
              sar: Fraction | None = None, options: dict[str, str] | None = None, title: str | None = None,
              audio_tracks: list[dict] | None = None, subtitle_tags: dict | None = None,
              chapters: list[tuple[float, float, str]] | None = None, audio_start: float = 0.0) -> Path:
    """Write a small clip; ``vfr_pts`` gives explicit frame timestamps (in ``time_base``) for VFR.

    ``audio_tracks``: one audio stream per dict, with its ``metadata`` and ``disposition`` (an int);
    ``chapters``: (start s, end s, title); ``audio_start``: the first audio sample's time in seconds.
    """
    tb = time_base or Fraction(1, fps * 100)
    with av.open(str(path), "w") as out:
        if title:
            out.metadata["title"] = title
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.time_base = tb
        vs.codec_context.time_base = tb
        if codec == "libx264":
            vs.options = {"preset": "ultrafast", "crf": "10"}
        if options:
            vs.options = {**vs.options, **options}
        if colorspace is not None:
            vs.codec_context.colorspace = colorspace
        if color_range is not None:
            vs.codec_context.color_range = color_range
        if sar is not None:
            vs.codec_context.sample_aspect_ratio = sar
            vs.sample_aspect_ratio = sar
        if rotation:
            vs.set_display_rotation(rotation)
        tracks = []
        if audio:
            for spec in audio_tracks or [{}]:
                aus = out.add_stream(audio, rate=48000)
                aus.layout = "stereo"
                aus.metadata.update(spec.get("metadata", {}))
                if "disposition" in spec:
                    aus.disposition = av.stream.Disposition(spec["disposition"])
                tracks.append(aus)
        ss = out.add_mux_stream("subrip") if subtitles else None
        if ss is not None and subtitle_tags:
            ss.metadata.update(subtitle_tags.get("metadata", {}))
            ss.disposition = av.stream.Disposition(subtitle_tags.get("disposition", 0))
        if chapters:
            out.set_chapters([{"id": i + 1, "start": int(a * 1000), "end": int(b * 1000), "time_base": Fraction(1, 1000),
                               "metadata": {"title": t}} for i, (a, b, t) in enumerate(chapters)])
        depth16 = "10" in pix_fmt or "16" in pix_fmt
        for i in range(frames):
            img = frame_image(i, width, height, dtype=np.uint16 if depth16 else np.uint8)
            vf = av.VideoFrame.from_ndarray(img, format="rgb48le" if depth16 else "rgb24").reformat(format=pix_fmt)
            if color_range is not None:
                vf.color_range = color_range
            vf.pts = vfr_pts[i] if vfr_pts else int(round(i / (fps * tb)))
            vf.time_base = tb
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        for aus in tracks:
            seconds = frames / fps
            n = int(48000 * seconds)
            t = np.arange(n) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            samples = np.stack([tone, tone])
            for start in range(0, n, 1024):
                chunk = np.ascontiguousarray(samples[:, start : start + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                af.sample_rate = 48000
                af.pts = start + int(round(audio_start * 48000))
                af.time_base = Fraction(1, 48000)
                for p in aus.encode(af):
                    out.mux(p)
            for p in aus.encode(None):
                out.mux(p)
        if ss is not None:
            pkt = av.Packet(b"hello")
            pkt.stream = ss
            pkt.pts, pkt.dts, pkt.duration = 0, 0, 500
            pkt.time_base = Fraction(1, 1000)
            out.mux(pkt)
    return path


def swscale_yuv420p(img: np.ndarray, colorspace: int, color_range: int) -> np.ndarray:
    """An RGB uint8 picture as the writer's swscale makes it yuv420p (PyAV's (3H/2, W) layout)."""
    vf = av.VideoFrame.from_ndarray(img, format="rgb24")
    return vf.reformat(format="yuv420p", dst_colorspace=colorspace if colorspace != 2 else None,
                       src_color_range="JPEG", dst_color_range=color_range or None, interpolation=_TO_YUV).to_ndarray()


def probe(path: Path) -> dict:
    """Count frames and collect pts, size, codec, pixel format and per-stream durations."""
    info: dict = {"video_pts": [], "streams": []}
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info.update(width=v.codec_context.width, height=v.codec_context.height, codec=v.codec_context.name,
                    pix_fmt=v.codec_context.format.name, time_base=v.time_base, container_duration=c.duration)
        for s in c.streams:
            info["streams"].append((s.type, s.codec_context.name if s.codec_context else None))
        audio_end = 0.0
        audio_start = None
        for frame in c.decode(video=0):
            info["video_pts"].append(frame.pts)
            info["rotation"] = frame.rotation
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            for pkt in c.demux(a):
                if pkt.pts is None or not pkt.size:
                    continue
                t0 = float(pkt.pts * pkt.time_base)
                audio_start = t0 if audio_start is None else min(audio_start, t0)
                audio_end = max(audio_end, float((pkt.pts + pkt.duration) * pkt.time_base))
            info["audio_duration"] = audio_end - (audio_start or 0.0)
            info["audio_codec"] = a.codec_context.name
            info["audio_rate"] = a.codec_context.sample_rate
    info["frames"] = len(info["video_pts"])
    return info


def wait_for_job(client, job_id: str, until=("done", "failed", "cancelled"), timeout: float = 60) -> dict:
    """Poll a ``vsr serve`` test client until the job reaches one of ``until`` (an AssertionError after ``timeout`` s)."""
    import time

    end = time.time() + timeout
    job: dict = {}
    while time.time() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job.get('status')}")

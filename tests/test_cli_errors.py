"""`vsr upscale` through the CLI: one clear line and exit code 1 for bad input, nothing left behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from clips import make_clip, probe
from conftest import X264_RERUN
from typer.testing import CliRunner

from vsr.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["upscale", *map(str, args), "--quiet"])


def assert_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    err = result.stderr if hasattr(result, "stderr") else result.output
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def leftovers(folder: Path, before: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - before


def test_success_prints_summary(tmp_path: Path, tiny_weights: Path):
    src = make_clip(tmp_path / "in.mp4", frames=6)
    res = run(src, "-o", tmp_path / "out.mp4", "--weights", tiny_weights, "--batch-size", "2", "--precision", "fp32")
    assert res.exit_code == 0, res.output
    assert "6 frames in, 6 out, 32x24 -> 128x96" in res.output and "fps" in res.output and "fp32" in res.output
    assert f"model {tiny_weights}," in res.output
    assert probe(tmp_path / "out.mp4")["frames"] == 6


def test_without_weights_a_video_gets_the_video_model_and_an_image_the_single_frame_one(tmp_path: Path):
    from vsr.cli.upscale import default_weights

    (tmp_path / "folder").mkdir()
    assert default_weights(tmp_path / "a.mp4") == "srresnet-flow" == default_weights(tmp_path / "b.mkv")
    assert default_weights(tmp_path / "a.png") == "srresnet-mse" == default_weights(tmp_path / "folder")
    assert default_weights(tmp_path / "a.mp4", tile=64) == "srresnet-mse"  # tiles: the video model cannot
    (tmp_path / "folder" / "x.png").write_bytes(b"")
    assert default_weights(tmp_path / "folder") == "srresnet-mse"  # images only
    (tmp_path / "folder" / "clip.MOV").write_bytes(b"")
    assert default_weights(tmp_path / "folder") == "srresnet-flow"  # a folder holding a video
    assert default_weights(tmp_path / "folder", tile=32) == "srresnet-mse"
    img = tmp_path / "in.png"
    cv2.imwrite(str(img), np.full((12, 16, 3), 90, np.uint8))
    res = run(img, "-o", tmp_path / "out.png", "--precision", "fp32")
    assert res.exit_code == 0 and "model srresnet-mse," in res.output, res.output
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "in.png"), cv2.imread(str(img)))
    make_clip(mixed / "clip.mp4", frames=3, width=16, height=12)
    res = run(mixed, "-o", tmp_path / "mixed_x4", "--precision", "fp32")
    assert res.exit_code == 0 and res.output.count("model srresnet-flow,") == 2, res.output
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "mixed_x4" / "in.png")), cv2.imread(str(tmp_path / "out.png")))


def test_missing_file(tmp_path: Path, tiny_weights: Path):
    assert_error(run(tmp_path / "nope.mp4", "--weights", tiny_weights), "nope.mp4", "no such file")


def test_not_a_media_file(tmp_path: Path, tiny_weights: Path):
    (tmp_path / "text.mp4").write_text("hello, I am not a video\n" * 20)
    before = {p.name for p in tmp_path.iterdir()}
    assert_error(run(tmp_path / "text.mp4", "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "text.mp4", "not a readable media file")
    assert leftovers(tmp_path, before) == set()


def test_no_video_stream(tmp_path: Path, tiny_weights: Path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(s.encode(frame))
        out.mux(s.encode(None))
    assert_error(run(path, "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "audio.m4a", "no video stream")
    assert not (tmp_path / "o.mp4").exists()


def test_zero_frames(tmp_path: Path, tiny_weights: Path):
    """A video stream that holds no frames (only the audio has packets)."""
    path = tmp_path / "empty.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height = 32, 24
        a = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(a.encode(frame))
        out.mux(a.encode(None))
    before = {p.name for p in tmp_path.iterdir()}
    assert_error(run(path, "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "empty.mkv", "no decodable frames")
    assert leftovers(tmp_path, before) == set()


def _corrupt(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    start = int(len(data) * 0.3)
    data[start : start + 200] = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_corrupt_packets_stop_with_the_frame_named(tmp_path: Path, tiny_weights: Path):
    src = _corrupt(make_clip(tmp_path / "good.mp4", frames=24, width=64, height=48, audio=None), tmp_path / "bad.mp4")
    before = {p.name for p in tmp_path.iterdir()}
    assert_error(run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "bad.mp4", "corrupt video data at video frame", "--skip-corrupt")
    assert leftovers(tmp_path, before) == set()
    ok = run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights, "--skip-corrupt")
    assert ok.exit_code == 0, ok.output
    assert "23 frames in, 23 out" in ok.output  # all but the one packet the decoder rejected
    assert "1 corrupt packet(s) skipped" in ok.output
    assert probe(tmp_path / "o.mp4")["frames"] == 23


def _damage_inside(src: Path, dst: Path, k: int) -> Path:
    """Overwrite a quarter of video packet ``k``'s payload: the decoder conceals the damage (is_corrupt frame)."""
    with av.open(str(src)) as c:
        pos, size = [(p.pos, p.size) for p in c.demux(video=0) if p.size][k]
    data = bytearray(src.read_bytes())
    n = max(4, size // 4)
    data[pos + size // 2 : pos + size // 2 + n] = np.random.default_rng(k).integers(0, 256, n, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_skip_corrupt_keeps_the_frames_the_decoder_concealed(tmp_path: Path, tiny_weights: Path):
    src = _damage_inside(make_clip(tmp_path / "good.mp4", frames=24, width=64, height=48, audio=None), tmp_path / "bad.mp4", 5)
    assert_error(run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "bad.mp4", "corrupt video data")
    ok = run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights, "--skip-corrupt")
    assert ok.exit_code == 0, ok.output
    assert "24 frames in, 24 out" in ok.output and "1 damaged frame(s) kept" in ok.output
    assert probe(tmp_path / "o.mp4")["frames"] == 24


def test_truncated_file(tmp_path: Path, tiny_weights: Path):
    data = make_clip(tmp_path / "good.mp4", frames=24, audio=None).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert_error(run(tmp_path / "cut.mp4", "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "cut.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_truncated_mkv_is_reported(tmp_path: Path, tiny_weights: Path):
    data = make_clip(tmp_path / "good.mkv", frames=24, audio=None).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    res = runner.invoke(app, ["upscale", str(tmp_path / "cut.mkv"), "-o", str(tmp_path / "o.mkv"), "--weights", str(tiny_weights)])
    assert res.exit_code == 0
    assert "truncated file?" in res.output


def test_output_not_writable(tmp_path: Path, tiny_weights: Path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    assert_error(run(src, "-o", tmp_path / "missing_dir" / "o.mp4", "--weights", tiny_weights), "does not exist")
    assert_error(run(src, "-o", "/proc/vsr-cannot-write.mp4", "--weights", tiny_weights), "vsr-cannot-write.mp4")


def test_output_equal_to_input(tmp_path: Path, tiny_weights: Path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    size = src.stat().st_size
    assert_error(run(src, "-o", src, "--weights", tiny_weights), "the output is the input")
    assert src.stat().st_size == size


def test_existing_output_needs_overwrite(tmp_path: Path, tiny_weights: Path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    (tmp_path / "o.mp4").write_bytes(b"keep me")
    assert_error(run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "already exists", "--overwrite")
    assert (tmp_path / "o.mp4").read_bytes() == b"keep me"
    assert run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights, "--overwrite").exit_code == 0
    assert probe(tmp_path / "o.mp4")["frames"] == 4


def test_bad_weights_and_options(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    assert_error(run(src, "--weights", tmp_path / "junk.pt"), "junk.pt", "not a readable weights file")
    assert_error(run(src, "--weights", "no-such-model"), "no-such-model")
    assert_error(run(src, "--precision", "fp8"), "--precision")
    beyond = __import__("torch").cuda.device_count()  # one index past the last device, GPU machines included
    assert_error(run(src, "--device", f"cuda:{beyond}", "--weights", tmp_path / "junk.pt"), f"cuda:{beyond}", "--device")


def test_unknown_codec_and_pix_fmt(tmp_path: Path, tiny_weights: Path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    assert_error(run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights, "--codec", "nosuchcodec"), "nosuchcodec")
    assert_error(run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights, "--pix-fmt", "rgb8"), "rgb8")
    assert not (tmp_path / "o.mp4").exists()


def test_interrupt_leaves_nothing(tmp_path: Path, engine, monkeypatch):
    src = make_clip(tmp_path / "in.mp4", frames=20)
    before = {p.name for p in tmp_path.iterdir()}
    calls = []

    def progress(n: int) -> None:
        calls.append(n)
        if len(calls) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.upscale_video(src, tmp_path / "o.mp4", progress=progress)
    assert leftovers(tmp_path, before) == set()


def test_piped_stderr_gets_whole_progress_lines_and_errors_at_line_start(tmp_path: Path, tiny_weights: Path, monkeypatch):
    from vsr.cli import upscale as upscale_cli

    monkeypatch.setattr(upscale_cli, "PROGRESS_EVERY_S", 0.0)  # a line for every frame
    src = make_clip(tmp_path / "in.mp4", frames=5)
    ok = runner.invoke(app, ["upscale", str(src), "-o", str(tmp_path / "o.mp4"), "--weights", str(tiny_weights)])
    assert ok.exit_code == 0, ok.output
    err = ok.stderr
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("progress: in.mp4: ")]
    assert len(lines) == 5 and lines[-1].startswith("progress: in.mp4: 5/5 frames (100%)"), err
    # an error after progress lines begins its own line (grep '^error:' finds it)
    (tmp_path / "o2.mp4").write_bytes(b"keep")
    bad = runner.invoke(app, ["upscale", str(src), "-o", str(tmp_path / "o2.mp4"), "--weights", str(tiny_weights)])
    assert bad.exit_code == 1 and any(line.startswith("error:") for line in bad.stderr.splitlines())
    quiet = runner.invoke(app, ["upscale", str(src), "-o", str(tmp_path / "o3.mp4"), "--weights", str(tiny_weights), "-q"])
    assert quiet.exit_code == 0 and "progress:" not in quiet.stderr


def test_piped_stderr_of_a_real_process_has_no_carriage_return(tmp_path: Path, tiny_weights: Path):
    _corrupt(make_clip(tmp_path / "in.mp4", frames=24, width=64, height=48, audio=None), tmp_path / "bad.mp4")
    out = subprocess.run([sys.executable, "-m", "vsr", "upscale", str(tmp_path / "bad.mp4"), "-o", str(tmp_path / "o.mp4"),
                          "--weights", str(tiny_weights)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "\r" not in out.stderr and "it/s" not in out.stderr and "frame/s" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")], out.stderr


def test_full_disk_names_the_output_not_the_temp_file(tmp_path: Path, tiny_weights: Path):
    """The hidden temp file is a link to /dev/full, whose writes fail with ENOSPC as on a full disk."""
    from vsr.atomic import temp_path_for

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    src = make_clip(tmp_path / "in.mp4", frames=4)
    for ext in ("mp4", "mkv"):
        target = tmp_path / f"out.{ext}"
        before = {p.name for p in tmp_path.iterdir()}
        temp_path_for(target).symlink_to("/dev/full")  # the CLI runs in this process: its temp name has this PID
        res = run(src, "-o", target, "--weights", tiny_weights)
        assert_error(res, str(target), "no space left", "a rerun resumes")
        assert "vsr-tmp" not in res.stderr
        # the join failed: the finished segment is kept for the rerun, which only joins
        assert leftovers(tmp_path, before) == {f".out.{ext}.vsr-work"} and not target.exists()
        res = runner.invoke(app, ["upscale", str(src), "-o", str(target), "--weights", str(tiny_weights), "--quiet"])
        assert res.exit_code == 0 and "resumed: 1 of 1 segments" in res.stderr, res.output
        assert leftovers(tmp_path, before) == {target.name}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_files_of_dead_runs_are_removed_with_a_note(tmp_path: Path, tiny_weights: Path):
    from vsr.atomic import HOST

    src = make_clip(tmp_path / "in.mp4", frames=3)
    dead = tmp_path / f".out.vsr-tmp-{HOST}-{_dead_pid()}.mp4"
    alive = tmp_path / f".out.vsr-tmp-{HOST}-{os.getppid()}.mp4"
    other_host = tmp_path / f".out.vsr-tmp-elsewhere-{_dead_pid()}.mp4"
    for p in (dead, alive, other_host):
        p.write_bytes(b"half a video")
    res = run(src, "-o", tmp_path / "out.mp4", "--weights", tiny_weights)
    assert res.exit_code == 0, res.output
    assert f"note: removed 1 temporary file(s) that a killed run left beside out.mp4: {dead.name}" in res.stderr
    assert not dead.exists() and alive.exists() and other_host.exists()


def _start_and_stop(src: Path, out: Path, weights: Path, sig: int) -> subprocess.CompletedProcess:
    """Run ``vsr upscale`` in a child, send ``sig`` once its first segment is finished, and wait."""
    proc = subprocess.Popen([sys.executable, "-m", "vsr", "upscale", str(src), "-o", str(out), "--weights", str(weights),
                             "--device", "cpu", "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out.with_name(f".{out.name}.vsr-work") / "seg-00000.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be stopped: " + proc.stderr.read()
    proc.send_signal(sig)
    out_text, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_text, err)


def test_sigterm_keeps_the_finished_segments_says_how_to_resume_and_the_rerun_does(tmp_path: Path, tiny_weights: Path):
    src = make_clip(tmp_path / "in.mp4", frames=400, width=64, height=48, audio=None)  # 3 segments of ~10 s
    out = tmp_path / "out.mp4"
    stopped = _start_and_stop(src, out, tiny_weights, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    line = [x for x in stopped.stderr.splitlines() if x.startswith("terminated:")]
    assert line and "of 3 segments of out.mp4 are done" in line[0] and "run the same command again" in line[0], line
    assert "Traceback" not in stopped.stderr
    work = tmp_path / ".out.mp4.vsr-work"
    assert not out.exists() and not list(tmp_path.rglob("*vsr-tmp*")) and not (work / "lock").exists()
    res = run(src, "-o", out, "--weights", tiny_weights, "--device", "cpu")
    assert res.exit_code == 0 and "resumed:" in res.stderr and "400 frames in, 400 out" in res.stdout, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4", "tiny.pt"]


@X264_RERUN
@pytest.mark.slow
def test_sigkill_mid_run_then_a_rerun_makes_the_same_video_packets(tmp_path: Path, tiny_weights: Path):
    """kill -9 leaves the cut segment's temp file and the lock of a dead pid: the rerun removes both, redoes that
    segment, and the file has the very packets of an uninterrupted run (x264 at a fixed thread count and the
    model on the CPU are deterministic)."""
    src = make_clip(tmp_path / "in.mkv", frames=400, width=64, height=48, audio="aac")
    whole = tmp_path / "whole.mkv"
    assert run(src, "-o", whole, "--weights", tiny_weights, "--device", "cpu", "--batch-size", "1").exit_code == 0
    out = tmp_path / "out.mkv"
    killed = _start_and_stop(src, out, tiny_weights, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    work = tmp_path / ".out.mkv.vsr-work"
    assert (work / "lock").exists() and not out.exists()
    res = run(src, "-o", out, "--weights", tiny_weights, "--device", "cpu", "--batch-size", "1")
    assert res.exit_code == 0 and "resumed:" in res.stderr, res.output

    def packets(path: Path, kind: str) -> list[tuple]:
        with av.open(str(path)) as c:
            s = [s for s in c.streams if s.type == kind][0]
            return [(p.pts, p.dts, bytes(p)) for p in c.demux(s) if p.size]

    assert packets(out, "video") == packets(whole, "video") and len(packets(out, "video")) == 400
    assert packets(out, "audio") == packets(whole, "audio")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv", "tiny.pt", "whole.mkv"]


def test_frame_too_large_for_the_encoder_fails_before_any_model_work(tmp_path: Path, tiny_weights: Path, monkeypatch):
    from vsr.inference import Upscaler

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran before the encoder's limits were checked")

    monkeypatch.setattr(Upscaler, "upscale", no_model)
    src = make_clip(tmp_path / "wide.mp4", frames=2, width=4200, height=16, audio=None)
    before = {p.name for p in tmp_path.iterdir()}
    assert_error(run(src, "-o", tmp_path / "o.mp4", "--weights", tiny_weights), "16800x64", "too large for libx264",
                 "--codec libx265")
    assert leftovers(tmp_path, before) == set()


def test_a_stop_that_python_swallows_is_raised_again_at_the_next_frame(monkeypatch):
    """A signal handler's exception raised inside a weakref callback (the garbage collector's) is printed as
    "Exception ignored" and lost; the stop is kept and the engine raises it at its next frame, once."""
    import weakref

    import torch

    from vsr import interrupt
    from vsr.cli import Terminated, _raise_terminated
    from vsr.inference import Upscaler
    from vsr.models import SRResNet
    from vsr.pipeline import Engine

    class Thing:
        pass

    engine = Engine(Upscaler(SRResNet(num_blocks=1, channels=8).eval(), device=torch.device("cpu")), batch_size=1)
    frames = [np.zeros((6, 5, 3), np.uint8)] * 3
    swallowed: list = []
    monkeypatch.setattr(sys, "unraisablehook", swallowed.append)  # where Python sends it (it prints it, by default)
    thing = Thing()
    ref = weakref.ref(thing, lambda _: _raise_terminated(signal.SIGTERM, None))
    del thing  # the callback raises Terminated; Python reports it as unraisable and goes on
    assert ref() is None and [u.exc_type for u in swallowed] == [Terminated]
    with pytest.raises(Terminated):
        list(engine.upscale_frames(iter(frames)))
    assert len(list(engine.upscale_frames(iter(frames)))) == 3  # raised once: the next run is not stopped
    interrupt.clear()


def test_a_swallowed_stop_prints_no_traceback_and_ends_the_command_as_sigterm(monkeypatch):
    """Under ``user_errors`` Python's "Exception ignored" report of a swallowed stop is silenced (other
    unraisable errors still reach the previous hook), and the stop ends the command with 143."""
    import weakref

    import typer

    from vsr import interrupt
    from vsr.cli import _raise_terminated, user_errors

    class Thing:
        pass

    reported: list = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with pytest.raises(typer.Exit) as stop:
        with user_errors():
            thing = Thing()
            ref = weakref.ref(thing, lambda _: _raise_terminated(signal.SIGTERM, None))
            del thing
            other = Thing()
            ref2 = weakref.ref(other, lambda _: 1 / 0)
            del other
            assert ref() is None and ref2() is None
            interrupt.check()  # what the frame loop does
    assert stop.value.exit_code == 143
    assert [u.exc_type for u in reported] == [ZeroDivisionError]  # only the unrelated error was reported
    assert sys.unraisablehook == reported.append  # restored

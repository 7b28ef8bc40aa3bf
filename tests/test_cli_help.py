"""`vsr --help` (and each command's) answers without importing torch, PyAV, OpenCV or NumPy: they load in the
command functions, so a usage question costs a Python start-up, not seconds of imports."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "av", "cv2", "numpy", "PIL", "fastapi", "rich")

PROBE = """
import sys
sys.argv = ["vsr", *sys.argv[1:]]
import vsr.cli
try:
    vsr.cli.main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print("loaded:", ",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["upscale", "--help"], ["bench", "--help"],
                                  ["serve", "--help"], ["train", "export", "--help"]])
def test_help_does_not_import_the_heavy_stack(args: list[str]):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "loaded:", proc.stdout[-300:]


def test_a_terminal_gets_the_bar_and_a_pipe_gets_lines(monkeypatch):
    import sys

    from vsr.cli.upscale import LineProgress, progress_display

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress_display(False)
    assert type(bar).__name__ == "tqdm"
    bar.close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress_display(False), LineProgress)

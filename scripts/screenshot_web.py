"""Regenerate docs/web-page.png: the web page of `vsr serve` after upscaling samples/calendar.mp4 with the
shipped default model, comparison visible (the browser test, run with the shipped weights and
VSR_SCREENSHOT set; needs chromium and chromium-driver).

    python scripts/screenshot_web.py [OUT.png]
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "web-page.png").resolve()
    env = dict(os.environ, VSR_SCREENSHOT=str(out), VSR_WEB_WEIGHTS="srresnet-mse")
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_web_browser.py", "-k", "sample_clip"],
                         cwd=ROOT, env=env)
    if rc == 0 and not out.is_file():
        sys.exit(f"no screenshot was written to {out} (was the test skipped?)")
    print(f"{out}: {out.stat().st_size // 1024} KB" if rc == 0 else "the browser test failed; no screenshot")
    sys.exit(rc)

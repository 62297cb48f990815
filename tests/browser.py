"""Headless Chromium for report tests: a screenshot and the DOM after the page's scripts ran.

Snakemake 9's report is a React app inlined into one HTML file: its content exists only after the
scripts run. `--virtual-time-budget=MS` makes headless Chromium advance a virtual clock until the
page is idle or the budget is spent before it screenshots or dumps the DOM, so the React render
(scheduled asynchronously by createRoot) has happened.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
from matplotlib.image import imread

BUDGET_MS = 10_000
FLAGS = [
    "--headless",
    "--no-sandbox",  # root in containers/CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--virtual-time-budget={BUDGET_MS}",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("no chromium on PATH (Debian: apt-get install chromium)")


def _browser(args, tmp: Path, timeout=120) -> subprocess.CompletedProcess:
    profile = tmp / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(html: Path, png: Path, tmp: Path, size=(1400, 1000)) -> np.ndarray:
    """Render the page and return the screenshot as an RGB float array."""
    proc = _browser(
        [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", html.resolve().as_uri()],
        tmp,
    )
    assert png.exists(), f"chromium wrote no screenshot: {proc.stderr[-2000:]}"
    return imread(png)[..., :3]


def rendered_dom(html: Path, tmp: Path) -> str:
    proc = _browser(["--dump-dom", html.resolve().as_uri()], tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def assert_not_blank(img: np.ndarray) -> None:
    gray = img.mean(axis=2)
    assert gray.std() > 0.05, "screenshot is uniform"
    assert (gray < 0.9).mean() > 0.02, "screenshot is nearly all white"
    assert (gray < 0.3).sum() > 500, "no dark pixels: no text was drawn"

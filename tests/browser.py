"""A real Streamlit server on loopback and a real headless Chromium driven by Playwright, for the demo tests.

Chromium is Debian's (`apt-get install chromium`; .ci/run installs it); Playwright drives it through
executable_path, so nothing is downloaded. Without a Chromium the browser tests are skipped, unless
FT_REQUIRE_BROWSER=1 (set by CI), which turns the skip into a failure.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Flags for a closed network: no background connections, no first-run or component updates.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def find_chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    message = "no Chromium found: install Debian's (sudo apt-get install chromium) or set CHROMIUM=/path"
    if os.environ.get("FT_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(page: str, runs_root: Path, timeout: float = 120.0):
    """`python -m apps.<product>.demo` (the README's command) started from a folder outside the repository, with
    FT_RUNS_DIR=runs_root; yields its URL once /_stcore/health is ok."""
    port = free_port()
    env = {**os.environ, "FT_RUNS_DIR": str(runs_root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    module = ".".join(Path(page).resolve().relative_to(ROOT).with_suffix("").parts)
    log = (ROOT / "tests" / "output")
    log.mkdir(exist_ok=True)
    out = (log / f"streamlit-{Path(page).parent.name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", module, "--server.port", str(port)],
                            cwd=runs_root, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {out.name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s; see {out.name}")
            time.sleep(0.5)
        yield url, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()


@contextlib.contextmanager
def chromium():
    """Headless Debian Chromium under Playwright; `new_page(browser)` opens one tab (one Streamlit session)."""
    executable = find_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(240_000)  # the first page load also loads the model, on a busy 2-core CPU
    return page

"""Browser tests of the course as a learner meets it (`make test-browser`).

A real JupyterLab on 127.0.0.1 (its own free port, a random token, temporary working copies of the
notebooks under build/browser/) and the offline handout of `make html`, both driven in Debian's
headless Chromium by Playwright. Playwright's own browser download is not used (it fails offline):
``CHROMIUM`` names the executable, else ``chromium`` on PATH. Every request outside the page's own
origin is refused and recorded, so a page that needs the network fails its test. The server is
always stopped, with every kernel it started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from course_pages import NOTEBOOKS, ROOT, SCREENSHOTS, SITE, GuardedPage, LabServer, api

# Chromium with no background traffic: this machine (and a workshop laptop) has no network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SERVER_START_S = 120


def chromium_path() -> str:
    """The Chromium executable: $CHROMIUM, else chromium (Debian) or chromium-browser on PATH."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        pytest.fail("no Chromium: install it (Debian: apt-get install chromium; `make test-browser` does) "
                    "or set CHROMIUM=/path/to/chromium")
    return found


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def guarded_page(browser: Browser, allowed: tuple[str, ...]) -> tuple[GuardedPage, object]:
    """A new page in its own context, refusing every request whose URL does not start with ``allowed``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    guard = GuardedPage(page)

    def route(r):
        if r.request.url.startswith(allowed) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            guard.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("requestfailed", lambda req: req.url.startswith(allowed) and guard.failed.append(
        f"{req.url}: {req.failure}"))
    page.on("console", lambda msg: msg.type == "error" and guard.console_errors.append(msg.text))
    return guard, context


@pytest.fixture
def site_page(browser: Browser) -> Iterator[GuardedPage]:
    """A page for the offline handout: only file:// URLs load."""
    if not (SITE / "index.html").exists():
        pytest.fail(f"no {SITE}/index.html: build the handout first (`make html`; `make test-browser` does)")
    guard, context = guarded_page(browser, ("file://",))
    yield guard
    context.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server is told not to try others)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_lab_root(parent: Path) -> Path:
    """Working copies in ``<root>/notebooks/`` beside a ``data`` link, as ``make lab`` lays them out.

    Settings live in the root too: the learner's own are not read, and every notebook cell is
    rendered at once (windowing off) so that each output can be checked.
    """
    root = Path(tempfile.mkdtemp(prefix="lab-", dir=parent))
    (root / "notebooks").mkdir()
    for nb in NOTEBOOKS:
        shutil.copy2(nb, root / "notebooks" / nb.name)
    (root / "data").symlink_to(ROOT / "data", target_is_directory=True)
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = root / ".settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    return root


def wait_until_up(server: LabServer) -> None:
    """Poll the server's status API until it answers, or fail with the end of its log."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.process.returncode}:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/api/status?token={server.token}", timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{server.log.read_text()[-3000:]}")


def stop(server: LabServer) -> None:
    """Stop the server and every process it started (kernels run in sessions of their own)."""
    try:
        family = [server.process.pid] + [c.pid for c in psutil.Process(server.process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [server.process.pid]
    procs = []
    for pid in family:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)


def interrupt(signum, frame) -> None:
    """SIGTERM as Ctrl-C: pytest then still runs the fixtures' teardown."""
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab() -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1, a free port, a random token, serving temporary working copies."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    root = make_lab_root(SCREENSHOTS)
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_PREFER_ENV_PATH="1", JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"), JUPYTER_CONFIG_DIR=str(root / ".config"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    log = root / "server.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, process, log)
    previous = signal.signal(signal.SIGTERM, interrupt)  # so that a killed test run still stops the server
    try:
        wait_until_up(server)
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(server)
        shutil.copy(log, SCREENSHOTS / "lab-server.log")
        shutil.rmtree(root, ignore_errors=True)
        assert process.poll() is not None, f"JupyterLab (pid {process.pid}) still runs"


@pytest.fixture
def lab_page(browser: Browser, lab: LabServer) -> Iterator[GuardedPage]:
    """A page for JupyterLab: only the server's own URL loads."""
    guard, context = guarded_page(browser, (lab.url + "/",))
    yield guard
    context.close()
    shutdown_kernels(lab)


def shutdown_kernels(lab: LabServer) -> None:
    """End every kernel the server runs, so one test's notebook does not load the CPU of the next."""
    for kernel in api(lab, "GET", "kernels"):
        api(lab, "DELETE", f"kernels/{kernel['id']}")


# test_hub.py is `make test-hub`'s, a CI phase of its own (it needs the hub extra and configurable-http-proxy
# from npm): collecting the folder (`make test-browser`) leaves it out; naming the file runs it.
collect_ignore = ["test_hub.py"]

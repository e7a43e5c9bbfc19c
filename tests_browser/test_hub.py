"""The workshop hub (`make test-hub`): two participants in Chromium, each in their own working copies.

A real JupyterHub from scripts/hub/jupyterhub_config.py (its proxy from npm, SimpleLocalProcessSpawner, the
shared password) on free ports of 127.0.0.1, with its folder under build/browser/. Two users log in, open
their working copy of notebook 01, run its first cells and a cell of their own that writes a file; the
files must land in each user's folder only, the kernels must see the per-user thread cap, and notebooks/
must be untouched. Each user's memory (server + kernel) is written to build/browser/hub-memory.json. The
hub is stopped at the end with every process it started, and its ports must be free again.
"""
from __future__ import annotations

import json
import os
import re
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Browser

from conftest import free_port, guarded_page, interrupt
from course_pages import NOTEBOOKS, ROOT, SCREENSHOTS

CONFIG = ROOT / "scripts" / "hub" / "jupyterhub_config.py"
USERS = ("ada", "bob")
NOTEBOOK = "01_coupled_channels.ipynb"
FIRST_CODE_CELLS = 2       # notebook 01's imports, then two models built and their DFCs discovered
HUB_START_S = 120
SPAWN_TIMEOUT_MS = 300_000  # a user's server and JupyterLab, on a loaded 2-core machine
RUN_TIMEOUT_MS = 300_000


@dataclass
class Hub:
    """A running hub: its URL, the shared password, its folder, its process and the ports it took."""
    url: str
    password: str
    dir: Path
    process: subprocess.Popen
    log: Path
    ports: list[int]
    listening: set[int] = field(default_factory=set)   # every port its processes listened on

    def home(self, user: str) -> Path:
        return self.dir / "users" / user


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "notebooks", "data"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout


def family(process: subprocess.Popen) -> list[psutil.Process]:
    """The hub and every process it started: proxy, users' servers, their kernels."""
    try:
        root = psutil.Process(process.pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def listening_ports(procs: list[psutil.Process]) -> set[int]:
    ports = set()
    for p in procs:
        try:
            ports |= {c.laddr.port for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_hub(hub: Hub) -> list[psutil.Process]:
    """SIGTERM the hub (it stops the users' servers and its proxy), then kill what is left; the survivors."""
    procs = family(hub.process)
    hub.listening |= listening_ports(procs)
    hub.process.send_signal(signal.SIGTERM)
    try:
        hub.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(procs, timeout=30)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return alive


def wait_until_up(hub: Hub) -> None:
    deadline = time.monotonic() + HUB_START_S
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            pytest.fail(f"JupyterHub exited with {hub.process.returncode}:\n{hub.log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{hub.url}/hub/api/", timeout=5) as answer:
                if "version" in json.loads(answer.read()):
                    return
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.5)
    pytest.fail(f"JupyterHub did not answer within {HUB_START_S} s:\n{hub.log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="hub-", dir=SCREENSHOTS))
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port not in ports:
            ports.append(port)
    # The project's config, plus what the test reads: JupyterLab's application object in the page.
    config = folder / "test_jupyterhub_config.py"
    config.write_text(f"load_subconfig({str(CONFIG)!r})\n"
                      "c.Spawner.args = list(c.Spawner.args) + ['--LabApp.expose_app_in_browser=True']\n")
    password = secrets.token_hex(8)
    env = dict(os.environ, HUB_DIR=str(folder), HUB_PORT=str(ports[0]), HUB_API_PORT=str(ports[1]),
               HUB_PROXY_API_PORT=str(ports[2]), HUB_PASSWORD=password, HUB_SOURCE=str(ROOT / "notebooks"),
               HUB_THREADS="1", HUB_IP="127.0.0.1")
    log = folder / "hub.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=folder, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    server = Hub(f"http://127.0.0.1:{ports[0]}", password, folder, process, log, ports)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        wait_until_up(server)
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)
        survivors = stop_hub(server)
        shutil.copy(log, SCREENSHOTS / "hub-server.log")
        shutil.rmtree(folder, ignore_errors=True)
        assert process.poll() is not None, f"JupyterHub (pid {process.pid}) still runs"
        assert not survivors, f"processes the hub started did not stop when it did: {survivors}"
        taken = [p for p in sorted(set(ports) | server.listening) if not port_free(p)]
        assert not taken, f"ports still taken after the hub stopped: {taken}"


def log_in(browser: Browser, hub: Hub, user: str):
    """Log ``user`` in with the shared password and wait for their JupyterLab; the guarded page and its context."""
    guard, context = guarded_page(browser, (hub.url + "/",))
    page = guard.page
    page.set_default_timeout(SPAWN_TIMEOUT_MS)
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(rf"/user/{user}/lab"), timeout=SPAWN_TIMEOUT_MS)
    # The spawn-pending page's progress stream is cut when it redirects to JupyterLab: not a failure.
    guard.failed[:] = [f for f in guard.failed if not f.endswith("net::ERR_ABORTED")]
    page.wait_for_function("() => window.jupyterapp", timeout=SPAWN_TIMEOUT_MS)
    page.evaluate("""async path => {
        const app = window.jupyterapp;
        await app.restored;
        const panel = await app.commands.execute('docmanager:open', {path});
        await panel.context.ready; await panel.sessionContext.ready;
        while (!panel.sessionContext.session?.kernel || panel.sessionContext.session.kernel.status !== 'idle')
            await new Promise(r => setTimeout(r, 200));
    }""", NOTEBOOK)
    return guard, context


def run_cell_and_first_cells(page, user: str) -> str:
    """A new first cell that writes a file and shows the kernel's threads, then the notebook's first cells.

    The new cell runs first, in the fresh kernel: notebook 01 itself calls ``torch.set_num_threads(2)``.
    Returns the new cell's output.
    """
    code = (f"import os, torch\nfrom pathlib import Path\nPath('written_by_{user}.txt').write_text('{user}')\n"
            "print('user', os.environ['JUPYTERHUB_USER'], 'threads', torch.get_num_threads(), 'cwd', Path.cwd().name)")
    page.evaluate("""async code => {
        const app = window.jupyterapp, nb = app.shell.currentWidget.content;
        nb.activeCellIndex = 0;
        await app.commands.execute('notebook:insert-cell-above');
        nb.activeCell.model.sharedModel.setSource(code);
        await app.commands.execute('notebook:run-cell');
    }""", code)
    # Run everything above the cell after the first code cells (one more: the new cell sits on top).
    page.evaluate("i => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = i; }",
                  first_cells_end() + 1)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-above')")
    page.wait_for_timeout(500)
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
                           " === 'idle'", timeout=RUN_TIMEOUT_MS, polling=200)
    # From the cell's model: JupyterLab does not render cells scrolled out of view.
    return page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets[0].model.outputs.toJSON()
                              .map(o => [].concat(o.text || [], o.traceback || []).join('')).join('')""")


def first_cells_end() -> int:
    """The index of the cell after notebook 01's first ``FIRST_CODE_CELLS`` code cells."""
    cells = json.loads((ROOT / "notebooks" / NOTEBOOK).read_text())["cells"]
    code = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code"]
    return code[FIRST_CODE_CELLS - 1] + 1


def user_memory(hub: Hub, user: str) -> dict[str, float]:
    """Memory in MB of ``user``'s server (jupyterhub-singleuser) and kernels (RSS, and their USS); the kernels' CPU time."""
    for p in family(hub.process):
        try:
            if p.environ().get("JUPYTERHUB_USER") == user and "jupyterhub-singleuser" in " ".join(p.cmdline()):
                kernels = p.children(recursive=True)
                server, kernel = p.memory_full_info(), [k.memory_full_info() for k in kernels]
                return {"server_rss_mb": round(server.rss / 2**20),
                        "kernels_rss_mb": round(sum(k.rss for k in kernel) / 2**20),
                        "total_rss_mb": round((server.rss + sum(k.rss for k in kernel)) / 2**20),
                        # USS: the memory only this user's processes hold (shared libraries counted once).
                        "total_uss_mb": round((server.uss + sum(k.uss for k in kernel)) / 2**20),
                        "kernels_cpu_s": round(sum(sum(k.cpu_times()[:2]) for k in kernels), 1)}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    pytest.fail(f"no jupyterhub-singleuser process of {user} among the hub's children")


def test_a_wrong_password_is_refused(browser: Browser, hub: Hub) -> None:
    guard, context = guarded_page(browser, (hub.url + "/",))
    try:
        page = guard.page
        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", "eve")
        page.fill("#password_input", hub.password + "x")
        page.click("#login_submit")
        page.wait_for_load_state()
        assert "/hub/login" in page.url, page.url
        assert page.get_by_text("Invalid username or password").count() == 1
        assert not hub.home("eve").exists(), "a refused login got a folder"
    finally:
        context.close()


def test_two_users_work_in_separate_copies_and_leave_notebooks_untouched(browser: Browser, hub: Hub) -> None:
    before = git_status()
    sessions = {}
    outputs = {}
    try:
        for user in USERS:
            sessions[user] = log_in(browser, hub, user)
            outputs[user] = run_cell_and_first_cells(sessions[user][0].page, user)
            sessions[user][0].page.screenshot(path=str(SCREENSHOTS / f"hub-{user}.png"))
        memory = {user: user_memory(hub, user) for user in USERS}   # both servers running at once
        hub_and_proxy = [p for p in family(hub.process)
                         if p.pid == hub.process.pid or "configurable-http-proxy" in " ".join(p.cmdline())]
        (SCREENSHOTS / "hub-memory.json").write_text(json.dumps(
            {"after": f"one cell and the first {FIRST_CODE_CELLS} code cells of {NOTEBOOK}", "users": memory,
             "hub_and_proxy_rss_mb": round(sum(p.memory_info().rss for p in hub_and_proxy) / 2**20)},
            indent=1) + "\n")
        print(f"memory per user: {memory}")
        for guard, _ in sessions.values():
            guard.assert_offline()
    finally:
        for _, context in sessions.values():
            context.close()

    for user in USERS:
        other = next(u for u in USERS if u != user)
        assert f"user {user} threads 1 cwd {user}" in outputs[user], outputs[user]
        assert "Traceback" not in outputs[user], outputs[user]
        assert (hub.home(user) / f"written_by_{user}.txt").read_text() == user
        assert not (hub.home(other) / f"written_by_{user}.txt").exists(), f"{user}'s file is in {other}'s folder"
        # Each user got a working copy of every course notebook, and only those (plus their own file).
        copies = sorted(p.name for p in hub.home(user).glob("*.ipynb"))
        assert copies == [nb.name for nb in NOTEBOOKS]
    assert not list((ROOT / "notebooks").glob("written_by_*")), "a user's cell wrote into notebooks/"
    assert git_status() == before, "the hub changed notebooks/ or data/"

"""What the browser tests share: where things are, what a notebook should show, pages and the server."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCREENSHOTS = ROOT / "build" / "browser"
SITE = ROOT / "build" / "html"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
RAW_MATH = re.compile(r"\$\$[^$]+\$\$|\\\(|\\\[|\$[^$\s][^$\n]*\\[a-zA-Z]+[^$\n]*\$")  # TeX still in the text


def stored(nb: Path) -> dict[str, int]:
    """What a notebook's stored outputs should show: figures, widget views, and whether it has math."""
    cells = json.loads(nb.read_text())["cells"]
    outputs = [o.get("data", {}) for c in cells for o in c.get("outputs", [])]
    math = any("$" in "".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return {"png": sum("image/png" in d for d in outputs), "widgets": sum(WIDGET_VIEW in d for d in outputs),
            "math": int(math)}


@dataclass
class GuardedPage:
    """A page that may load only from ``allowed`` origins; what it tried elsewhere, and its errors."""

    page: Page
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def assert_offline(self) -> None:
        assert not self.blocked, f"the page tried to load from the network: {self.blocked}"
        assert not self.failed, f"requests failed: {self.failed}"


@dataclass
class LabServer:
    """A running JupyterLab: where it listens, its token, and the folder it serves."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def notebook_url(self, name: str, workspace: str) -> str:
        return f"{self.url}/lab/workspaces/{workspace}/tree/notebooks/{name}?token={self.token}"

    def working_copy(self, name: str) -> Path:
        return self.root / "notebooks" / name


def api(lab: LabServer, method: str, path: str) -> object:
    """One call to the server's REST API (with its token); the decoded JSON answer, if any."""
    request = urllib.request.Request(f"{lab.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {lab.token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read()
    return json.loads(body) if body else None

"""Build the course's offline handout (`make html`): one HTML page per stored executed notebook.

nbconvert's lab template loads MathJax, require.js and the Jupyter widget manager from CDNs, so
offline a page shows raw ``$...$`` and empty widget areas. Here those scripts come from npm packages
pinned in ``scripts/site/assets.json`` (fetched once with ``npm pack``, checked against their
integrity hashes, cached) and are copied into ``_static/``; every page then works from ``file://``.

    python scripts/site/build_html.py notebooks build/html
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2
import mistune
import nbconvert
import nbformat
from nbconvert import HTMLExporter
from traitlets.config import Config

HERE = Path(__file__).resolve().parent
ASSETS_FILE = HERE / "assets.json"
TEMPLATES = HERE / "templates"
COURSE_TITLE = "Data-free structured pruning: a Jupyter course"
STATIC = "_static"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# A script or stylesheet loaded from the network (what must not remain in an offline page).
REMOTE_LOAD = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


@dataclass(frozen=True)
class Asset:
    """One npm package the pages load, pinned by version and integrity hash."""

    key: str
    package: str
    version: str
    integrity: str
    files: tuple[str, ...]

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name `npm pack` gives it (a scope's @ dropped, its / turned into -)."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"


@dataclass(frozen=True)
class Page:
    """One notebook's page in the site, for the index and the navigation bar."""

    notebook: Path
    href: str
    title: str
    summary: str  # the notebook's first paragraph, as HTML
    has_widget_state: bool


def load_assets(path: Path = ASSETS_FILE) -> list[Asset]:
    """The pinned packages of ``assets.json``."""
    spec = json.loads(path.read_text())
    return [Asset(key, d["package"], d["version"], d["integrity"], tuple(d["files"]))
            for key, d in spec.items() if not key.startswith("_")]


def integrity_of(path: Path) -> str:
    """The file's ``sha512-<base64>`` integrity string (as in npm lock files)."""
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def default_cache() -> Path:
    """Where fetched packages are kept between builds (they survive `make clean`)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "pruning-course" / "npm"


def fetch(asset: Asset, cache: Path) -> Path:
    """The package's tarball, from the cache or ``npm pack``; an error if its hash is not the pinned one."""
    tarball = cache / asset.tarball
    if not tarball.exists():
        if shutil.which("npm") is None:
            raise SystemExit(f"make html needs {asset.spec} from the npm registry, and there is no `npm` on "
                             f"PATH: install Node.js and npm (Debian: apt-get install npm), or put "
                             f"{asset.tarball} in {cache}")
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            done = subprocess.run(["npm", "pack", asset.spec, "--pack-destination", tmp, "--silent"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0 or not (Path(tmp) / asset.tarball).exists():
                raise SystemExit(f"`npm pack {asset.spec}` failed (exit {done.returncode}; no network, or no "
                                 f"such package?): {done.stderr.strip()[-500:]}")
            (Path(tmp) / asset.tarball).replace(tarball)
    found = integrity_of(tarball)
    if found != asset.integrity:
        raise SystemExit(f"{tarball} is not {asset.spec} as pinned in {ASSETS_FILE}: its hash is {found}, "
                         f"the pin {asset.integrity}. Delete the file to fetch it again, or update the pin "
                         f"after checking the new version")
    return tarball


def wanted(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a package path (without npm's ``package/`` prefix) is one of ``patterns``."""
    return any(name.startswith(p) if p.endswith("/") else fnmatch.fnmatchcase(name, p) for p in patterns)


def unpack(asset: Asset, tarball: Path, dest: Path) -> int:
    """Copy the package's wanted files into ``dest``; the number of files copied."""
    count = 0
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/")
            if not member.isfile() or not wanted(name, asset.files):
                continue
            target = dest / name
            if not target.resolve().is_relative_to(dest.resolve()):
                raise SystemExit(f"{tarball}: {member.name} would be written outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    missing = [p for p in asset.files if not any(
        wanted(str(f.relative_to(dest)), (p,)) for f in dest.rglob("*") if f.is_file())]
    if missing:
        raise SystemExit(f"{asset.spec} has no {', '.join(missing)}: fix `files` in {ASSETS_FILE}")
    return count


def first_paragraph(nb: nbformat.NotebookNode, path: Path) -> tuple[str, str]:
    """The notebook's title (its first ``#`` heading) and the paragraph after it, as HTML."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        blocks = [b.strip() for b in cell.source.strip().split("\n\n")]
        if blocks and blocks[0].startswith("# "):
            title = blocks[0].splitlines()[0][2:].strip()
            summary = mistune.html(blocks[1]).strip() if len(blocks) > 1 else ""
            return title, summary
    raise SystemExit(f"{path} has no '# title' markdown heading: the site's index needs one")


def read_pages(notebooks: list[Path]) -> list[tuple[Page, nbformat.NotebookNode]]:
    """Each notebook read once, with what the site needs to know about it."""
    pages = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        title, summary = first_paragraph(nb, path)
        pages.append((Page(path, path.with_suffix(".html").name, title, summary,
                           WIDGET_STATE in nb.metadata.get("widgets", {})), nb))
    return pages


def exporter() -> HTMLExporter:
    """nbconvert's lab template with our navigation bar and every script served from ``_static/``."""
    c = Config()
    c.HTMLExporter.extra_template_basedirs = [str(TEMPLATES)]
    c.HTMLExporter.template_name = "course"
    c.HTMLExporter.exclude_raw = True  # the course's raw cells are otter-grader directives, not for reading
    c.HTMLExporter.mathjax_url = f"{STATIC}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"
    c.HTMLExporter.require_js_url = f"{STATIC}/requirejs/require.js"
    c.HTMLExporter.widget_renderer_url = f"{STATIC}/html-manager/dist/embed-amd.js"
    return HTMLExporter(config=c)


def nav(pages: list[Page], i: int) -> dict:
    """What the template's navigation bar links for page ``i``: the index, the previous and next notebook."""
    return {"course_title": COURSE_TITLE,
            "previous": pages[i - 1] if i > 0 else None,
            "next": pages[i + 1] if i + 1 < len(pages) else None}


NOTEBOOK_LINK = re.compile(r'href="([\w.-]+)\.ipynb(#[^"]*)?"')


def link_pages(html: str, hrefs: set[str]) -> str:
    """Point links between the course's notebooks (``02_dfpc.ipynb#...``) at their pages in the handout."""
    return NOTEBOOK_LINK.sub(lambda m: f'href="{m[1]}.html{m[2] or ""}"' if f"{m[1]}.html" in hrefs else m[0], html)


def check_offline(html: str, name: str) -> None:
    """Fail if a page still loads a script, stylesheet or image from the network."""
    match = REMOTE_LOAD.search(html)
    if match:
        raise SystemExit(f"{name} would load {match.group(0)!r}... from the network: "
                         f"serve it from {STATIC}/ (scripts/site/assets.json)")


def build(notebooks: list[Path], out: Path, cache: Path) -> list[Page]:
    """Write the site into ``out`` (built aside, then swapped in, so a failed build leaves none half-made)."""
    if not notebooks:
        raise SystemExit("no notebooks to build the site from")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would keep a web server (or another user) out
    try:
        for asset in load_assets():
            n = unpack(asset, fetch(asset, cache), staging / STATIC / asset.key)
            print(f"{asset.spec}: {n} files -> {out / STATIC / asset.key}")
        pages_nbs = read_pages(notebooks)
        pages = [p for p, _ in pages_nbs]
        html_exporter = exporter()
        for i, (page, nb) in enumerate(pages_nbs):
            html, _ = html_exporter.from_notebook_node(
                nb, resources={"metadata": {"name": page.notebook.stem}, "course_nav": nav(pages, i)})
            html = link_pages(html, {p.href for p in pages})
            check_offline(html, page.href)
            (staging / page.href).write_text(html, encoding="utf-8")
            state = "with its widgets' saved state" if page.has_widget_state else "no widget state saved"
            print(f"{page.notebook} -> {out / page.href} ({state})")
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False)
        index = env.get_template("site_index.html.j2").render(
            course_title=COURSE_TITLE, pages=pages, source=notebooks[0].parent.name,
            nbconvert_version=nbconvert.__version__)
        (staging / "index.html").write_text(index, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", type=Path, help="folder of the executed notebooks (notebooks/)")
    parser.add_argument("out", type=Path, help="the site's folder (build/html), replaced whole")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="where the npm packages are kept (default: %(default)s)")
    args = parser.parse_args(argv)
    pages = build(sorted(args.notebooks.glob("*.ipynb")), args.out, args.cache)
    print(f"{len(pages)} notebooks: open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

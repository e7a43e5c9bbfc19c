"""The scripts behind `make lab`, `make html` and `make wheelhouse`, without a browser (fast)."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import pytest

from course_pages import ROOT

sys.path.insert(0, str(ROOT / "scripts" / "site"))
import build_html  # noqa: E402
import extras  # noqa: E402
import working_copies  # noqa: E402


def notebooks(folder: Path, **texts: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / f"{name}.ipynb").write_text(text)
    return folder


def test_sync_copies_once_and_keeps_the_learners_edits(tmp_path: Path) -> None:
    src = notebooks(tmp_path / "notebooks", a="reference a", b="reference b")
    dst = tmp_path / "work"
    assert working_copies.sync(src, dst).copied == ["a.ipynb", "b.ipynb"]
    (dst / "a.ipynb").write_text("my edits")
    again = working_copies.sync(src, dst)
    assert again.copied == [] and again.kept == ["a.ipynb", "b.ipynb"]
    assert (dst / "a.ipynb").read_text() == "my edits"


def test_sync_adds_a_notebook_added_later(tmp_path: Path) -> None:
    src = notebooks(tmp_path / "notebooks", a="reference a")
    dst = tmp_path / "work"
    working_copies.sync(src, dst)
    notebooks(src, c="new notebook")
    assert working_copies.sync(src, dst).copied == ["c.ipynb"]
    assert (dst / "c.ipynb").read_text() == "new notebook"


def test_sync_says_when_the_reference_changed_under_a_kept_copy(tmp_path: Path) -> None:
    src = notebooks(tmp_path / "notebooks", a="reference a")
    dst = tmp_path / "work"
    working_copies.sync(src, dst)
    (src / "a.ipynb").write_text("reference a, updated")
    later = (dst / "a.ipynb").stat().st_mtime + 10
    os.utime(src / "a.ipynb", (later, later))
    result = working_copies.sync(src, dst)
    assert result.kept_older == ["a.ipynb"]
    assert "make lab-reset" in working_copies.report(result, dst)
    assert (dst / "a.ipynb").read_text() == "reference a"


def test_reset_moves_the_copies_aside_and_restores_the_reference(tmp_path: Path) -> None:
    src = notebooks(tmp_path / "notebooks", a="reference a", b="reference b")
    dst = tmp_path / "work"
    working_copies.sync(src, dst)
    (dst / "a.ipynb").write_text("my edits")
    result = working_copies.reset(src, dst)
    assert (dst / "a.ipynb").read_text() == "reference a"
    assert result.moved_to is not None and result.moved_to.parent == dst / working_copies.PREVIOUS
    assert (result.moved_to / "a.ipynb").read_text() == "my edits"


def test_working_copies_refuse_a_folder_without_notebooks(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no notebooks"):
        working_copies.sync(tmp_path / "empty", tmp_path / "work")
    with pytest.raises(SystemExit):
        working_copies.main(["sync", str(tmp_path), str(tmp_path)])


def fake_package(path: Path, files: dict[str, bytes]) -> Path:
    """An npm-style tarball (members under package/)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fetch_refuses_a_package_whose_hash_is_not_the_pin(tmp_path: Path) -> None:
    asset = build_html.Asset("x", "@scope/x", "1.0.0", "sha512-not-this", ("a.js",))
    fake_package(tmp_path / asset.tarball, {"package/a.js": b"tampered"})
    with pytest.raises(SystemExit, match="is not @scope/x@1.0.0 as pinned"):
        build_html.fetch(asset, tmp_path)


def test_unpack_copies_only_the_listed_files(tmp_path: Path) -> None:
    tgz = fake_package(tmp_path / "p-1.tgz", {"package/a.js": b"a", "package/dir/b.woff": b"b",
                                              "package/dir/c.map": b"c", "package/other.txt": b"d"})
    asset = build_html.Asset("p", "p", "1", build_html.integrity_of(tgz), ("a.js", "dir/*.woff"))
    assert build_html.fetch(asset, tmp_path) == tgz
    assert build_html.unpack(asset, tgz, tmp_path / "out") == 2
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")) == [
        "a.js", "dir/b.woff"]


def test_fetch_says_when_npm_cannot_get_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An npm that fails as it does offline (no registry is asked)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text("#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\nexit 1\n")
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    asset = build_html.Asset("x", "x", "1.0.0", "sha512-x", ("a.js",))
    with pytest.raises(SystemExit, match="npm pack x@1.0.0` failed .*ENOTFOUND"):
        build_html.fetch(asset, tmp_path / "cache")
    assert not (tmp_path / "cache" / asset.tarball).exists()


def test_unpack_names_a_listed_file_the_package_lacks(tmp_path: Path) -> None:
    tgz = fake_package(tmp_path / "p.tgz", {"package/a.js": b"a"})
    asset = build_html.Asset("p", "p", "1", build_html.integrity_of(tgz), ("a.js", "fonts/"))
    with pytest.raises(SystemExit, match="has no fonts/"):
        build_html.unpack(asset, tgz, tmp_path / "out")


def test_unpack_refuses_a_path_outside_the_site(tmp_path: Path) -> None:
    tgz = fake_package(tmp_path / "p.tgz", {"package/../../evil.js": b"x"})
    asset = build_html.Asset("p", "p", "1", build_html.integrity_of(tgz), ("../../evil.js",))
    with pytest.raises(SystemExit, match="outside"):
        build_html.unpack(asset, tgz, tmp_path / "out")
    assert not (tmp_path / "evil.js").exists()


@pytest.mark.parametrize("html", ['<script src="https://cdn.example/x.js"></script>',
                                  "<link rel=stylesheet href='//cdn.example/x.css'>"])
def test_check_offline_flags_what_loads_from_the_network(html: str) -> None:
    with pytest.raises(SystemExit, match="from the network"):
        build_html.check_offline(html, "page.html")
    build_html.check_offline('<script src="_static/x.js"></script><a href="https://x.org">x</a>', "page.html")


def test_pinned_assets_are_complete() -> None:
    assets = build_html.load_assets()
    assert {a.key for a in assets} == {"mathjax", "requirejs", "html-manager"}
    assert all(a.integrity.startswith("sha512-") and a.files for a in assets)


def test_extras_lists_every_optional_dependency_group(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[project.optional-dependencies]\ntest = ["pytest"]\nsite = []\n')
    assert extras.extras(tmp_path / "pyproject.toml") == ["test", "site"]
    assert {"test", "site", "browser"} <= set(extras.extras(ROOT / "pyproject.toml"))


def test_links_between_notebooks_point_at_their_pages() -> None:
    html = '<a href="02_dfpc.ipynb">02</a> <a href="glossary.ipynb#dfc">g</a> <a href="other.ipynb">x</a>'
    out = build_html.link_pages(html, {"02_dfpc.html", "glossary.html"})
    assert out == '<a href="02_dfpc.html">02</a> <a href="glossary.html#dfc">g</a> <a href="other.ipynb">x</a>'

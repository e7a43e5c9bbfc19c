"""Fixtures of the grading checks: both editions built once into a temporary folder and graded once.

Slow by nature (``otter run`` executes every graded notebook twice, master and student edition),
so these tests are not in ``tests/`` but behind ``make test-grading``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The venv's python3 kernel executes the notebooks, not a same-named kernel in the user's folder.
os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")
# GRADING_NOTEBOOKS (space-separated paths; `make test-grading NOTEBOOKS=...` sets it) limits the check to some.
NOTEBOOKS = sorted(Path(p).resolve() for p in os.environ["GRADING_NOTEBOOKS"].split()) \
    if os.environ.get("GRADING_NOTEBOOKS", "").strip() else sorted((ROOT / "notebooks").glob("*.ipynb"))


def _load_grading():
    spec = importlib.util.spec_from_file_location("grading", ROOT / "scripts" / "grading" / "grading.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["grading"] = module
    spec.loader.exec_module(module)
    return module


grading = _load_grading()
ASSIGNMENTS = [nb for nb in NOTEBOOKS if grading.assignment_name(nb) is not None]


@pytest.fixture(scope="session")
def build(tmp_path_factory) -> Path:
    """build/student/ and build/autograder/ of every master, as `make student` writes them."""
    out = tmp_path_factory.mktemp("build")
    grading.assign(ASSIGNMENTS, out)
    return out


@pytest.fixture(scope="session")
def graded(build, tmp_path_factory) -> dict[str, dict]:
    """Grade-sheet rows of two submissions: 'master' (the masters as they are) and 'blank' (the student edition)."""
    subs = tmp_path_factory.mktemp("submissions")
    (subs / "master").mkdir()
    (subs / "blank").mkdir()
    for nb in ASSIGNMENTS:
        # A submission names its assignment in its metadata, as the student edition does.
        master = nbformat.read(nb, as_version=4)
        master.metadata.setdefault("otter", {})["assignment_name"] = nb.stem
        nbformat.write(master, subs / "master" / nb.name)
        shutil.copy(build / "student" / nb.name, subs / "blank" / nb.name)
    rows = grading.grade(subs, build / "autograder", build / "grades.csv", build / "grading")
    return {row["student"]: row for row in rows}

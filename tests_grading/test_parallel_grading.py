"""Parallel grading (`make grade JOBS=N`): the same grade sheet as one at a time, and a hung notebook times out.

Uses notebook 01 only (the quickest graded notebook): its autograder is built once into a temporary
folder, and each submission is made as ``conftest.graded`` makes them (the master as solved, the
student edition as blank).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nbformat
import psutil
import pytest

from conftest import ROOT, grading

NOTEBOOK = ROOT / "notebooks" / "01_coupled_channels.ipynb"
HUNG_TIMEOUT_S = 60   # time for the kernel to start and reach the hung cell (seconds when idle)


@pytest.fixture(scope="module")
def build01(tmp_path_factory) -> Path:
    """build/student/ and build/autograder/ of notebook 01 alone."""
    out = tmp_path_factory.mktemp("build01")
    grading.assign([NOTEBOOK], out)
    return out


def _solved(folder: Path) -> None:
    """The master as a solved submission (it names its assignment in its metadata, as the student edition does)."""
    folder.mkdir(parents=True)
    master = nbformat.read(NOTEBOOK, as_version=4)
    master.metadata.setdefault("otter", {})["assignment_name"] = NOTEBOOK.stem
    nbformat.write(master, folder / NOTEBOOK.name)


def _blank(folder: Path, build: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copy(build / "student" / NOTEBOOK.name, folder / NOTEBOOK.name)


def _sheet(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_two_jobs_give_the_same_grade_sheet_as_one(build01, tmp_path):
    subs = tmp_path / "submissions"
    _solved(subs / "ada")
    _blank(subs / "bob", build01)
    sequential = grading.grade(subs, build01 / "autograder", tmp_path / "seq.csv", tmp_path / "seq", jobs=1)
    parallel = grading.grade(subs, build01 / "autograder", tmp_path / "par.csv", tmp_path / "par", jobs=2)
    assert (tmp_path / "seq.csv").read_text() == (tmp_path / "par.csv").read_text()
    assert sequential == parallel
    rows = _sheet(tmp_path / "par.csv")
    assert [r["student"] for r in rows] == ["ada", "bob"]
    full = sum(q.points for q in grading.questions(NOTEBOOK) if not q.manual)
    assert [float(r["total"]) for r in rows] == [full, 0.0]
    assert all(r["notes"] == "" for r in rows), [r["notes"] for r in rows]
    for student in ("ada", "bob"):   # each grading kept its own report and log in its own folder
        assert (tmp_path / "par" / student / NOTEBOOK.stem / "results.json").exists()
        assert (tmp_path / "par" / student / NOTEBOOK.stem / "otter_run.log").exists()


def test_a_hung_notebook_times_out_into_its_row_and_leaves_no_process(build01, tmp_path):
    subs = tmp_path / "submissions"
    hung = nbformat.read(build01 / "student" / NOTEBOOK.name, as_version=4)
    pid_file = tmp_path / "hung-kernel.pid"
    hung.cells.insert(0, nbformat.v4.new_code_cell(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(3600)"))
    (subs / "hal").mkdir(parents=True)
    nbformat.write(hung, subs / "hal" / NOTEBOOK.name)

    rows = grading.grade(subs, build01 / "autograder", tmp_path / "grades.csv", tmp_path / "work",
                         timeout=HUNG_TIMEOUT_S)
    assert [r["student"] for r in rows] == ["hal"]
    (hal,) = _sheet(tmp_path / "grades.csv")
    assert hal["notes"].startswith(f"{NOTEBOOK.stem}: timed out: still running after {HUNG_TIMEOUT_S} s"), hal
    assert float(hal["total"]) == 0.0
    code_questions = [q.name for q in grading.questions(NOTEBOOK) if not q.manual]
    assert all(hal[q] == "" for q in code_questions), "a timed-out notebook is not graded: its scores stay blank"
    # Every process of the grading (otter run, its kernel: the kernel's connection file is in the grading's
    # folder) was stopped with it, none left orphaned and running.
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(tmp_path) in " ".join(proc.info["cmdline"] or []):
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
            except psutil.NoSuchProcess:
                pass
    assert not left, f"processes of the timed-out grading still run: {left}"
    # The kernel that ran the endless cell is gone (on a heavily loaded machine the kernel may not have reached
    # that cell within the timeout; the check above covers it then).
    if pid_file.exists():
        pid = int(pid_file.read_text())
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

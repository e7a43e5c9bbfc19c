"""Graded assignments with otter-grader: the student edition, the autograders, and a grade sheet.

The master notebooks (``notebooks/*.ipynb``) carry otter-grader's assign markers (see
``docs/instructors.md``). Three commands, wrapped by ``make student`` and ``make grade``:

    python scripts/grading/grading.py assign [MASTER ...]   # -> build/student/, build/autograder/
    python scripts/grading/grading.py grade SUBMISSIONS      # -> build/grades.csv (+ build/grading/)
    python scripts/grading/grading.py questions MASTER       # the questions a master defines

``assign`` runs ``otter assign`` on every master that has an ``# ASSIGNMENT CONFIG`` cell and
writes the student notebook to ``build/student/<notebook>.ipynb`` and its autograder to
``build/autograder/<notebook>.zip``, with ``build/autograder/questions.json`` (every question,
its points, and whether it is graded by hand). ``grade`` expects one folder per student,
``SUBMISSIONS/<student>/<notebook>.ipynb``, grades each notebook offline with ``otter run``
(no Docker: the notebook is executed in this environment), keeps otter's ``results.json`` under
``build/grading/<student>/<notebook>/``, and writes one row per student to ``build/grades.csv``:
one column per question (hand-graded ones left blank for the instructor), the automatic total,
and notes (missing notebooks, grading failures).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
QUESTIONS_FILE = "questions.json"
GRADE_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Question:
    """One otter question of a master notebook: code questions are graded by their tests, manual ones by hand."""
    notebook: str
    name: str
    points: float
    manual: bool


@dataclass
class Graded:
    """The outcome of grading one submitted notebook: per-question scores, or why there are none."""
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def _raw_config(cell, marker: str) -> dict | None:
    """The YAML under ``marker`` in a raw cell, or None if the cell is not such a cell."""
    lines = cell.source.strip().splitlines()
    if cell.cell_type != "raw" or not lines or lines[0].strip().upper() != marker:
        return None
    return yaml.safe_load("\n".join(lines[1:])) or {}


def assignment_name(master: Path) -> str | None:
    """The ``name`` of the master's ``# ASSIGNMENT CONFIG`` cell, or None if it has no such cell."""
    for cell in nbformat.read(master, as_version=4).cells:
        config = _raw_config(cell, "# ASSIGNMENT CONFIG")
        if config is not None:
            if config.get("name") != master.stem:
                raise ValueError(f"{master}: the ASSIGNMENT CONFIG name is {config.get('name')!r}; set it to "
                                 f"{master.stem!r} (the notebook's file name) so submissions can be matched")
            return master.stem
    return None


def questions(master: Path) -> list[Question]:
    """Every ``# BEGIN QUESTION`` of a master, in order, with its points and whether it is manual."""
    out = []
    for cell in nbformat.read(master, as_version=4).cells:
        config = _raw_config(cell, "# BEGIN QUESTION")
        if config is None:
            continue
        if "name" not in config or "points" not in config:
            raise ValueError(f"{master}: a BEGIN QUESTION cell lacks 'name' or 'points': {config}; give both")
        out.append(Question(master.stem, str(config["name"]), float(config["points"]), bool(config.get("manual"))))
    names = [q.name for q in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{master}: question names repeat: {names}; name them q<nb>_<k>, each once")
    return out


def _otter() -> str:
    exe = Path(sys.executable).with_name("otter")
    if not exe.exists():
        raise SystemExit(f"otter-grader is not installed next to {sys.executable}: run "
                         f"`{sys.executable} -m pip install -e '.[grade]' -c constraints.txt` (make student does)")
    return str(exe)


def _env() -> dict[str, str]:
    # The venv's python3 kernel executes the notebooks, not a same-named kernel in the user's folder.
    return {**os.environ, "JUPYTER_PREFER_ENV_PATH": "1"}


def assign(masters: list[Path], build: Path = BUILD) -> list[Question]:
    """Write the student edition and the autograder of every master that is an otter assignment."""
    student, autograder = build / "student", build / "autograder"
    for folder in (student, autograder):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    all_questions: list[Question] = []
    for master in masters:
        if assignment_name(master) is None:
            print(f"skipping {master}: no '# ASSIGNMENT CONFIG' raw cell, so it is not a graded assignment")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([_otter(), "assign", "--no-run-tests", "--no-pdfs", str(master), tmp],
                           check=True, env=_env(), stdout=subprocess.DEVNULL)
            shutil.copy(Path(tmp) / "student" / master.name, student / master.name)
            zips = list((Path(tmp) / "autograder").glob("*.zip"))
            if len(zips) != 1:
                raise RuntimeError(f"otter assign {master} wrote {len(zips)} autograder zips, expected 1")
            shutil.copy(zips[0], autograder / f"{master.stem}.zip")
        all_questions += questions(master)
        print(f"{master.name}: student edition and autograder written ({time.perf_counter() - start:.0f} s)")
    (autograder / QUESTIONS_FILE).write_text(json.dumps([asdict(q) for q in all_questions], indent=1) + "\n")
    return all_questions


def load_questions(autograder: Path) -> list[Question]:
    path = autograder / QUESTIONS_FILE
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run `make student` first (it writes the autograders)")
    return [Question(**q) for q in json.loads(path.read_text())]


def grade_one(submission: Path, autograder_zip: Path, out_dir: Path, expected: list[str]) -> Graded:
    """Grade one submitted notebook with ``otter run``; otter's results.json is kept in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        run = subprocess.run([_otter(), "run", "--no-logo", "-a", str(autograder_zip), "-o", str(out_dir),
                              str(submission)], env=_env(), capture_output=True, text=True, timeout=GRADE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Graded(error=f"grading took over {GRADE_TIMEOUT_S} s", seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    (out_dir / "otter_run.log").write_text(run.stdout + run.stderr)
    results = out_dir / "results.json"
    if run.returncode != 0 or not results.exists():
        return Graded(error=f"otter run failed (exit {run.returncode}); see {out_dir / 'otter_run.log'}", seconds=seconds)
    tests = json.loads(results.read_text()).get("tests", [])
    failed = [t["name"] for t in tests if t.get("name", "").startswith("Autograder")]
    scores = {t["name"]: float(t["score"]) for t in tests if t.get("name") in expected}
    missing = [q for q in expected if q not in scores]
    error = None
    if failed or missing:
        error = f"{' and '.join(failed) or 'no score for ' + ', '.join(missing)}; see {results}"
    return Graded(scores=scores, error=error, seconds=seconds)


def _students(submissions: Path, notebooks: set[str]) -> list[Path]:
    if not submissions.is_dir():
        raise SystemExit(f"SUBMISSIONS={submissions} is not a folder; expected one folder per student: "
                         "SUBMISSIONS/<student>/<notebook>.ipynb")
    stray = sorted(p.name for p in submissions.glob("*.ipynb"))
    if stray:
        raise SystemExit(f"{submissions} holds notebooks directly ({', '.join(stray)}); put each student's "
                         "notebooks in a folder named after the student: SUBMISSIONS/<student>/<notebook>.ipynb")
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise SystemExit(f"{submissions} has no student folders; expected SUBMISSIONS/<student>/<notebook>.ipynb "
                         f"with notebook names among {sorted(notebooks)}")
    return students


def grade(submissions: Path, autograder: Path = BUILD / "autograder", out_csv: Path = BUILD / "grades.csv",
          work: Path = BUILD / "grading") -> list[dict]:
    """Grade every student's notebooks and write the grade sheet: one row per student."""
    qs = load_questions(autograder)
    notebooks = list(dict.fromkeys(q.notebook for q in qs))
    students = _students(submissions, set(notebooks))
    rows = []
    for student in students:
        row: dict = {"student": student.name}
        notes = []
        for nb in notebooks:
            code_qs = [q.name for q in qs if q.notebook == nb and not q.manual]
            path = student / f"{nb}.ipynb"
            if not path.exists():
                notes.append(f"{nb}.ipynb missing (scored 0)")
                row.update({q: 0.0 for q in code_qs})
                continue
            result = grade_one(path, autograder / f"{nb}.zip", work / student.name / nb, code_qs)
            print(f"{student.name}/{nb}.ipynb: {sum(result.scores.values()):g} points in {result.seconds:.0f} s"
                  + (f" ({result.error})" if result.error else ""))
            row.update(result.scores)
            if result.error:
                notes.append(f"{nb}: {result.error}")
        unknown = sorted(p.name for p in student.glob("*.ipynb") if p.stem not in notebooks)
        if unknown:
            notes.append(f"not graded (no such assignment): {', '.join(unknown)}")
        row["total"] = sum(row.get(q.name, 0.0) for q in qs if not q.manual)
        row["notes"] = "; ".join(notes)
        rows.append(row)
    columns = ["student"] + [q.name for q in qs] + ["total", "notes"]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out_csv)   # never a half-written grade sheet
    auto = sum(q.points for q in qs if not q.manual)
    manual = sum(q.points for q in qs if q.manual)
    print(f"wrote {out_csv}: {len(rows)} students; 'total' is out of {auto:g} automatic points; the "
          f"{sum(q.manual for q in qs)} hand-graded questions ({manual:g} points) are blank columns to fill in")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assign", help="write build/student/ and build/autograder/ from the master notebooks")
    a.add_argument("masters", nargs="*", type=Path, help="master notebooks (default: notebooks/*.ipynb)")
    a.add_argument("--build", type=Path, default=BUILD)
    g = sub.add_parser("grade", help="grade SUBMISSIONS/<student>/<notebook>.ipynb into build/grades.csv")
    g.add_argument("submissions", type=Path)
    g.add_argument("--autograder", type=Path, default=BUILD / "autograder")
    g.add_argument("--out", type=Path, default=BUILD / "grades.csv")
    g.add_argument("--work", type=Path, default=BUILD / "grading", help="where otter's results.json files go")
    q = sub.add_parser("questions", help="list the questions of master notebooks")
    q.add_argument("masters", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "assign":
        assign(args.masters or sorted((ROOT / "notebooks").glob("*.ipynb")), args.build)
    elif args.command == "grade":
        grade(args.submissions, args.autograder, args.out, args.work)
    else:
        for master in args.masters:
            for question in questions(master):
                print(f"{question.notebook}  {question.name}  {question.points:g} points"
                      + ("  (graded by hand)" if question.manual else ""))


if __name__ == "__main__":
    main()

"""Graded assignments with otter-grader: the student edition, the autograders, and a grade sheet.

The master notebooks (``notebooks/*.ipynb``) carry otter-grader's assign markers (see
``docs/instructors.md``). Three commands, wrapped by ``make student`` and ``make grade``:

    python scripts/grading/grading.py assign [MASTER ...]   # -> build/student/, build/autograder/
    python scripts/grading/grading.py grade SUBMISSIONS [--jobs N] [--timeout S]  # -> build/grades.csv
    python scripts/grading/grading.py questions MASTER       # the questions a master defines

``assign`` runs ``otter assign`` on every master that has an ``# ASSIGNMENT CONFIG`` cell and
writes the student notebook to ``build/student/<notebook>.ipynb`` and its autograder to
``build/autograder/<notebook>.zip``, with ``build/autograder/questions.json`` (every question,
its points, and whether it is graded by hand). Each autograder grades on Gradescope as uploaded: the
master's config cell reads ``autograder.yml`` (otter's ``config_file``), which is
``scripts/grading/autograder/<notebook>.yml`` staged beside the master in a folder laid out like the
repository, with ``requirements.txt`` (every package grading imports, pinned from ``constraints.txt``,
torch and torchvision from PyTorch's CPU index where it is reachable) and the files that yml names in
``autograder_files`` (``pruning_lib`` and the checkpoints and CIFAR-10 cache the graded run opens).
``grade`` expects one folder per student,
``SUBMISSIONS/<student>/<notebook>.ipynb``, grades each notebook offline with ``otter run``
(no Docker: the notebook is executed in this environment), keeps otter's ``results.json`` under
``build/grading/<student>/<notebook>/``, and writes one row per student to ``build/grades.csv``:
one column per question (hand-graded ones left blank for the instructor), the automatic total,
and notes (missing notebooks, grading failures, timeouts).

``--jobs N`` grades N notebooks at a time, each ``otter run`` in its own process and its own working
folder, with its OpenMP/MKL/torch threads capped at ``max(1, cores // N)`` so the jobs do not fight
over the cores; the grade sheet is the same as with one job (rows in student order, same columns).
A grading that runs past ``--timeout`` seconds is stopped with every process it started (its kernel
included) and noted in its student's row, instead of holding up or crashing the run.
"""
from __future__ import annotations

import argparse
import concurrent.futures
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
import psutil
import yaml
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
QUESTIONS_FILE = "questions.json"
AUTOGRADER_CONFIGS = Path(__file__).resolve().parent / "autograder"   # <notebook>.yml: otter's config_file
CONFIG_FILE = "autograder.yml"          # the name the masters' ASSIGNMENT CONFIG cells give as config_file
REQUIREMENTS_FILE = "requirements.txt"  # the name the configs give as requirements
CONSTRAINTS = ROOT / "constraints.txt"
# Where pip looks first for torch/torchvision: the CPU builds (no CUDA libraries, a fraction of the download).
# ``torch==2.15.0`` accepts ``2.15.0+cpu`` (a local version), which pip prefers as the higher one; where the
# index is unreachable pip warns and takes PyPI's build of the same version.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The grading environment, the one `make grade` grades with: otter-grader, the kernel and client that execute
# the notebook (its `grading` extra less pypdf, which only PDF export uses), jupyter_server (otter's
# environment.yml names it), and pruning-course's own dependencies (pyproject.toml) but JupyterLab.
GRADING_ROOTS = ("otter-grader", "ipykernel", "jupyter_client", "jupyter_server")
NOT_FOR_GRADING = ("jupyterlab",)
# torch's CUDA stack on Linux: never pinned here; a PyPI torch (the fallback) pins its own exact versions.
CUDA_STACK = ("nvidia-", "cuda-", "triton")
GRADE_TIMEOUT_S = 900     # per graded notebook; make grade GRADE_TIMEOUT=... overrides it
SAMPLE_S = 0.5            # how often a grading's memory is sampled (its process tree's summed RSS)
# The thread pools a grading's kernel may start: OpenMP (torch's intra-op threads), MKL, OpenBLAS.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

__all__ = ["Question", "Graded", "Run", "run_measured", "assignment_name", "questions", "grading_requirements",
           "stage", "assign", "load_questions", "grade_one", "grade", "cores", "threads_per_job", "main"]


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
    peak_rss_mb: float = 0.0      # the most memory its processes (otter run and its kernel) held at once
    timed_out: bool = False


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


def _pins(constraints: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            pins[canonicalize_name(name)] = f"{name}=={version}"
    return pins


def grading_requirements(constraints: Path = CONSTRAINTS, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The lines of an autograder's requirements.txt: every package grading needs, pinned as in ``constraints``.

    The packages are the closure of :data:`GRADING_ROOTS` and pyproject's dependencies (minus
    :data:`NOT_FOR_GRADING`) over the installed packages' metadata, for this platform and Python; torch's
    CUDA stack is left out (the CPU builds do not need it). A package ``constraints`` does not pin is an error.
    """
    import tomllib
    from importlib import metadata
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    roots = list(GRADING_ROOTS) + [d for d in deps
                                   if canonicalize_name(Requirement(d).name) not in NOT_FOR_GRADING]
    pins = _pins(constraints)
    needed: dict[str, str] = {}             # canonical name -> its pinned line
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()      # (package, extra) pairs walked
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name.startswith(CUDA_STACK):
            continue
        if name not in needed:
            if name not in pins:
                missing.append(req.name)
                continue
            needed[name] = pins[name]
        for extra in ["", *sorted(req.extras)]:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                requires = metadata.requires(req.name) or []
            except metadata.PackageNotFoundError:
                missing.append(f"{req.name} (not installed, so its dependencies are unknown)")
                continue
            for sub in map(Requirement, requires):
                base = sub.marker is None or sub.marker.evaluate({"extra": ""})   # this platform and Python
                if (base if not extra else not base and sub.marker.evaluate({"extra": extra})):
                    todo.append(sub)
    if missing:
        raise SystemExit(f"{constraints} does not pin {', '.join(sorted(set(missing)))}, which grading needs: "
                         f"install the grade extra (`make student`) and regenerate {constraints.name} "
                         "(its header says how), so the autograders install exactly these versions")
    root_names = {canonicalize_name(Requirement(r).name) for r in roots}
    return ([f"--extra-index-url {CPU_INDEX}"] + [needed[n] for n in sorted(needed) if n in root_names]
            + [needed[n] for n in sorted(needed) if n not in root_names])


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)           # the CIFAR-10 cache is 180 MB: no copy where a link will do
    except OSError:
        shutil.copy2(src, dst)


def stage(master: Path, staging: Path, requirements: list[str] | None = None) -> Path:
    """Lay out ``staging`` for ``otter assign``: the master, its ``autograder.yml``, requirements.txt and the
    files the yml's ``autograder_files`` names, each at its path in the repository. Returns the staged master."""
    config_path = AUTOGRADER_CONFIGS / f"{master.stem}.yml"
    if not config_path.exists():
        raise SystemExit(f"{master}: no autograder configuration {config_path}; copy one of the others in "
                         f"{AUTOGRADER_CONFIGS} and list the checkpoints this notebook loads")
    config = yaml.safe_load(config_path.read_text()) or {}
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copy(master, staging / master.name)
    shutil.copy(config_path, staging / CONFIG_FILE)
    lines = requirements if requirements is not None else grading_requirements()
    (staging / REQUIREMENTS_FILE).write_text(
        f"# Written by scripts/grading/grading.py from {CONSTRAINTS.name}: what grading {master.stem} imports, "
        "pinned.\n" + "\n".join(lines) + "\n")
    for rel in config.get("autograder_files") or []:
        src, dst = ROOT / rel, staging / rel
        if not src.exists():
            raise SystemExit(f"{config_path} lists {rel} in autograder_files, but {src} does not exist: run "
                             "`make setup` (it fetches CIFAR-10 and its cache) or correct the list")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"),
                            copy_function=_link_or_copy)
        else:
            _link_or_copy(str(src), str(dst))
    return staging / master.name


def assign(masters: list[Path], build: Path = BUILD) -> list[Question]:
    """Write the student edition and the autograder of every master that is an otter assignment."""
    student, autograder = build / "student", build / "autograder"
    for folder in (student, autograder):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    all_questions: list[Question] = []
    requirements = grading_requirements()
    for master in masters:
        if assignment_name(master) is None:
            print(f"skipping {master}: no '# ASSIGNMENT CONFIG' raw cell, so it is not a graded assignment")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            staged = stage(master, Path(tmp) / "staging", requirements)
            out = Path(tmp) / "out"
            subprocess.run([_otter(), "assign", "--no-run-tests", "--no-pdfs", str(staged), str(out)],
                           check=True, env=_env(), stdout=subprocess.DEVNULL)
            shutil.copy(out / "student" / master.name, student / master.name)
            zips = list((out / "autograder").glob("*.zip"))
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


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Threads each of ``jobs`` concurrent gradings may use: the cores shared out, at least one.

    A smaller ``OMP_NUM_THREADS`` already set by the caller (a shared machine) is kept, never raised.
    """
    share = max(1, cores() // jobs)
    try:
        return max(1, min(share, int(os.environ.get("OMP_NUM_THREADS", share))))
    except ValueError:
        return share


def _tree(process: psutil.Process) -> list[psutil.Process]:
    """The process and all its descendants (a kernel runs in a session of its own but is still one)."""
    try:
        return [process] + process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


def _kill(procs: list[psutil.Process]) -> None:
    """Kill every process of a grading (children first, so none is left orphaned and running)."""
    for p in reversed(procs):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


@dataclass
class Run:
    """A finished (or stopped) command: its exit status, wall time and the peak memory of its process tree."""
    returncode: int | None
    seconds: float
    peak_rss_mb: float
    timed_out: bool = False


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> Run:
    """Run ``cmd`` with its output in ``log``, sampling the summed RSS of it and every process it starts
    (a grading's kernel included) every SAMPLE_S seconds; past ``timeout`` seconds all of them are killed."""
    start = time.perf_counter()
    peak = 0.0
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while True:
            try:
                proc.wait(timeout=SAMPLE_S)
                return Run(proc.returncode, time.perf_counter() - start, peak)
            except subprocess.TimeoutExpired:
                procs = _tree(root)
                peak = max(peak, _rss_mb(procs))
                if time.perf_counter() - start > timeout:
                    _kill(procs)
                    proc.wait()
                    return Run(proc.returncode, time.perf_counter() - start, peak, timed_out=True)


def grade_one(submission: Path, autograder_zip: Path, out_dir: Path, expected: list[str],
              timeout: float = GRADE_TIMEOUT_S, threads: int | None = None) -> Graded:
    """Grade one submitted notebook with ``otter run`` in its own process and working folder ``out_dir``.

    Otter's results.json and the run's log are kept in ``out_dir``; ``threads`` (if given) caps the
    kernel's OpenMP/MKL/OpenBLAS threads. Past ``timeout`` seconds the run and every process it started
    are killed and the result says so.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "otter_run.log"):
        (out_dir / stale).unlink(missing_ok=True)
    scratch = out_dir / "tmp"     # otter run unpacks the autograder and runs the notebook under $TMPDIR
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    env = {**_env(), "TMPDIR": str(scratch)}
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    log_path = out_dir / "otter_run.log"
    run = run_measured([_otter(), "run", "--no-logo", "-a", str(autograder_zip.resolve()), "-o", str(out_dir.resolve()),
                        str(submission.resolve())], cwd=out_dir, env=env, log=log_path, timeout=timeout)
    seconds, peak = run.seconds, run.peak_rss_mb
    if run.timed_out:
        shutil.rmtree(scratch, ignore_errors=True)
        return Graded(error=f"timed out: still running after {timeout:g} s, stopped and not graded "
                            f"(a cell that never ends?); see {log_path}, or regrade with a larger "
                            "GRADE_TIMEOUT", seconds=seconds, peak_rss_mb=peak, timed_out=True)
    shutil.rmtree(scratch, ignore_errors=True)
    results = out_dir / "results.json"
    if run.returncode != 0 or not results.exists():
        return Graded(error=f"otter run failed (exit {run.returncode}); see {log_path}", seconds=seconds,
                      peak_rss_mb=peak)
    tests = json.loads(results.read_text()).get("tests", [])
    failed = [t["name"] for t in tests if t.get("name", "").startswith("Autograder")]
    scores = {t["name"]: float(t["score"]) for t in tests if t.get("name") in expected}
    missing = [q for q in expected if q not in scores]
    error = None
    if failed or missing:
        error = f"{' and '.join(failed) or 'no score for ' + ', '.join(missing)}; see {results}"
    return Graded(scores=scores, error=error, seconds=seconds, peak_rss_mb=peak)


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
          work: Path = BUILD / "grading", jobs: int = 1, timeout: float = GRADE_TIMEOUT_S) -> list[dict]:
    """Grade every student's notebooks, ``jobs`` at a time, and write the grade sheet: one row per student."""
    if not isinstance(jobs, int) or jobs < 1:
        raise SystemExit(f"JOBS={jobs!r}: the number of notebooks graded at a time must be a whole number >= 1 "
                         f"(e.g. JOBS={cores()}, one per core)")
    if not timeout > 0:
        raise SystemExit(f"GRADE_TIMEOUT={timeout!r}: the seconds allowed per graded notebook must be > 0 "
                         f"(default {GRADE_TIMEOUT_S})")
    qs = load_questions(autograder)
    notebooks = list(dict.fromkeys(q.notebook for q in qs))
    students = _students(submissions, set(notebooks))
    code_qs = {nb: [q.name for q in qs if q.notebook == nb and not q.manual] for nb in notebooks}
    todo = [(student, nb) for student in students for nb in notebooks if (student / f"{nb}.ipynb").exists()]
    threads = threads_per_job(jobs)
    results: dict[tuple[Path, str], Graded] = {}
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(todo), desc=f"grading ({jobs} at a time)", unit="notebook") as bar:
        # Each thread only waits on its own `otter run` process: the grading itself runs outside Python's GIL.
        futures = {pool.submit(grade_one, student / f"{nb}.ipynb", autograder / f"{nb}.zip",
                               work / student.name / nb, code_qs[nb], timeout, threads): (student, nb)
                   for student, nb in todo}
        for future in concurrent.futures.as_completed(futures):
            student, nb = futures[future]
            result = results[student, nb] = future.result()
            bar.write(f"{student.name}/{nb}.ipynb: {sum(result.scores.values()):g} points in {result.seconds:.0f} s, "
                      f"peak {result.peak_rss_mb:.0f} MB" + (f" ({result.error})" if result.error else ""))
            bar.update()
    rows = []
    for student in students:
        row: dict = {"student": student.name}
        notes = []
        for nb in notebooks:
            if (student, nb) not in results:
                notes.append(f"{nb}.ipynb missing (scored 0)")
                row.update({q: 0.0 for q in code_qs[nb]})
                continue
            result = results[student, nb]
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
    if results:
        elapsed = time.perf_counter() - start
        timed_out = sum(r.timed_out for r in results.values())
        print(f"graded {len(results)} notebooks in {elapsed:.0f} s with {jobs} at a time "
              f"({3600 * len(results) / elapsed:.0f} per hour); the largest peak memory of one grading was "
              f"{max(r.peak_rss_mb for r in results.values()):.0f} MB"
              + (f"; {timed_out} timed out (see notes)" if timed_out else ""))
    return rows


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"JOBS={text!r}: give the number of notebooks to grade at a time, "
                                         f"a whole number >= 1 (e.g. {cores()}, one per core)")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"GRADE_TIMEOUT={text!r}: give the seconds one notebook may take, a number "
                                         f"> 0 (default {GRADE_TIMEOUT_S})")
    return value


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
    g.add_argument("--jobs", type=_positive_int, default=1,
                   help=f"notebooks graded at a time (default 1; this machine has {cores()} cores)")
    g.add_argument("--timeout", type=_positive_seconds, default=GRADE_TIMEOUT_S,
                   help="seconds one notebook may take before it is stopped and noted (default %(default)s)")
    q = sub.add_parser("questions", help="list the questions of master notebooks")
    q.add_argument("masters", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "assign":
        assign(args.masters or sorted((ROOT / "notebooks").glob("*.ipynb")), args.build)
    elif args.command == "grade":
        grade(args.submissions, args.autograder, args.out, args.work, args.jobs, args.timeout)
    else:
        for master in args.masters:
            for question in questions(master):
                print(f"{question.notebook}  {question.name}  {question.points:g} points"
                      + ("  (graded by hand)" if question.manual else ""))


if __name__ == "__main__":
    main()

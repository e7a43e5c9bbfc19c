"""The autograder zips grade as uploaded: a fresh environment made only from what a zip declares, with the
zip laid out as Gradescope lays it out, grades a solved and a blank submission as `make grade` does.

For each graded notebook (``NOTEBOOKS=...`` limits them, as for ``make test-grading``):

* the environment: Gradescope builds it with the zip's ``setup.sh``, which creates a conda environment from
  the zip's ``environment.yml`` (otter writes it: Python, pip, jupyter_server, and under ``pip:`` our
  requirements.txt). Here a virtual environment of that Python gets exactly the ``pip:`` lines
  (``pip install -r``; ``--retries 0`` only so that the unreachable PyTorch CPU index is given up at once).
  It is cached under ``build/autograder-venv/<hash of environment.yml>/`` (or ``$AUTOGRADER_VENVS/<hash>``;
  every zip declares the same environment), so only the first run, or a changed pin, installs (minutes; pip's
  cache is used).
* the layout: ``<root>/source`` (the zip unpacked), ``<root>/submission`` (the notebook),
  ``<root>/results``, ``<root>/submission_metadata.json``, as on Gradescope under ``/autograder``; then
  the zip's own ``run_otter.py`` (what its ``run_autograder`` runs) is run by the environment's Python
  with its one path, ``/autograder``, given as ``<root>`` instead: it calls otter's
  ``run_autograder.main(<root>)``, which copies ``source/files`` (pruning_lib, the checkpoints, the
  CIFAR-10 cache) into the submission folder, executes the notebook with the ``python3`` kernel, and
  writes ``results/results.json``. It runs from a temporary folder with ``HOME`` there, no
  ``PYTHONPATH``, no ``PRUNING_COURSE_DATA`` and the venv first on ``PATH``: nothing of this checkout is
  reachable, which a probe cell appended to each submission checks from inside the grading kernel.
* the check: the per-question scores equal those of ``grading.grade`` (what ``make grade`` runs) on the
  same submissions; the wall time and peak memory (the process tree's summed RSS) of each grading are
  printed and written to ``build/autograder-check.json``.

Slow (a venv install, then four gradings per notebook): run with ``make test-autograder``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from conftest import ASSIGNMENTS, ROOT, grading

# One venv per environment.yml; AUTOGRADER_VENVS puts them elsewhere (CI: beside its main venv, kept between clones).
VENVS = Path(os.environ.get("AUTOGRADER_VENVS") or ROOT / "build" / "autograder-venv")
REPORT = ROOT / "build" / "autograder-check.json"
AUTOGRADER_DIR = "/autograder"          # the path run_otter.py is rendered with (otter's default autograder_dir)
INSTALL_TIMEOUT_S = 3600
PROBE = ("# probe added by tests_grading/test_autograder_zip.py: where the grading kernel found its packages\n"
         "import json as _json, sys as _sys, pruning_lib as _pl, torch as _torch\n"
         "from pruning_lib.course.data import default_data_dir as _ddd\n"
         "_json.dump({'executable': _sys.executable, 'pruning_lib': _pl.__file__, 'torch': _torch.__file__,\n"
         "            'data': str(_ddd()), 'sys_path': _sys.path}, open(PROBE_PATH, 'w'))\n")


def _environment(zip_path: Path) -> tuple[dict, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        raw = zf.read("environment.yml")
    return yaml.safe_load(raw), raw


def _venv_for(zip_path: Path) -> Path:
    """A virtual environment with exactly the pip requirements the zip's environment.yml declares (cached)."""
    env, raw = _environment(zip_path)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    python = next(d.split("=", 1)[1] for d in conda if d.startswith("python="))
    # The conda-level packages other than Python and pip must be in the pip list too, or the venv lacks them.
    pip_names = {line.split("==")[0].split("[")[0].lower().replace("_", "-") for line in pip_lines}
    for dep in conda:
        name = dep.split("=")[0].lower().replace("_", "-")
        assert name in ("python", "pip") or name in pip_names, f"environment.yml's conda dependency {dep} is not pinned"
    venv = VENVS / hashlib.sha256(raw).hexdigest()[:16]
    done = venv / ".installed"
    if done.exists():
        return venv
    interpreter = shutil.which(f"python{python}")
    assert interpreter, f"the zip's environment.yml asks for Python {python}: put python{python} on PATH"
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    requirements = venv / "requirements.txt"
    requirements.write_text("\n".join(pip_lines) + "\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--retries", "0", "-r", str(requirements)],
                   check=True, env=clean, cwd=venv, timeout=INSTALL_TIMEOUT_S)
    done.write_text(hashlib.sha256(raw).hexdigest() + "\n")
    return venv


def _gradescope_run(venv: Path, zip_path: Path, submission: Path, root: Path, expected: list[str]) -> grading.Graded:
    """Grade ``submission`` with ``zip_path`` in ``venv``, laid out under ``root`` as Gradescope does under /autograder."""
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("source", "submission", "results"):
        (root / sub).mkdir(parents=True)
    (root / "submission_metadata.json").write_text("{}")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    shutil.copy(submission, root / "submission" / submission.name)
    entry = (root / "source" / "run_otter.py").read_text()
    assert entry.count(f'"{AUTOGRADER_DIR}"') == 1 and "from otter.run.run_autograder import main" in entry, entry
    home = root.parent / f"{root.name}-home"       # a fresh HOME: no user kernels or config of this machine
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    script = home / "run_otter.py"
    script.write_text(entry.replace(f'"{AUTOGRADER_DIR}"', repr(str(root))))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "JUPYTER", "VIRTUAL_ENV", "PRUNING_COURSE", "CONDA"))}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", TMPDIR=str(home))
    run = grading.run_measured([str(venv / "bin" / "python"), str(script)], cwd=home, env=env,
                               log=home / "run_autograder.log", timeout=grading.GRADE_TIMEOUT_S)
    results = root / "results" / "results.json"
    assert run.returncode == 0 and results.exists(), (home / "run_autograder.log").read_text()[-3000:]
    tests = json.loads(results.read_text())["tests"]
    return grading.Graded(scores={t["name"]: float(t["score"]) for t in tests if t["name"] in expected},
                          error="; ".join(t["name"] for t in tests if t["name"].startswith("Autograder")) or None,
                          seconds=run.seconds, peak_rss_mb=run.peak_rss_mb)


def _with_probe(notebook: Path, out: Path, probe: Path) -> Path:
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata.setdefault("otter", {})["assignment_name"] = notebook.stem
    nb.cells.append(nbformat.v4.new_code_cell(PROBE.replace("PROBE_PATH", repr(str(probe)))))
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


def test_requirements_pin_every_package_and_take_torch_from_the_cpu_index():
    lines = grading.grading_requirements()
    assert lines[0] == f"--extra-index-url {grading.CPU_INDEX}"
    pins = dict(line.split("==", 1) for line in lines[1:])
    assert {"torch", "torchvision", "numpy", "otter-grader", "ipykernel"} <= set(pins)
    # A `==X.Y.Z` pin accepts the CPU index's `X.Y.Z+cpu` (a local version label), so pip may take either.
    for name in ("torch", "torchvision"):
        assert SpecifierSet(f"=={pins[name]}").contains(f"{pins[name]}+cpu")
    assert not [n for n in pins if n.startswith(grading.CUDA_STACK)], "the CPU builds need no CUDA packages"


def _record(key: str, entry: dict) -> None:
    """Add one grading's figures to build/autograder-check.json (kept across runs, one entry per notebook and submission)."""
    out = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    out[key] = entry
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(out, indent=1) + "\n")


@pytest.mark.parametrize("master", ASSIGNMENTS, ids=[nb.stem for nb in ASSIGNMENTS])
def test_zip_grades_in_a_fresh_environment_as_make_grade_does(master, build, tmp_path):
    zip_path = build / "autograder" / f"{master.stem}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    config = yaml.safe_load((grading.AUTOGRADER_CONFIGS / f"{master.stem}.yml").read_text())
    for rel in config["autograder_files"]:      # what the config names is in the zip, and no other data
        assert any(n == f"files/{rel}" or n.startswith(f"files/{rel}/") for n in names), rel
    assert {n for n in names if n.startswith("files/data/")} == {f"files/{r}" for r in config["autograder_files"]
                                                                if r.startswith("data/")}
    venv = _venv_for(zip_path)
    expected = [q.name for q in grading.questions(master) if not q.manual]
    full = {q.name: q.points for q in grading.questions(master) if not q.manual}
    submissions = {"solved": master, "blank": build / "student" / master.name}
    for who, source in submissions.items():
        probe = tmp_path / f"{who}-probe.json"
        submission = _with_probe(source, tmp_path / who / master.name, probe)
        local = grading.grade_one(submission, zip_path, tmp_path / f"{who}-local", expected)
        assert local.error is None, local.error
        probe.unlink()
        graded = _gradescope_run(venv, zip_path, submission, tmp_path / f"{who}-root" / "autograder", expected)
        assert graded.error is None, graded.error
        where = json.loads(probe.read_text())
        assert where["executable"].startswith(str(venv)), where
        assert Path(where["pruning_lib"]).is_relative_to(tmp_path / f"{who}-root" / "autograder" / "submission"), where
        assert Path(where["torch"]).is_relative_to(venv), where
        assert not Path(where["data"]).is_relative_to(ROOT), where
        # Nothing on the kernel's path is in the checkout, but the venv (cached under build/, made from the zip only).
        assert not [p for p in where["sys_path"] if p and Path(p).resolve().is_relative_to(ROOT.resolve())
                    and not Path(p).resolve().is_relative_to(venv.resolve())], where["sys_path"]
        assert graded.scores == local.scores, (who, graded.scores, local.scores)
        assert graded.scores == (full if who == "solved" else dict.fromkeys(full, 0.0)), (who, graded.scores)
        _record(f"{master.stem}/{who}", {"seconds": round(graded.seconds), "peak_rss_mb": round(graded.peak_rss_mb),
                                         "make_grade_seconds": round(local.seconds),
                                         "make_grade_peak_rss_mb": round(local.peak_rss_mb),
                                         "score": sum(graded.scores.values()),
                                         "zip_mb": round(zip_path.stat().st_size / 2**20)})
        print(f"{master.stem} {who}: {sum(graded.scores.values()):g} points (as make grade), "
              f"{graded.seconds:.0f} s, peak {graded.peak_rss_mb:.0f} MB in the fresh environment", file=sys.stderr)

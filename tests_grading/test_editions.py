"""The student edition: every hole blank, no solution text, no hidden test, and a grader check per question.

Solutions are found by their own text in the masters: the lines inside ``# BEGIN SOLUTION`` /
``# END SOLUTION`` (in a code cell), whole markdown cells inside a raw BEGIN/END SOLUTION block (the
written questions' model answers), and every line of a ``# HIDDEN`` test cell. A line that also
appears in the master outside those parts (shared code) cannot betray a solution and is not looked for.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from conftest import ASSIGNMENTS, grading


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def secret_and_public_lines(master: Path) -> tuple[set[str], str]:
    """(solution and hidden-test lines, the master's other text) of a master notebook."""
    secret, public = set(), []
    in_solution_block = in_tests = False
    for cell in nbformat.read(master, as_version=4).cells:
        first = cell.source.strip().splitlines()[0].strip().upper() if cell.source.strip() else ""
        if cell.cell_type == "raw":
            in_solution_block = {"# BEGIN SOLUTION": True, "# END SOLUTION": False}.get(first, in_solution_block)
            in_tests = {"# BEGIN TESTS": True, "# END TESTS": False}.get(first, in_tests)
            continue
        lines = cell.source.splitlines()
        if cell.cell_type == "markdown" and in_solution_block:
            secret.update(lines)
            continue
        if cell.cell_type == "code" and in_tests and first.startswith("# HIDDEN"):
            secret.update(lines)
            continue
        inside = False
        for line in lines:
            if re.match(r"\s*# BEGIN SOLUTION", line):
                inside = True
            elif line.rstrip().endswith("# END SOLUTION"):
                inside = False
            elif inside or re.search(r"# ?SOLUTION$", line.rstrip()):
                secret.add(line)
            else:
                public.append(line)
    secret = {s.strip() for s in secret}
    public_text = "\n".join(public)
    return {s for s in secret if re.search(r"\w", s) and s not in public_text}, public_text


@pytest.mark.parametrize("master", ASSIGNMENTS, ids=lambda p: p.stem)
def test_no_solution_or_hidden_test_line_in_the_student_edition(build, master):
    secret, _ = secret_and_public_lines(master)
    # Every student notebook is searched; a line some master shows outside its solutions (`else:`) is no secret.
    shared = "\n".join(secret_and_public_lines(other)[1] for other in ASSIGNMENTS)
    secret = {s for s in secret if s not in shared}
    code_questions = [q for q in grading.questions(master) if not q.manual]
    assert len(secret) >= 5 * len(code_questions), f"{master.name}: too few solution lines found ({len(secret)})"
    # A master's solutions are searched for in its own student notebook and in every non-notebook
    # file of the edition (a short line such as `total = 0` may be ordinary lesson code elsewhere).
    student_files = [p for p in (build / "student").rglob("*") if p.is_file()
                     and (p.suffix != ".ipynb" or p.name == master.name)]
    assert student_files, "the student edition is empty"
    for path in student_files:
        text = path.read_text()
        if path.suffix == ".ipynb":
            text = "\n".join(_strings(json.loads(text)))   # the cells' text, unescaped, and otter's metadata
        leaked = sorted(s for s in secret if s in text)
        assert not leaked, f"{path.name} contains solution or hidden-test text of {master.name}: {leaked[:5]}"


@pytest.mark.parametrize("master", ASSIGNMENTS, ids=lambda p: p.stem)
def test_every_code_question_is_a_blank_hole_with_a_check(build, master):
    student = nbformat.read(build / "student" / master.name, as_version=4)
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    questions = grading.questions(master)
    code_questions = [q.name for q in questions if not q.manual]
    assert len(code_questions) >= 3 and len(questions) - len(code_questions) >= 2, (
        f"{master.name}: {len(code_questions)} code and {len(questions) - len(code_questions)} written questions; "
        "the course asks for at least 3 and 2")
    for name in code_questions:
        assert f'hole("{name}"' in code, f"{master.name}: no blank hole for {name} in the student edition"
        assert f'grader.check("{name}")' in code, f"{master.name}: no public check cell for {name}"
    assert "# BEGIN" not in code and "# END" not in code, f"{master.name}: otter markers left in the student edition"


def test_autograder_index_lists_every_question(build):
    listed = grading.load_questions(build / "autograder")
    expected = [q for nb in ASSIGNMENTS for q in grading.questions(nb)]
    assert listed == expected
    assert sorted(p.stem for p in (build / "autograder").glob("*.zip")) == sorted(nb.stem for nb in ASSIGNMENTS)


@pytest.mark.parametrize("master", ASSIGNMENTS, ids=lambda p: p.stem)
def test_student_edition_runs_top_to_bottom(build, master):
    """Executed as handed out (blank holes, in its own folder, where its checks find their tests), no cell
    raises; the lesson says which exercise it waits for. Cells tagged otter_ignore (checkpoint evaluations, timings) are skipped, as when grading: they are
    the master's own cells, checked by nbval."""
    from nbclient import NotebookClient

    nb = nbformat.read(build / "student" / master.name, as_version=4)
    nb.cells = [c for c in nb.cells if "otter_ignore" not in c.metadata.get("tags", [])]
    NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(build / "student")}}).execute()
    errors = [(c.source.splitlines()[0], o["ename"], o["evalue"]) for c in nb.cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{master.name}, student edition: cells raised {errors}"
    printed = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "skipped until exercise" in printed, f"{master.name}: no cell reported a skipped exercise"

"""Wrong answers lose points: every mutant of tests_grading/mutants/ scores below full marks on its question.

A mutant is a wrong answer to one code question that drops ONE requirement the question's prompt states
(a size, a bias, a stride, an inclusive bound, a rounding, a tie-break, a dtype, working on a copy). The files
``tests_grading/mutants/<notebook>.py`` hold them as functions named ``<question>__<what is dropped>``, with the
dropped requirement in the docstring, plus ``FUNCTIONS`` (question -> the function the student writes) and
``SETUP`` (code that defines cheaply what the question's tests read from the lesson); helpers shared by mutants
are named ``_mutant_*``.

Grading a mutant does not execute its notebook (minutes each): the question's public and hidden test cases
are taken from the autograder that ``otter assign`` wrote (``tests/<question>.py`` in the zip) and run by
otter's own runner (``otter.test_files``: doctests, one share of the points per test case; for a mutant the
cases after its first failing one are skipped) in a namespace made of
the master's first code cell, ``SETUP``, and the master's solution cells; the mutant then replaces the
student's function in a copy of that namespace (modules deep-copied, so an in-place mutant cannot spoil the
next one). The same harness gives each master solution full marks, which shows the namespace is complete.
"""
from __future__ import annotations

import copy
import importlib.util
import re
import types
import zipfile
from functools import cache
from pathlib import Path

import nbformat
import pytest
import torch

from conftest import ASSIGNMENTS, grading

MUTANTS_DIR = Path(__file__).resolve().parent / "mutants"
_MUTANT_NAME = re.compile(r"^(q\d\d_\d+)__(\w+)$")


def _load_module(notebook: Path) -> types.ModuleType | None:
    path = MUTANTS_DIR / f"{notebook.stem}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"mutants_{notebook.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODULES = {nb.stem: _load_module(nb) for nb in ASSIGNMENTS}
MUTANTS = [(stem, m.group(1), m.group(2), fn) for stem, module in MODULES.items() if module is not None
           for name, fn in vars(module).items() if callable(fn) and (m := _MUTANT_NAME.match(name))]


def _code_questions(stem: str) -> list:
    master = next(nb for nb in ASSIGNMENTS if nb.stem == stem)
    return [q for q in grading.questions(master) if not q.manual]


@cache
def _base_namespace(stem: str) -> dict:
    """The master's first code cell, the mutant file's SETUP, then every solution cell of the master."""
    master = next(nb for nb in ASSIGNMENTS if nb.stem == stem)
    cells = nbformat.read(master, as_version=4).cells
    ns: dict = {"__name__": "__main__"}
    first = next(c for c in cells if c.cell_type == "code")
    exec(compile(first.source, f"{master.name}: first code cell", "exec"), ns)
    exec(compile(MODULES[stem].SETUP, f"mutants/{stem}.py: SETUP", "exec"), ns)
    in_solution = False
    for cell in cells:
        head = cell.source.strip().splitlines()[0].strip().upper() if cell.source.strip() else ""
        if cell.cell_type == "raw":
            in_solution = {"# BEGIN SOLUTION": True, "# END SOLUTION": False}.get(head, in_solution)
        elif cell.cell_type == "code" and in_solution:
            exec(compile(cell.source, f"{master.name}: solution cell", "exec"), ns)
    return ns


def _isolated(ns: dict) -> dict:
    """A copy of the namespace in which modules (and objects holding them) are fresh copies, and the notebook's own
    functions (``basic_resnet_params`` calling ``stage_params``) look their names up in the copy."""
    out = dict(ns)
    for key, value in ns.items():
        if isinstance(value, torch.nn.Module) or isinstance(value, types.SimpleNamespace):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, types.FunctionType) and value.__globals__ is ns:
            fn = types.FunctionType(value.__code__, out, value.__name__, value.__defaults__, value.__closure__)
            fn.__kwdefaults__ = value.__kwdefaults__
            out[key] = fn
    return out


@cache
def _test_file(build: Path, stem: str, question: str) -> Path:
    """tests/<question>.py of the notebook's autograder zip, extracted next to it."""
    out = build / "mutant_tests" / stem / f"{question}.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(build / "autograder" / f"{stem}.zip") as z:
        out.write_bytes(z.read(f"tests/{question}.py"))
    return out


def grade(build: Path, stem: str, question: str, answer=None, stop_at_first_failure: bool = False):
    """(score, possible, [(case index, hidden, message) of failed cases]) of the question's test cases, graded by
    otter's doctest runner with ``answer`` as the student's function (the master's solution if None).

    With ``stop_at_first_failure`` the cases after the first failing one are not run, and ``score`` is then an
    upper bound: full marks less the points of that case.
    """
    from otter.test_files import OKTestFile
    from otter.test_files.ok_test import run_doctest

    ns = _isolated(_base_namespace(stem))
    for key, value in vars(MODULES[stem]).items():      # the mutant file's helpers (_mutant_*), bound to ns
        if key.startswith("_mutant_") and isinstance(value, types.FunctionType):
            ns[key] = types.FunctionType(value.__code__, ns, key, value.__defaults__, value.__closure__)
            ns[key].__kwdefaults__ = value.__kwdefaults__
    if answer == "blank":                               # the student edition's hole
        ns[MODULES[stem].FUNCTIONS[question]] = lambda *args, **kwargs: ns["hole"](question, "left blank")
    elif answer is not None:
        name = MODULES[stem].FUNCTIONS[question]
        fn = types.FunctionType(answer.__code__, ns, name, answer.__defaults__, answer.__closure__)
        fn.__kwdefaults__ = answer.__kwdefaults__
        ns[name] = fn
    test = OKTestFile.from_file(str(_test_file(build, stem, question)))
    possible = sum(case.points for case in test.test_cases)
    score, failed = possible, []
    for i, case in enumerate(test.test_cases):
        passed, message = run_doctest(f"{question} {i}", case.body, ns)
        if not passed:
            score -= case.points
            failed.append((i, case.hidden, message))
            if stop_at_first_failure:
                break
    return score, possible, failed


@pytest.mark.parametrize("stem", [nb.stem for nb in ASSIGNMENTS])
def test_every_code_question_has_mutants(stem):
    module = MODULES[stem]
    assert module is not None, f"no tests_grading/mutants/{stem}.py: write wrong answers for its code questions"
    questions = [q.name for q in _code_questions(stem)]
    assert sorted(module.FUNCTIONS) == sorted(questions), (module.FUNCTIONS, questions)
    have = {q for s, q, _, _ in MUTANTS if s == stem}
    assert have == set(questions), f"{stem}: questions without mutants: {sorted(set(questions) - have)}"
    for s, q, name, fn in MUTANTS:
        if s == stem:
            assert (fn.__doc__ or "").strip(), f"{q}__{name}: say in its docstring which requirement it drops"


@pytest.mark.parametrize("stem,question", [(nb.stem, q.name) for nb in ASSIGNMENTS for q in _code_questions(nb.stem)
                                           if MODULES[nb.stem] is not None])
def test_master_solution_scores_full_marks_in_the_harness(build, stem, question):
    score, possible, failed = grade(build, stem, question)
    assert score == possible, (f"{stem} {question}: the master's own solution scored {score}/{possible}:\n"
                               + "\n".join(message for _, _, message in failed))


@pytest.mark.parametrize("stem,question,name,mutant", MUTANTS, ids=[f"{q}__{n}" for _, q, n, _ in MUTANTS])
def test_mutant_loses_points(build, stem, question, name, mutant):
    score, possible, failed = grade(build, stem, question, mutant, stop_at_first_failure=True)
    harness = [m for _, _, m in failed if "is not defined" in m or re.search(r"missing \d+ required", m)]
    assert not harness, f"{question}__{name} failed on the harness (a missing name or argument), not on its mistake:\n{harness[0]}"
    if failed:
        i, hidden, _ = failed[0]
        print(f"\nMUTANT {question}__{name}: at most {score:.3g}/{possible:g}, fails test case {i} "
              f"({'hidden' if hidden else 'public'})  ({mutant.__doc__.strip().splitlines()[0]})")
    assert score < possible, (f"{question}__{name} ({mutant.__doc__.strip()}) scored full marks ({score}/{possible}): "
                              "a hidden test must pin this requirement")


@pytest.mark.parametrize("stem,question", [(nb.stem, q.name) for nb in ASSIGNMENTS for q in _code_questions(nb.stem)
                                           if MODULES[nb.stem] is not None])
def test_blank_answer_fails_every_case_with_one_line(build, stem, question):
    """A blank hole fails each test case with the one line of ``checking``, not a cascade of errors."""
    score, _, failed = grade(build, stem, question, "blank")
    assert abs(score) < 1e-9, f"{question}: a blank answer scored {score}"
    for i, _, message in failed:
        assert message.count(f"{question} is not done yet") == 1 and "Traceback" not in message, (
            f"{question}, test case {i}: a blank answer should fail with one line, got:\n{message}")


@pytest.mark.parametrize("master", ASSIGNMENTS, ids=lambda p: p.stem)
def test_no_cell_rebinds_the_exercise_helpers(master):
    """A lesson variable named ``check`` (a results table, say) would break every later check and graded test."""
    import ast

    helpers = {"check", "checking", "hole", "skip_until_done"}
    for i, cell in enumerate(nbformat.read(master, as_version=4).cells):
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, (ast.For, ast.comprehension)):
                targets = [node.target]
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in helpers:
                raise AssertionError(f"{master.name} cell {i}: defines {node.name}, which shadows pruning_lib.course.exercises")
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            assert not names & helpers, (f"{master.name} cell {i}: assigns {sorted(names & helpers)}, which shadows "
                                         "pruning_lib.course.exercises' helper of that name; rename the variable")

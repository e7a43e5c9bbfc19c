"""Grading both editions: the masters score full marks on the code questions, the blank student edition zero.

The hand-graded (written) questions stay blank in the grade sheet for the instructor to fill in.
"""
from __future__ import annotations

import csv

from conftest import ASSIGNMENTS, grading


def _questions():
    return [q for nb in ASSIGNMENTS for q in grading.questions(nb)]


def test_masters_score_full_marks(graded):
    row = graded["master"]
    assert row["notes"] == "", row["notes"]
    for q in _questions():
        if not q.manual:
            assert row[q.name] == q.points, f"master {q.notebook}: {q.name} scored {row[q.name]} of {q.points}"
    assert row["total"] == sum(q.points for q in _questions() if not q.manual)


def test_blank_student_edition_grades_without_crashing_and_scores_zero(graded):
    row = graded["blank"]
    assert row["notes"] == "", row["notes"]          # graded: no failure, no missing score
    for q in _questions():
        if not q.manual:
            assert row[q.name] == 0, f"blank {q.notebook}: {q.name} scored {row[q.name]}"
    assert row["total"] == 0


def test_grade_sheet_has_a_column_per_question_and_blank_manual_ones(build, graded):
    with (build / "grades.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["student"] for r in rows] == ["blank", "master"]
    assert list(rows[0]) == ["student"] + [q.name for q in _questions()] + ["total", "notes"]
    for r in rows:
        for q in _questions():
            assert (r[q.name] == "") == q.manual, (r["student"], q.name, r[q.name])

"""Holes in the graded notebooks: a blank exercise raises a clear error, and what needs it says so.

The master notebooks in ``notebooks/`` carry otter-grader's markers (see ``docs/instructors.md``);
``make student`` turns them into the student edition, where each exercise's solution is gone. So
that the student edition still runs top to bottom, a hole is written like this in the master::

    from pruning_lib.exercises import hole, skip_until_done

    def conv_params(conv):
        \"\"\"Number of weights and biases of ``conv``.\"\"\"
        \"\"\" # BEGIN PROMPT
        hole("q00_1", "return the number of weights (and biases) of conv")
        \"\"\" # END PROMPT
        # BEGIN SOLUTION NO PROMPT
        return conv.weight.numel() + (conv.bias.numel() if conv.bias is not None else 0)
        # END SOLUTION

In the master the prompt is an inert string and the solution runs; in the student edition the
solution lines are removed and the prompt line remains, so calling the function raises
:class:`ExerciseNotDone` (a :class:`NotImplementedError` naming the question). A later cell of the
lesson that uses the function wraps that use::

    with skip_until_done():
        print(conv_params(model.conv1))

which, while the hole is blank, prints ``skipped until exercise q00_1 is done: ...`` instead of
crashing; any other error propagates as usual. Variables assigned inside a skipped block stay
undefined, so every later cell that uses them needs its own ``with skip_until_done():``.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import NoReturn

_QUESTION = re.compile(r"^q\d\d_\d+$")


class ExerciseNotDone(NotImplementedError):
    """Raised by a blank hole; ``question`` is the otter question name (``q<nb>_<k>``)."""

    def __init__(self, question: str, task: str) -> None:
        self.question = question
        self.task = task
        super().__init__(f"exercise {question}: {task} (fill in the hole marked {question} in this notebook)")


def hole(question: str, task: str) -> NoReturn:
    """The body of a blank exercise: raise :class:`ExerciseNotDone` for ``question``, saying what to write."""
    if not _QUESTION.match(question):
        raise ValueError(f"hole(): question name {question!r} is not of the form q<nb>_<k> (e.g. 'q00_1'); "
                         "use the name given in the question's BEGIN QUESTION cell")
    raise ExerciseNotDone(question, task)


@contextlib.contextmanager
def skip_until_done() -> Iterator[None]:
    """Run the block; if a blank hole is reached, print which exercise it waits for and carry on."""
    try:
        yield
    except ExerciseNotDone as exc:
        print(f"skipped until exercise {exc.question} is done: {exc.task}")


__all__ = ["ExerciseNotDone", "hole", "skip_until_done"]

"""Holes in the graded notebooks: a blank exercise raises a clear error, and what needs it says so.

The master notebooks in ``notebooks/`` carry otter-grader's markers (see ``docs/instructors.md``);
``make student`` turns them into the student edition, where each exercise's solution is gone. So
that the student edition still runs top to bottom, a hole is written like this in the master::

    from pruning_lib.course.exercises import check, checking, hole, skip_until_done

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

A test cell (public or hidden) wraps its body in ``with checking("q00_1"):`` so that a blank hole
gives one line (``q00_1 is not done yet: ...``) instead of a cascade of errors, and compares with
:func:`check`, whose message says what was expected, what was got and where they first differ::

    with checking("q00_1"):
        check("conv_params(nn.Conv2d(3, 16, 3))", conv_params(nn.Conv2d(3, 16, 3)), 448,
              hint="count the bias too")
"""
from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn

import torch

_QUESTION = re.compile(r"^q\d\d_\d+$")
_MAX_REPR = 120


class ExerciseNotDone(NotImplementedError):
    """Raised by a blank hole; ``question`` is the otter question name (``q<nb>_<k>``)."""

    def __init__(self, question: str, task: str) -> None:
        self.question = question
        self.task = task
        super().__init__(f"exercise {question}: {task} (fill in the hole marked {question} in this notebook)")


class CheckFailed(AssertionError):
    """Raised by :func:`check`: what was compared, what was expected, what was got, and a hint."""


def _validate(question: str, caller: str) -> None:
    if not _QUESTION.match(question):
        raise ValueError(f"{caller}(): question name {question!r} is not of the form q<nb>_<k> (e.g. 'q00_1'); "
                         "use the name given in the question's BEGIN QUESTION cell")


def hole(question: str, task: str) -> NoReturn:
    """The body of a blank exercise: raise :class:`ExerciseNotDone` for ``question``, saying what to write."""
    _validate(question, "hole")
    raise ExerciseNotDone(question, task)


@contextlib.contextmanager
def skip_until_done() -> Iterator[None]:
    """Run the block; if a blank hole is reached, print which exercise it waits for and carry on."""
    try:
        yield
    except ExerciseNotDone as exc:
        print(f"skipped until exercise {exc.question} is done: {exc.task}")


@contextlib.contextmanager
def checking(question: str) -> Iterator[None]:
    """Run a test cell's body; a blank hole (or an undefined name) ends it with one printed line.

    In a graded test the printed line is unexpected output, so the test still fails, with that one line
    instead of one error per later statement. Wrong answers raise :class:`CheckFailed` as usual.
    """
    _validate(question, "checking")
    try:
        yield
    except ExerciseNotDone as exc:
        print(f"{question} is not done yet: exercise {exc.question} is blank ({exc.task})")
    except NameError as exc:
        print(f"{question}: {exc}; run the cells above this one, the one that defines your function included")


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 8:
            return f"tensor({value.tolist()}, dtype={value.dtype})"
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR - 3] + "..."


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _tensor_difference(got: Any, expected: torch.Tensor, rtol: float, atol: float, dtype: bool) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__} {_short(got)}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
    if dtype and got.dtype != expected.dtype:
        return f"expected dtype {expected.dtype}, got dtype {got.dtype}"
    g, e = got.detach().cpu(), expected.detach().cpu()
    if e.is_floating_point() or g.is_floating_point():
        g, e = g.double(), e.double()
        same = torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    else:
        same = g == e
    if bool(same.all()):
        return None
    bad = (~same).nonzero()
    first = tuple(int(i) for i in bad[0])
    where = first if len(first) != 1 else first[0]
    text = (f"{len(bad)} of {e.numel()} entries differ (shape {tuple(e.shape)}); the first at index {where}: "
            f"expected {e[first].item():.10g}, got {g[first].item():.10g}")
    if e.is_floating_point():
        text += f"; max |difference| {float((g - e).abs().nan_to_num(math.inf).max()):.3g}"
    return text


def _difference(got: Any, expected: Any, rtol: float, atol: float, dtype: bool) -> str | None:
    """None if got matches expected, else a sentence saying where they first differ."""
    if isinstance(expected, torch.Tensor):
        return _tensor_difference(got, expected, rtol, atol, dtype)
    if _is_number(expected):
        if not _is_number(got) and not (isinstance(got, torch.Tensor) and got.numel() == 1 and not dtype):
            return f"expected the number {expected!r}, got {type(got).__name__} {_short(got)}"
        if dtype and type(got) is not type(expected):
            return f"expected a {type(expected).__name__} ({expected!r}), got a {type(got).__name__} ({_short(got)})"
        g = float(got)
        if isinstance(expected, float) or isinstance(got, float) or isinstance(got, torch.Tensor):
            ok = (math.isnan(g) and math.isnan(expected)) or math.isclose(g, expected, rel_tol=rtol, abs_tol=atol) \
                or g == expected
        else:
            ok = got == expected
        return None if ok else f"expected {expected!r}, got {_short(got)}"
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"expected a dict {_short(expected)}, got {type(got).__name__} {_short(got)}"
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing or extra:
            return (f"expected the keys {list(expected)}, got {list(got)}"
                    + (f" (missing {missing})" if missing else "") + (f" (unexpected {extra})" if extra else ""))
        for key in expected:
            diff = _difference(got[key], expected[key], rtol, atol, dtype)
            if diff is not None:
                return f"at key {key!r}: {diff}"
        return None
    if isinstance(expected, Sequence) and not isinstance(expected, str):
        if not isinstance(got, Sequence) or isinstance(got, str):
            return f"expected a {type(expected).__name__} of {len(expected)} items, got {type(got).__name__} {_short(got)}"
        if dtype and type(got) is not type(expected):
            return f"expected a {type(expected).__name__}, got a {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            diff = _difference(g, e, rtol, atol, dtype)
            if diff is not None:
                return f"first difference at position {i}: {diff}"
        if len(got) != len(expected):
            return (f"expected {len(expected)} items, got {len(got)} (equal up to position {min(len(got), len(expected))}"
                    f"; next expected {_short(expected[len(got)]) if len(got) < len(expected) else 'nothing'}"
                    f", next got {_short(got[len(expected)]) if len(got) > len(expected) else 'nothing'})")
        return None
    if dtype and type(got) is not type(expected):
        return f"expected a {type(expected).__name__} ({_short(expected)}), got a {type(got).__name__} ({_short(got)})"
    return None if got == expected else f"expected {_short(expected)}, got {_short(got)}"


def check(what: str, got: Any, expected: Any, hint: str | None = None, *, rtol: float = 0.0, atol: float = 0.0,
          dtype: bool = False) -> None:
    """Assert that ``got`` equals ``expected``; if not, say what, expected against got, and where they differ.

    Tensors are compared by shape, then entry by entry (``rtol``/``atol`` for floats; the first differing
    index is named); lists, tuples and dicts item by item; numbers within ``rtol``/``atol``. With
    ``dtype=True`` the types (and tensor dtypes) must match too. Raises :class:`CheckFailed`.
    """
    if not isinstance(what, str) or not what:
        raise TypeError(f"check(): 'what' must name the value checked (a non-empty str), got {what!r}")
    if rtol < 0 or atol < 0:
        raise ValueError(f"check(): tolerances must be >= 0, got rtol={rtol}, atol={atol}")
    diff = _difference(got, expected, rtol, atol, dtype)
    if diff is not None:
        raise CheckFailed(f"{what}: {diff}" + (f". Hint: {hint}" if hint else ""))


__all__ = ["CheckFailed", "ExerciseNotDone", "check", "checking", "hole", "skip_until_done"]

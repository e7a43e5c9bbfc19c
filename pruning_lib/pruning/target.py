"""When to stop pruning: one vocabulary for both methods, every fraction a fraction REMOVED.

``Target(parameters=0.5)`` removes half of the parameters (a sparsity of 0.5, TVSPrune's
vocabulary); ``Target(channels=0.3)`` removes at most 30 % of the eligible channels. Global pruning
(DFPC) reads every field: ``parameters``, ``flops``, ``channels``, ``speedup``, ``accuracy_drop`` and
``min_accuracy``; IterTVSPrune reads ``parameters``, ``flops``, ``accuracy_drop`` and ``min_accuracy`` and
refuses a Target with ``channels`` or ``speedup`` (use ``global_prune(..., criterion="tvs")`` for those).

Every field is checked once, here: a real number (Python, NumPy or a one-element tensor; stored as
a float) in its range. ``parameters=0.0`` means "remove nothing": the unpruned model already meets
it. An accuracy limit that is NaN is one no accuracy meets (NaN never passes a gate, the same as an
accuracy that is NaN): it is accepted with a warning and no pruning step is then accepted.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import torch

_REMOVED = ("parameters", "flops")
_FIELDS = ("parameters", "flops", "channels", "speedup", "accuracy_drop", "min_accuracy")


def _number(name: str, v) -> float | None:
    if v is None or type(v) in (int, float):
        return v                                # as given: reports print the number the caller wrote
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_complex() and v.dtype != torch.bool:
        return float(v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"Target.{name}={v!r}: the type {type(v).__name__} is not a real number; give a float "
                    f"(e.g. Target({name}=0.5))")


@dataclass(frozen=True)
class Target:
    """When to stop. ``parameters``/``flops``: fraction of the unpruned count to remove, in [0, 1);
    ``channels``: fraction of the eligible channels to remove at most, in (0, 1]; ``speedup``:
    measured latency speedup to reach (>= 1); ``accuracy_drop``: the most accuracy (points) that may
    be lost; ``min_accuracy``: an accuracy floor (%). None: no such limit."""
    parameters: float | None = None
    flops: float | None = None
    channels: float | None = None
    speedup: float | None = None
    accuracy_drop: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self):
        for name in _FIELDS:
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        for name in _REMOVED:
            v = getattr(self, name)
            if v is not None and not 0 <= v < 1:
                raise ValueError(f"Target.{name}={v!r}: give the fraction to REMOVE in [0, 1), e.g. 0.5 "
                                 f"for half of the {name} (0.0 removes nothing)")
        if self.channels is not None and not 0 < self.channels <= 1:
            raise ValueError(f"Target.channels={self.channels}: give the fraction of channels to remove "
                             "in (0, 1], e.g. 0.5")
        if self.speedup is not None and not 1 <= self.speedup < math.inf:
            raise ValueError(f"Target.speedup={self.speedup}: a speedup target is a finite number >= 1, e.g. 2.0")
        for name, what in (("accuracy_drop", "points of accuracy that may be lost"),
                           ("min_accuracy", "an accuracy floor in %")):
            v = getattr(self, name)
            if v is not None and math.isnan(v):
                warnings.warn(f"Target.{name} is NaN: no accuracy meets it, so no pruning step will be "
                              f"accepted; give {what} in [0, 100]", UserWarning, stacklevel=3)
            elif v is not None and not 0 <= v <= 100:
                raise ValueError(f"Target.{name}={v}: give {what} in [0, 100]")

    def rejects(self, base: float | None, accuracy: float | None) -> str:
        """Why ``accuracy`` (in %, unpruned ``base``) fails this target's accuracy limits, or ""
        when it passes. NaN (in the limit or in either accuracy) never passes."""
        if self.accuracy_drop is not None and not base - accuracy <= self.accuracy_drop:
            return f"accuracy drop above {self.accuracy_drop} points" + _nan_note(base, accuracy, self.accuracy_drop)
        if self.min_accuracy is not None and not accuracy >= self.min_accuracy:
            return f"accuracy below {self.min_accuracy} %" + _nan_note(accuracy, self.min_accuracy)
        return ""

    def size_reached(self, base_parameters: int, parameters: int, base_flops: int, flops: int,
                     speedup: float | None = None) -> list[str]:
        """The size limits (parameters, FLOPs, measured speedup) a model with these counts meets."""
        hit = []
        keep_p, keep_f = self.kept("parameters"), self.kept("flops")
        if keep_p is not None and parameters <= keep_p * base_parameters:
            hit.append(f"parameters at most {keep_p:.0%} of the unpruned")
        if keep_f is not None and flops <= keep_f * base_flops:
            hit.append(f"FLOPs at most {keep_f:.0%} of the unpruned")
        if self.speedup is not None and speedup is not None and speedup >= self.speedup:
            hit.append(f"measured speedup at least {self.speedup}x")
        return hit

    def only(self, fields: tuple[str, ...], verb: str, instead: str) -> None:
        """Refuse the fields ``verb`` cannot honour (TypeError naming them and what to use instead)."""
        extra = [f"{n}={getattr(self, n)}" for n in _FIELDS if n not in fields and getattr(self, n) is not None]
        if extra:
            raise TypeError(f"{verb} reaches Target({', '.join(fields)}) only; it cannot honour Target("
                            f"{', '.join(extra)}). {instead}")

    def kept(self, name: str) -> float | None:
        """The fraction of ``parameters`` or ``flops`` to keep (1 - the fraction removed), or None."""
        v = getattr(self, name)
        return None if v is None else 1.0 - v

    @property
    def needs_accuracy(self) -> bool:
        """Whether reaching this target needs an accuracy measure (an evaluation source)."""
        return self.accuracy_drop is not None or self.min_accuracy is not None


def _nan_note(*values) -> str:
    return " (NaN never passes an accuracy gate)" if any(v is not None and math.isnan(v) for v in values) else ""


class StopRule:
    """A :class:`Target`'s stop rules against the unpruned model's measured step (``base``): the one
    piece every pruning loop asks whether a measured step is rejected (accuracy) or meets the target
    (size). A step is anything with ``parameters``, ``flops``, ``accuracy``, ``speedup`` and ``note``
    (a :class:`~pruning_lib.pruning.report.PruningStep`); the verdict is written in its ``note``."""

    def __init__(self, target: Target, base):
        self.target, self.base = target, base

    def rejects(self, step) -> str:
        """Why ``step`` fails the accuracy limits ("" when it passes, or when there are none)."""
        if not self.target.needs_accuracy:
            return ""
        why = self.target.rejects(self.base.accuracy, step.accuracy)
        if why:
            step.note = "beyond the accuracy-drop target" if why.startswith("accuracy drop") else "below the accuracy floor"
        return why

    def reached(self, step) -> str:
        """The size limits ``step`` meets, joined ("" when none)."""
        hit = "; ".join(self.target.size_reached(self.base.parameters, step.parameters, self.base.flops, step.flops,
                                                 step.speedup))
        if hit:
            step.note = "target reached"
        return hit


__all__ = ["Target", "StopRule"]

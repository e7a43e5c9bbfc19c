"""What every pruning verb returns, one family: the pruned model, what was removed, what happened at
each step, and why it stopped.

``result.removed`` names each DFC by its feed-in layers (names that survive pruning, so a DFC of the
unpruned model and the same DFC after several steps have one name) and lists the removed channels by
their index in the UNPRUNED model; ``result.removals`` gives the same keyed by ``result.graph``'s
DFC objects, ready for ``prune(original, result.graph, ...)`` (a :class:`Removals`: a mapping, and
``result.removals(step)`` gives another step's where the run can rebuild it). ``result.report`` has one
:class:`~pruning_lib.pruning.report.PruningStep` per measured step (step 0 is the unpruned model) and
``result.accepted_step`` is the step ``result.model`` is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..graph.types import DFC, ChannelGraph
from ..scoring.base import ChannelScores
from .report import PruningReport

DFCName = tuple[str, ...]


def dfc_name(dfc: DFC) -> DFCName:
    """A DFC's name: its feed-in layers, sorted (the same in the unpruned model and after pruning)."""
    return tuple(sorted(dfc.A))


class Removals(dict):
    """Channels removed per DFC of ``result.graph`` (indices of the unpruned model) at the accepted step.
    Calling it gives a copy: ``removals()`` that step's, ``removals(step)`` another step's, for results
    whose run can rebuild every step (global pruning)."""

    def __init__(self, accepted: dict[DFC, list[int]], at: Callable[[int], dict[DFC, list[int]]] | None = None):
        super().__init__(accepted)
        self._at = at

    def __call__(self, step: int | None = None) -> dict[DFC, list[int]]:
        if step is None:
            return {d: list(c) for d, c in self.items()}
        if self._at is None:
            raise TypeError("this result keeps the accepted step's removals only; use result.removals")
        return self._at(step)


def named(removals: dict[DFC, list[int]]) -> dict[DFCName, list[int]]:
    """``removals`` keyed by DFC name, channels sorted."""
    return {dfc_name(d): sorted(c) for d, c in removals.items() if c}


@dataclass
class PruningResult:
    """A pruning run. ``model``: the pruned model (the caller's is untouched); ``report``: every step
    measured; ``graph``/``scores``: the unpruned model's graph and the scores that ordered it (None when
    scores were re-estimated along the way); ``removed``: channels removed per DFC name (module docstring);
    ``stop_reason``: why the run ended; ``accepted_step``: the report step that ``model`` is."""
    model: nn.Module
    report: PruningReport
    graph: ChannelGraph
    removed: dict[DFCName, list[int]]
    stop_reason: str
    accepted_step: int
    scores: ChannelScores | None = None

    @property
    def removals(self) -> Removals:
        """``removed`` keyed by the DFCs of ``graph`` (the unpruned model's)."""
        by_name = {dfc_name(d): d for d in self.graph.dfcs}
        return Removals({by_name[k]: list(c) for k, c in self.removed.items()})

    @property
    def channels_removed(self) -> int:
        return sum(len(c) for c in self.removed.values())

    @property
    def parameters_before(self) -> int:
        return self.report.base.parameters

    @property
    def parameters_after(self) -> int:
        return self.report.steps[self.accepted_step].parameters

    @property
    def sparsity(self) -> float:
        """Fraction of the parameters removed."""
        return 1.0 - self.parameters_after / self.parameters_before

    @property
    def flops_reduction(self) -> float:
        """The unpruned model's FLOPs over the pruned model's (1.0: nothing removed)."""
        return self.report.base.flops / self.report.steps[self.accepted_step].flops


__all__ = ["PruningResult", "Removals", "DFCName", "dfc_name", "named"]

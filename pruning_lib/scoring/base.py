"""The criterion protocol: every criterion maps ``(model, graph, **data)`` to :class:`ChannelScores`.

A criterion scores every channel of every prunable DFC; lower scores are pruned first. Data-free
criteria (DFPC, L1, random) ignore ``data``; data-driven ones (TVSPrune) read their samples from
``data=`` (a DataLoader of (inputs, labels), or a course split). Criteria are registered by name
(:func:`register_criterion`, :func:`get_criterion`, :func:`list_criteria`), as torchvision registers
models, so ``global_prune(model, "dfpc")`` and ``global_prune(model, pl.dfpc_scores)`` are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from ..graph.discovery import discover
from ..graph.types import DFC, ChannelGraph
from ..sources import input_shape_for


@dataclass
class ChannelScores:
    """One non-negative score per channel of each prunable DFC of ``graph`` (float64, CPU)."""
    method: str
    graph: ChannelGraph
    scores: dict[DFC, torch.Tensor]

    def __getitem__(self, dfc: DFC) -> torch.Tensor:
        return self.scores[dfc]

    def __len__(self) -> int:
        return sum(len(s) for s in self.scores.values())

    def flat(self) -> tuple[torch.Tensor, list[tuple[DFC, int]]]:
        """All scores in one vector, and the (DFC, channel) each entry belongs to."""
        keys = [(d, k) for d in self.graph.dfcs if d in self.scores for k in range(d.channels)]
        vals = torch.cat([self.scores[d] for d in self.graph.dfcs if d in self.scores]) if keys \
            else torch.zeros(0, dtype=torch.float64)
        return vals, keys

    def __repr__(self) -> str:
        return f"ChannelScores({self.method!r}, {len(self.scores)} DFCs, {len(self)} channels)"


class Criterion(Protocol):
    """``criterion(model, graph=None, *, data=None, ...) -> ChannelScores`` (graph found when None)."""

    def __call__(self, model: nn.Module, graph: ChannelGraph | None = None, **data) -> ChannelScores: ...


def graph_of(model: nn.Module, graph: ChannelGraph | None, input_shape: tuple | None,
             verb: str = "a criterion") -> ChannelGraph:
    """``graph``, or the model's graph discovered at ``input_shape`` when none is given (one of the two
    is required: no input shape is assumed)."""
    if graph is not None:
        return graph
    return discover(model, input_shape_for(input_shape, None, f"{verb} (without graph=)"))


_CRITERIA: dict[str, Callable[..., ChannelScores]] = {}


def register_criterion(name: str) -> Callable[[Callable[..., ChannelScores]], Callable[..., ChannelScores]]:
    """Decorator: make a criterion ``(model, graph=None, *, data=None, ...) -> ChannelScores`` known by ``name``."""
    def add(fn: Callable[..., ChannelScores]) -> Callable[..., ChannelScores]:
        if name in _CRITERIA and _CRITERIA[name] is not fn:
            raise ValueError(f"a criterion is already registered as {name!r}; choose another name")
        _CRITERIA[name] = fn
        return fn
    return add


def list_criteria() -> list[str]:
    """The registered criterion names (``dfpc``, ``dfpc_mean``, ``l1``, ``random``, ``tvs``, ...)."""
    from . import dfpc, magnitude, tvs  # noqa: F401  (registration happens on import)
    return sorted(_CRITERIA)


def get_criterion(name: str) -> Callable[..., ChannelScores]:
    """The criterion function called ``name``: ``dfpc``, ``dfpc_mean`` (DFPC's sums divided by each
    DFC's pair count), ``l1``, ``random`` or ``tvs`` (TVSPrune, needs ``data=``)."""
    names = list_criteria()
    if name not in _CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {names} "
                         "or pass a function (model, graph) -> ChannelScores")
    return _CRITERIA[name]


def resolve_criterion(criterion: str | Callable[..., ChannelScores]) -> Callable[..., ChannelScores]:
    """A criterion from its registered name, or the callable itself."""
    if isinstance(criterion, str):
        return get_criterion(criterion)
    if not callable(criterion):
        raise TypeError(f"criterion must be a registered name {list_criteria()}, a function "
                        f"(model, graph, **data) -> ChannelScores or ready ChannelScores; got {type(criterion).__name__}")
    return criterion


__all__ = ["ChannelScores", "Criterion", "register_criterion", "get_criterion", "list_criteria",
           "resolve_criterion", "graph_of"]

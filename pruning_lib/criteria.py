"""Channel saliency criteria with one interface: a score per channel of every DFC.

A criterion maps ``(model, graph)`` to :class:`ChannelScores`; lower scores are pruned first.
DFPC's own saliency lives in :mod:`pruning_lib.dfpc`; here are the two baselines of the paper's
ablations (Narshana et al., 2023): the L1 norm of the feed-in filters, summed over A, and random
scores (seeded).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .coupling import DFC, ChannelGraph, discover


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


def _graph(model: nn.Module, graph: ChannelGraph | None, input_shape: tuple) -> ChannelGraph:
    return graph if graph is not None else discover(model, input_shape)


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    m = model.get_submodule(name)
    if not isinstance(m, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"{name} is a {type(m).__name__}; feed-in/feed-out layers must be Conv2d or Linear")
    return m.weight.detach().to("cpu", torch.float64)


@torch.no_grad()
def l1_scores(model: nn.Module, graph: ChannelGraph | None = None, input_shape: tuple = (1, 3, 32, 32)
              ) -> ChannelScores:
    """Baseline: the L1 norm of channel k's output filter, summed over the feed-in layers A."""
    graph = _graph(model, graph, input_shape)
    out = {}
    for dfc in graph.dfcs:
        s = torch.zeros(dfc.channels, dtype=torch.float64)
        for ref in dfc.feed_in:
            w = _weight(model, ref.module).abs().flatten(1).sum(1)      # per output channel
            s += w[ref.indices(range(dfc.channels))]
        out[dfc] = s
    return ChannelScores("l1", graph, out)


def random_scores(model: nn.Module, graph: ChannelGraph | None = None, input_shape: tuple = (1, 3, 32, 32),
                  seed: int = 0) -> ChannelScores:
    """Baseline: i.i.d. uniform scores from a seeded generator (the same seed gives the same order)."""
    graph = _graph(model, graph, input_shape)
    gen = torch.Generator().manual_seed(seed)
    return ChannelScores("random", graph,
                         {d: torch.rand(d.channels, generator=gen, dtype=torch.float64) for d in graph.dfcs})


def get_criterion(name: str) -> Callable[..., ChannelScores]:
    """The criterion function called ``name``: ``dfpc``, ``dfpc_mean`` (DFPC's sums divided by each
    DFC's pair count), ``l1`` or ``random``."""
    from .dfpc import dfpc_mean_scores, dfpc_scores
    table = {"dfpc": dfpc_scores, "dfpc_mean": dfpc_mean_scores, "l1": l1_scores, "random": random_scores}
    if name not in table:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(table)} "
                         "or pass a function (model, graph) -> ChannelScores")
    return table[name]


__all__ = ["ChannelScores", "l1_scores", "random_scores", "get_criterion"]

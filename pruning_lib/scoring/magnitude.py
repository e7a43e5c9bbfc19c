"""The two baselines of DFPC's ablations (Narshana et al., ICLR 2023): the L1 norm of the feed-in
filters, summed over A, and seeded random scores. Both are data-free (``data`` is ignored)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph.types import ChannelGraph
from ..layers import PRODUCER, handler_for
from .base import ChannelScores, graph_of, register_criterion


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    m = model.get_submodule(name)
    if getattr(handler_for(m), "role", None) != PRODUCER:
        raise TypeError(f"{name} is a {type(m).__name__}; feed-in/feed-out layers must be Conv2d or Linear")
    return m.weight.detach().to("cpu", torch.float64)


@register_criterion("l1")
@torch.no_grad()
def l1_scores(model: nn.Module, graph: ChannelGraph | None = None, input_shape: tuple = (1, 3, 32, 32),
              data=None) -> ChannelScores:
    """Baseline: the L1 norm of channel k's output filter, summed over the feed-in layers A."""
    graph = graph_of(model, graph, input_shape)
    out = {}
    for dfc in graph.dfcs:
        s = torch.zeros(dfc.channels, dtype=torch.float64)
        for ref in dfc.feed_in:
            w = _weight(model, ref.module).abs().flatten(1).sum(1)      # per output channel
            s += w[ref.indices(range(dfc.channels))]
        out[dfc] = s
    return ChannelScores("l1", graph, out)


@register_criterion("random")
def random_scores(model: nn.Module, graph: ChannelGraph | None = None, input_shape: tuple = (1, 3, 32, 32),
                  seed: int = 0, data=None) -> ChannelScores:
    """Baseline: i.i.d. uniform scores from a seeded generator (the same seed gives the same order)."""
    graph = graph_of(model, graph, input_shape)
    gen = torch.Generator().manual_seed(seed)
    return ChannelScores("random", graph,
                         {d: torch.rand(d.channels, generator=gen, dtype=torch.float64) for d in graph.dfcs})


__all__ = ["l1_scores", "random_scores"]

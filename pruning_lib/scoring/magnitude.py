"""The two baselines of DFPC's ablations (Narshana et al., ICLR 2023): the L1 norm of the feed-in
filters, summed over A, and seeded random scores. Both are data-free (``data`` is ignored)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph.types import HEAD_IN, ChannelGraph
from ..layers import ATTENTION, PRODUCER, handler_for
from .base import ChannelScores, graph_of, register_criterion


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    m = model.get_submodule(name)
    h = handler_for(m)
    role = getattr(h, "role", None)
    if role == ATTENTION:                        # its output channels are the rows of its output projection
        return h.out_weight(m).detach().to("cpu", torch.float64)
    if role != PRODUCER:
        raise TypeError(f"{name} is a {type(m).__name__}; feed-in/feed-out layers must be Conv2d or Linear")
    return m.weight.detach().to("cpu", torch.float64)


def _feed_in_l1(model: nn.Module, ref) -> torch.Tensor:
    """L1 norm per output unit of a feed-in layer: a filter, a Linear row, or a whole attention head
    (its q, k and v rows)."""
    if ref.role == HEAD_IN:
        m = model.get_submodule(ref.module)
        return handler_for(m).head_weights(m)
    return _weight(model, ref.module).abs().flatten(1).sum(1)


@register_criterion("l1")
@torch.no_grad()
def l1_scores(model: nn.Module, graph: ChannelGraph | None = None, input_shape: tuple | None = None,
              data=None) -> ChannelScores:
    """Baseline: the L1 norm of channel k's output filter, summed over the feed-in layers A (for
    an attention head: of its q, k and v rows)."""
    graph = graph_of(model, graph, input_shape)
    out = {}
    for dfc in graph.dfcs:
        s = torch.zeros(dfc.channels, dtype=torch.float64)
        for ref in dfc.feed_in:
            w = _feed_in_l1(model, ref)                                 # per output channel
            s += w[ref.indices(range(dfc.channels))]
        out[dfc] = s
    return ChannelScores("l1", graph, out)


@register_criterion("random")
def random_scores(model: nn.Module, graph: ChannelGraph | None = None, input_shape: tuple | None = None,
                  seed: int = 0, data=None) -> ChannelScores:
    """Baseline: i.i.d. uniform scores from a seeded generator (the same seed gives the same order)."""
    graph = graph_of(model, graph, input_shape)
    gen = torch.Generator().manual_seed(seed)
    return ChannelScores("random", graph,
                         {d: torch.rand(d.channels, generator=gen, dtype=torch.float64) for d in graph.dfcs})


__all__ = ["l1_scores", "random_scores"]

"""Where a criterion's removals fall and what each channel costs: the coupled-channel ablation.

DFPC's headline is that pruning *coupled* channels (the residual streams' DFCs) buys speed. Whether
it does depends on (1) how early a criterion's global order reaches coupled channels, (2) what a
channel of each DFC costs in FLOPs and parameters, and (3) what those FLOPs cost in measured time.
This module answers (1) and (2) exactly, from the traced graph and physical one-channel prunes;
(3) is measured with :func:`pruning_lib.measure.compare_latency` by the ablation script.
Stages are numbered by resolution (1 = the largest feature map), never from layer names.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch import nn

from ..graph.types import DFC, ChannelGraph
from ..layers import is_batchnorm
from ..measure.counts import count_flops, count_parameters
from ..scoring.base import ChannelScores
from ..surgery.prune import prune
from .global_pruning import removal_order


@dataclass(frozen=True)
class DFCCost:
    """What one channel of a DFC costs: the FLOPs (per image) and parameters its removal saves."""
    index: int
    coupled: bool
    stage: int
    channels: int
    flops_per_channel: int
    params_per_channel: int

    @property
    def where(self) -> str:
        """``"stream s2"`` (a coupled DFC) or ``"block s2"`` (inside a block), by stage."""
        return f"{'stream' if self.coupled else 'block'} s{self.stage}"


def stages(graph: ChannelGraph) -> dict[DFC, int]:
    """Each prunable DFC's stage: the rank of its feed-in layers' output resolution, largest first."""
    size = {d: tuple(graph.shapes[d.feed_in[0].module][1][2:]) for d in graph.dfcs if d.prunable}
    ranks = {s: i + 1 for i, s in enumerate(sorted(set(size.values()), key=lambda s: -s[0] * s[-1]))}
    return {d: ranks[s] for d, s in size.items()}


def dfc_costs(model: nn.Module, graph: ChannelGraph, input_shape: tuple | None = None) -> list[DFCCost]:
    """FLOPs and parameters saved by removing one channel of each prunable DFC, measured by physical
    surgery (exact, including BatchNorm and the layers that read the channel); the model is not modified.
    FLOPs at ``input_shape``, by default the graph's own input."""
    input_shape = tuple(input_shape) if input_shape is not None else tuple(graph.input_shape)
    base_flops, base_params = count_flops(model, input_shape), count_parameters(model)
    stage = stages(graph)
    out = []
    for d in graph.dfcs:
        if not d.prunable or d.channels < 2:
            continue
        one = prune(model, graph, {d: [0]})
        out.append(DFCCost(d.index, d.coupled, stage[d], d.channels,
                           base_flops - count_flops(one, input_shape), base_params - count_parameters(one)))
    return out


@dataclass(frozen=True)
class OrderProfile:
    """Where coupled channels come in a criterion's global removal order (DFPC, Algorithm 1)."""
    method: str
    length: int
    first_coupled: int | None          # 1-based position of the first coupled channel, None if none
    head: int                          # how many of the first channels are summarised below
    coupled_in_head: int
    head_by_place: dict[str, int]      # "stream s1" / "block s2" ... -> channels among the first ``head``
    head_flops: int                    # sum of those removals' one-channel FLOPs (first order: a weight
                                       # between two removed channels counts twice, so an upper bound)


def order_profile(scores: ChannelScores, graph: ChannelGraph, costs: list[DFCCost],
                  head_fraction: float = 0.1) -> OrderProfile:
    """Summarise the first ``head_fraction`` of ``scores``' removal order: coupled count, places, FLOPs."""
    if not 0 < head_fraction <= 1:
        raise ValueError(f"head_fraction={head_fraction}: give a fraction in (0, 1]")
    by_index = {c.index: c for c in costs}
    order = [(d, k) for d, k in removal_order(scores, [d for d in graph.dfcs if d.index in by_index])]
    first = next((i + 1 for i, (d, _) in enumerate(order) if d.coupled), None)
    head = max(1, round(head_fraction * len(order)))
    places = Counter(by_index[d.index].where for d, _ in order[:head])
    return OrderProfile(scores.method, len(order), first, head, sum(d.coupled for d, _ in order[:head]),
                        dict(sorted(places.items())), sum(by_index[d.index].flops_per_channel for d, _ in order[:head]))


@dataclass(frozen=True)
class GammaSummary:
    """The BatchNorm scale |gamma| over every BN channel of a model: what a training recipe leaves
    for a data-free criterion. A *dead* channel (|gamma| < 0.01 and beta <= 0) outputs about zero
    after its ReLU, and DFPC's BN factor |gamma| / sqrt(var + eps) ranks it first at no cost."""
    channels: int
    median: float
    below_0_1: float                   # fraction with |gamma| < 0.1
    dead: float                        # fraction with |gamma| < 0.01 and beta <= 0


def gamma_summary(model: nn.Module) -> GammaSummary:
    """Summarise |gamma| over all affine BatchNorm layers of ``model``."""
    import torch
    bns = [m for m in model.modules() if is_batchnorm(m) and m.affine]
    if not bns:
        raise ValueError(f"{type(model).__name__} has no affine BatchNorm layer to summarise")
    g = torch.cat([m.weight.detach().abs().flatten().float().cpu() for m in bns])
    b = torch.cat([m.bias.detach().flatten().float().cpu() for m in bns])
    return GammaSummary(len(g), round(float(g.median()), 4), round(float((g < 0.1).float().mean()), 4),
                        round(float(((g < 0.01) & (b <= 0)).float().mean()), 4))


__all__ = ["DFCCost", "GammaSummary", "OrderProfile", "dfc_costs", "gamma_summary", "order_profile", "stages"]

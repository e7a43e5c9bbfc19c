"""TVSPrune's channel scores: the filters that cannot tell classes apart (Murti et al., ICLR 2023).

A filter's score is the separability of its worst pair of classes, min over c != c' of a distance
between the class-conditional Gaussians N(mu_c, var_c) of its output (default: the Hellinger lower
bound H^2 <= TV, see :mod:`pruning_lib.scoring.distances`). Here the unit of pruning is a DFC channel
(:mod:`pruning_lib.graph`) and pruning is physical (:mod:`pruning_lib.surgery`), not a mask.

Where a DFC channel is observed (its "score site"):

* a DFC with ONE feed-in layer followed by a BatchNorm (every conv1 of a ResNet block): the output
  of that BN, as in the paper; statistics from :func:`pruning_lib.scoring.class_statistics.collect_statistics`;
* a DFC with SEVERAL feed-in layers (a residual stream: the stem, every block's conv2 and the
  projection shortcut write into the same channels), or with no BN after its feed-in layer: the
  stream itself as its readers see it, i.e. the INPUT of every feed-out layer of the DFC (in a CIFAR
  ResNet: relu(residual + shortcut) read by the next blocks' conv1 / shortcut and the classifier).
  A tensor read by several layers (a block's conv1 and its shortcut) is counted once. One score per
  reader (min over class pairs); the channel's score is the MEAN over the readers
  (``stream_reduce``; "min" and "max" are offered). The mean keeps a stream channel when it is
  discriminative at most depths; the output of one producer alone (its BN) would ignore what the
  other producers add, and it is the sum that the network uses.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import sources
from ..graph.discovery import discover
from ..graph.types import DFC, ChannelGraph
from ..sources import DataSource
from .base import ChannelScores, graph_of, register_criterion
from .class_statistics import OutputStatistics, SumAccumulator, filter_scores, observe, observed_pairwise_min

STREAM_REDUCE = ("mean", "min", "max")


def _bn_site(dfc: DFC) -> str | None:
    """The BN whose output scores this DFC (one feed-in layer with a BN right after it), else None."""
    if len(dfc.feed_in) == 1:
        return dfc.bn_after.get(dfc.feed_in[0].module)
    return None


# --------------------------------------------------------------------------- stream statistics

class _ReaderStats:
    """Per-class sums of the spatial mean of a DFC's channels, taken at the input of its readers
    (copied to float64 at once, so later in-place ops cannot alter them); variances divide by n.
    Each reader counts its own samples per class, so a reader called twice per forward (a shared
    layer) weighs both reads against twice the samples; classes without samples are left out of
    the pairs (they have no distribution to compare)."""

    def __init__(self, dfc: DFC, num_classes: int):
        self.dfc = dfc
        self.k = num_classes
        self.readers: dict[str, SumAccumulator] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.seen: list[torch.Tensor] = []          # tensors already read in this batch (identity)

    def hook(self, ref, labels: Callable[[], torch.Tensor]):
        def pre(module, args):
            x = args[0]
            if any(x is t for t in self.seen):
                return None
            self.seen.append(x)
            c = self.dfc.channels
            idx = torch.tensor(ref.indices(range(c)), device=x.device)
            z = x.detach().index_select(1, idx)
            if ref.stride > 1:
                z = z.reshape(len(z), c, ref.stride).mean(2)
            elif z.dim() > 2:
                z = z.flatten(2).mean(2)
            y = labels().to("cpu")
            self.readers.setdefault(ref.module, SumAccumulator(self.k)).add(z.to("cpu", torch.float64), y)
            n = torch.bincount(y, minlength=self.k).to(torch.float64)
            self.counts[ref.module] = self.counts[ref.module] + n if ref.module in self.counts else n
            return None
        return pre

    def scores(self, distance: str, reduce: str) -> torch.Tensor:
        per_reader = []
        for name, acc in self.readers.items():
            mean, var = acc.moments(self.counts[name])
            per_reader.append(observed_pairwise_min(distance, mean, var, self.counts[name],
                                                    f"the samples read by {name}").to(torch.float64))
        s = torch.stack(per_reader)
        return {"mean": s.mean(0), "min": s.min(0).values, "max": s.max(0).values}[reduce]


class _StreamObserver:
    """The :class:`_ReaderStats` of every stream DFC, fed by pre-hooks on their readers during
    :func:`~pruning_lib.scoring.class_statistics.observe`'s pass."""

    def __init__(self, model: nn.Module, dfcs: list[DFC], k: int):
        self.model = model
        self.stats = [_ReaderStats(d, k) for d in dfcs]
        self.y: torch.Tensor | None = None

    def attach(self) -> list:
        return [self.model.get_submodule(ref.module).register_forward_pre_hook(st.hook(ref, lambda: self.y))
                for st in self.stats for ref in st.dfc.feed_out]

    def start(self, y: torch.Tensor) -> None:
        self.y = y
        for st in self.stats:
            st.seen.clear()

    def finish(self, y: torch.Tensor) -> None:
        for st in self.stats:
            st.seen.clear()             # the batch's tensors are not kept alive

    def scores(self, distance: str, reduce: str) -> dict[DFC, torch.Tensor]:
        if not any(st.readers for st in self.stats):
            raise sources.DataSourceError("the data source yielded no samples to score the channels on")
        return {st.dfc: st.scores(distance, reduce) for st in self.stats}


# --------------------------------------------------------------------------- scores

@register_criterion("tvs")
def tvs_scores(model: nn.Module, graph: ChannelGraph | None = None, *, data: DataSource | None = None,
               distance: str = "hellinger_lb", stream_reduce: str = "mean", per_class: int | None = None,
               batch_size: int = 250, input_shape: tuple | None = None,
               num_classes: int | None = None) -> ChannelScores:
    """TVSPrune's score of every channel of every prunable DFC: the min over class pairs of
    ``distance`` between class-conditional Gaussians at the DFC's score site (module docstring).
    ``data``: a DataLoader of (inputs, labels) or a course split (name); ``per_class``: use only that
    many images per class of a split. Lower = less discriminative."""
    if stream_reduce not in STREAM_REDUCE:
        raise ValueError(f"stream_reduce must be one of {STREAM_REDUCE}, got {stream_reduce!r}")
    sources.required(data, "data", "tvs_scores (TVSPrune's scores are class statistics of labelled samples)")
    if graph is None:
        graph = discover(model, sources.input_shape_for(input_shape, data, "tvs_scores"))
    data = sources.per_class_subset(data, per_class)
    k = num_classes or sources.num_classes(data)
    bn_dfcs = {d: _bn_site(d) for d in graph.dfcs if _bn_site(d) is not None}
    stream_dfcs = [d for d in graph.dfcs if d not in bn_dfcs]
    data = sources.resolve(data)
    # One forward pass per batch feeds both kinds of score site: the BN outputs and the stream readers.
    bn_stats = OutputStatistics(model, sorted(set(bn_dfcs.values())), k, "spatial_mean") if bn_dfcs else None
    streams = _StreamObserver(model, stream_dfcs, k) if stream_dfcs else None
    observers = [o for o in (bn_stats, streams) if o is not None]
    device = next(model.parameters()).device
    images = observe(model, data, observers, k=k, batch_size=batch_size, device=device) if observers else None
    out: dict[DFC, torch.Tensor] = {}
    if bn_stats is not None:
        per_bn = filter_scores(bn_stats.result(data, images), distance=distance)
        for d, bn in bn_dfcs.items():
            out[d] = per_bn[bn].detach().to("cpu", torch.float64)
    if streams is not None:
        out.update(streams.scores(distance, stream_reduce))
    return ChannelScores(f"tvs[{distance}]", graph, {d: out[d] for d in graph.dfcs})


def eps_ratios(scores: ChannelScores) -> dict[DFC, torch.Tensor]:
    """Per DFC, s_j / mean(s): the quantity the eps rule compares to eps (max-normalisation cancels).
    A DFC whose scores are all zero gets ratio 0 everywhere (every channel is a candidate)."""
    out = {}
    for d, s in scores.scores.items():
        m = s.mean()
        out[d] = s / m if m > 0 else torch.zeros_like(s)
    return out


__all__ = ["tvs_scores", "eps_ratios", "STREAM_REDUCE"]

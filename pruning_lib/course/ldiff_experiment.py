"""The LDIFF experiment on the course's networks: LDIFF of each layer against the drop of random pruning.

TVSPrune (Murti et al., 2023) reports that LDIFF (:mod:`pruning_lib.scoring.ldiff`) indicates how
well RANDOM pruning of a layer goes. The experiment (:func:`ldiff_experiment`): for every layer that
is alone in its data flow coupling (a NON-coupled DFC: the first conv of a residual block; its
channels feed only the block's second conv), prune a fixed fraction of its channels at random,
physically (:func:`pruning_lib.surgery.prune`), for several seeds, and measure the accuracy drop on a
fixed class-balanced subset of the labelled ``val`` split (not ``test``). Coupled DFCs (the residual
stream shared by several convs) are excluded: pruning one of their channels removes it from several
layers at once, so "one layer" has no meaning there. Then the Spearman rank correlation between
LDIFF and the mean drop across layers, with a two-sided permutation p-value. The result's plot
colours the layers by the stage of the course's ResNets they sit in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import sources
from ..graph.discovery import discover
from ..graph.types import ChannelGraph
from ..measure.accuracy import as_evaluator
from ..scoring.class_statistics import collect_statistics, filter_scores
from ..scoring.ldiff import ldiff, permutation_pvalue, spearman
from ..sources import DataSource
from ..surgery.prune import prune


@dataclass
class LayerSensitivity:
    """One layer of the experiment: its LDIFF and the accuracy drops of random pruning."""
    layer: str                 # the conv whose output channels are pruned
    bn: str                    # the BN after it, whose output gave the filter scores
    dfc: int                   # its (non-coupled) DFC index in the graph
    channels: int
    pruned: int
    ldiff: float
    mean_score: float
    drops: list[float]         # accuracy drop in points, one per seed
    mean_drop: float
    std_drop: float
    scores: list[float] = field(default_factory=list, repr=False)   # the layer's filter scores


@dataclass
class LdiffResult:
    """Per-layer rows and the rank correlation between LDIFF and the random-pruning drop."""
    model: str
    rows: list[LayerSensitivity]
    fraction: float
    seeds: list[int]
    distance: str
    stats_split: str
    stats_per_class: int | None
    eval_split: str
    eval_images: int
    base_accuracy: float
    spearman: float
    p_value: float
    excluded: list[str] = field(default_factory=list)     # coupled DFCs left out, described

    def frame(self):
        """The rows as a pandas DataFrame (drops per seed in one list column)."""
        import pandas as pd
        rows = [{k: v for k, v in asdict(r).items() if k != "scores"} for r in self.rows]
        return pd.DataFrame(rows).set_index("layer")

    def table(self) -> str:
        head = f"{'layer':<22} {'ch':>3} {'cut':>3} {'LDIFF':>6} {'drop':>6} {'sd':>5}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.layer:<22} {r.channels:>3} {r.pruned:>3} {r.ldiff:>6.3f} "
                         f"{r.mean_drop:>6.2f} {r.std_drop:>5.2f}")
        lines.append(f"Spearman rho(LDIFF, drop) = {self.spearman:+.3f} (permutation p = {self.p_value:.3f}, "
                     f"{len(self.rows)} layers)")
        return "\n".join(lines)

    def plot(self, ax=None, annotate: bool = True):
        """Scatter of mean drop (with seed sd) against LDIFF, one point per layer."""
        import matplotlib.pyplot as plt
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.6))
        x = [r.ldiff for r in self.rows]
        y = [r.mean_drop for r in self.rows]
        # stages numbered from 1 at the input, as everywhere in the course (0: a layer outside the stages)
        stage = [int(r.layer.split(".")[1]) + 1 if r.layer.startswith("layers.") else 0 for r in self.rows]
        colours = {s: f"C{i}" for i, s in enumerate(sorted(set(stage)))}
        ax.errorbar(x, y, yerr=[r.std_drop for r in self.rows], fmt="none", ecolor="0.7", zorder=1)
        for s in sorted(set(stage)):
            idx = [i for i, t in enumerate(stage) if t == s]
            ax.scatter([x[i] for i in idx], [y[i] for i in idx], color=colours[s], zorder=2,
                       label=f"stage {s}" if s else "stem")
        if annotate and len(self.rows) <= 12:
            for r in self.rows:
                ax.annotate(r.layer.replace("layers.", "").replace(".conv1", ""), (r.ldiff, r.mean_drop),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("LDIFF (Gini of filter scores)")
        ax.set_ylabel(f"accuracy drop, {self.fraction:.0%} random (points)")
        ax.set_title(f"{self.model}: Spearman {self.spearman:+.2f} (p={self.p_value:.2f})")
        ax.legend(fontsize=7)
        return ax


def single_layer_dfcs(graph: ChannelGraph) -> tuple[list, list[str]]:
    """The prunable DFCs with exactly one feed-in layer (non-coupled), and a description of the
    coupled ones left out."""
    single, excluded = [], []
    for d in graph.dfcs:
        if d.coupled or len(d.feed_in) != 1:
            excluded.append(f"DFC#{d.index} ({d.channels} ch, {len(d.feed_in)} producers: coupled stream)")
        else:
            single.append(d)
    return single, excluded


@torch.no_grad()
def ldiff_experiment(model: nn.Module, model_name: str = "model", fraction: float = 0.5,
                     seeds: Sequence[int] = (0, 1, 2), distance: str = "hellinger_lb",
                     stats_split: DataSource = "dist", stats_per_class: int | None = None,
                     eval_split: DataSource = "val", eval_images: int | None = 1000,
                     input_shape: tuple = (1, 3, 32, 32), layers: Sequence[str] | None = None,
                     batch_size: int = 500, progress: bool = False) -> LdiffResult:
    """Test TVSPrune's LDIFF claim on ``model``: LDIFF of each single-layer DFC (filter scores from
    ``stats_split``) against the accuracy drop of pruning ``fraction`` of that layer's channels at
    random (each seed a fresh random set; physical surgery; evaluated on ``eval_images`` class-balanced
    images of ``eval_split``; a DataLoader or an ``evaluate(model) -> float`` with ``eval_images=None``
    is used as it is). ``stats_split``: any data source. ``layers`` restricts the experiment to those
    feed-in convs. The caller's model is not modified."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    if not seeds:
        raise ValueError("give at least one seed")
    graph = discover(model, input_shape)
    dfcs, excluded = single_layer_dfcs(graph)
    if layers is not None:
        unknown = set(layers) - {d.A[0] for d in dfcs}
        if unknown:
            raise ValueError(f"{sorted(unknown)} are not single-layer (non-coupled) DFC producers; "
                             f"choose from {[d.A[0] for d in dfcs]}")
        dfcs = [d for d in dfcs if d.A[0] in set(layers)]
    if len(dfcs) < 3:
        raise ValueError(f"only {len(dfcs)} single-layer DFCs to compare; a rank correlation needs 3 or more")
    bns = {}
    for d in dfcs:
        a = d.A[0]
        if a not in d.bn_after:
            raise ValueError(f"layer {a} has no BatchNorm after it; LDIFF here scores BN outputs")
        bns[a] = d.bn_after[a]
    stats = collect_statistics(model, stats_split, modules=list(bns.values()), per_class=stats_per_class)
    scores = filter_scores(stats, distance)
    eval_split = sources.resolve(eval_split)
    if sources.is_split(eval_split):
        if eval_images is not None and eval_images < len(eval_split):
            eval_split = eval_split.subset(eval_images, seed=0)
        eval_n = len(eval_split)
    elif eval_images is not None:
        raise ValueError("eval_images subsets a course split; for a DataLoader or an evaluate callable "
                         "pass eval_images=None (and subset the dataset yourself)")
    else:
        eval_n = len(getattr(eval_split, "dataset", ()))
    accuracy, eval_name = as_evaluator(eval_split, batch_size)
    base = accuracy(model)
    it = dfcs
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(dfcs, desc=f"{model_name} layers", leave=False)
    rows = []
    for d in it:
        a = d.A[0]
        k = max(1, int(round(fraction * d.channels)))
        drops = []
        for seed in seeds:
            g = torch.Generator().manual_seed(10_007 * int(seed) + d.index)
            chans = torch.randperm(d.channels, generator=g)[:k].tolist()
            pruned = prune(model, graph, {d: chans})
            drops.append(base - accuracy(pruned))
        s = scores[bns[a]]
        rows.append(LayerSensitivity(a, bns[a], d.index, d.channels, k, ldiff(s), float(s.mean()), drops,
                                     float(np.mean(drops)), float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0,
                                     s.tolist()))
    x, y = [r.ldiff for r in rows], [r.mean_drop for r in rows]
    return LdiffResult(model_name, rows, fraction, list(seeds), distance, stats.split,
                       stats_per_class, eval_name, eval_n, base, spearman(x, y),
                       permutation_pvalue(x, y), excluded)


__all__ = ["LayerSensitivity", "LdiffResult", "single_layer_dfcs", "ldiff_experiment"]

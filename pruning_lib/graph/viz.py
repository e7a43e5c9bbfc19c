"""Pictures and tables of a model's data flow couplings."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Patch, Rectangle
from torch import nn

from ..layers import GROUPED, PRODUCER, handler_for
from .types import ChannelGraph


def dfc_frame(graph: ChannelGraph):
    """The DFCs as a pandas DataFrame (one row per DFC, prunable first)."""
    import pandas as pd
    return pd.DataFrame(graph.rows()).set_index("dfc")


def plot_dfcs(model: nn.Module, graph: ChannelGraph, ax=None, title: str | None = None):
    """Each conv/linear layer in order as a row of two cells, its input channels (left) and output
    channels (right), coloured by the DFC they belong to. Coupled DFCs get strong colours and a
    legend entry; single DFCs alternate pale shades; unprunable channels are hatched grey."""
    layers = [n for n, m in model.named_modules()
              if getattr(handler_for(m), "role", None) in (PRODUCER, GROUPED)]
    every = graph.dfcs + graph.unprunable
    reads = {r.module: d for d in every for r in d.feed_out}
    writes = {r.module: d for d in every for r in d.feed_in}
    strong = plt.get_cmap("tab10").colors
    pale = ("#dde6f0", "#f0e6d8")
    coupled = [d for d in graph.dfcs if d.coupled]
    colour = {id(d): strong[i % len(strong)] for i, d in enumerate(coupled)}
    singles = [d for d in graph.dfcs if not d.coupled]
    colour.update({id(d): pale[i % 2] for i, d in enumerate(singles)})

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.6 + 0.17 * len(layers)))
    for row, name in enumerate(layers):
        y = -row
        for col, d in ((0, reads.get(name)), (1, writes.get(name))):
            prunable = d is not None and d.prunable
            face = colour.get(id(d), "white") if prunable else "white"
            ax.add_patch(Rectangle((col * 1.05, y - 0.4), 1, 0.8, facecolor=face, edgecolor="0.4",
                                   linewidth=0.4, hatch=None if prunable else "////"))
            if prunable and d.coupled:
                ax.text(col * 1.05 + 0.5, y, f"#{d.index}", ha="center", va="center", fontsize=6)
        ax.text(-0.1, y, name, ha="right", va="center", fontsize=6, family="monospace")
    ax.set_xlim(-3.2, 2.2)
    ax.set_ylim(-len(layers) + 0.3, 1.2)
    ax.text(0.5, 0.8, "input ch.", ha="center", fontsize=7)
    ax.text(1.55, 0.8, "output ch.", ha="center", fontsize=7)
    ax.axis("off")
    handles = [Patch(facecolor=colour[id(d)], edgecolor="0.4",
                     label=f"#{d.index}: coupled, {d.channels} ch, |A|={len(d.feed_in)}, |B|={len(d.feed_out)}")
               for d in coupled]
    handles += [Patch(facecolor=pale[0], edgecolor="0.4", label="single DFC (|A| = |B| = 1)"),
                Patch(facecolor="white", edgecolor="0.4", hatch="////", label="unprunable")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.set_title(title or f"{type(model).__name__}: {len(graph.dfcs)} DFCs, {graph.num_coupled} coupled",
                 fontsize=9)
    return ax


__all__ = ["dfc_frame", "plot_dfcs"]

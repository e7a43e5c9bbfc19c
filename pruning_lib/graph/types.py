"""The channel graph's types: DFCs (A, D, B), each layer's share of one, and the graph of a model.

A DFC (A, D, B) is a set of channels shared by the feed-in layers A (whose output channel k flows
in), the dependent per-channel layers D on the way (BatchNorm, depthwise convs) and the feed-out
layers B (whose input channel k is read); it is *coupled* when |A| > 1 or |B| > 1 (DFPC, Narshana
et al., ICLR 2023, section 3). :func:`pruning_lib.graph.discover` finds them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

FEED_IN, DEPENDENT, FEED_OUT = "feed_in", "dependent", "feed_out"
GROUPED_IN = "grouped_in"       # the input side of a grouped conv, pruned by whole groups
PARAM = "parameter"             # a tensor of the model (layer scale, token) broadcast over the channels
HEAD_IN, HEAD_OUT = "head_in", "head_out"   # an attention's heads: their q, k, v rows / output columns


class UntraceableModelError(RuntimeError):
    """torch.fx could not trace the model; the message names the failing code and the way out."""


@dataclass(frozen=True)
class ChannelRef:
    """One layer's share of a DFC: channel k of the DFC is index ``offset + k`` of the layer's
    output (feed-in, dependent) or input (feed-out, grouped-in) channels. ``stride`` > 1 when a
    Linear reads a flattened map: channel k is then the ``stride`` features starting at
    ``(offset + k) * stride``. ``block`` > 1 in a DFC through a grouped conv, whose channel k is a
    whole group: the ``block`` layer channels starting at ``offset + k * block``. ``axis``: the
    tensor axis that holds the channels where the layer meets them (1 for a conv or a Linear on
    (N, C); the last axis for a Linear or LayerNorm over tokens or a channels-last map). For a
    ``PARAM`` ref, ``module`` is the tensor's qualified name and ``axis`` the tensor's own axis
    that is sliced (a per-channel scale of shape (C, 1, 1) multiplied by broadcast: axis 0)."""
    module: str
    role: str
    offset: int = 0
    stride: int = 1
    block: int = 1
    axis: int = 1

    def indices(self, channels: Iterable[int]) -> list[int]:
        """Positions in the layer's dimension that hold the given DFC channels."""
        return [(self.offset + k * self.block + t) * self.stride + s for k in channels
                for t in range(self.block) for s in range(self.stride)]


@dataclass(eq=False)
class DFC:
    """A data flow coupling: feed-in layers A, dependent layers D, feed-out layers B.
    Compared and hashed by identity, so a DFC can key a removal plan."""
    index: int
    channels: int
    feed_in: list[ChannelRef]
    dependent: list[ChannelRef]
    feed_out: list[ChannelRef]
    prunable: bool = True
    reasons: list[str] = field(default_factory=list)
    upstream: dict[str, list[str]] = field(default_factory=dict)   # feed-out b -> feed-in a reaching b
    bn_after: dict[str, str] = field(default_factory=dict)         # feed-in a -> the BN applied to a's output
    # why removing a channel is NOT exact (a LayerNorm over the channels, taken by the opt-in
    # discover(..., inexact_norms=True)); empty for the exact DFCs, the default
    inexact: list[str] = field(default_factory=list)

    @property
    def coupled(self) -> bool:
        return len(self.feed_in) > 1 or len(self.feed_out) > 1

    @property
    def exact(self) -> bool:
        """Whether removing a channel only removes its contributions (no LayerNorm over the channels)."""
        return not self.inexact

    @property
    def params(self) -> list[str]:
        """The model tensors (layer scales, tokens) sliced with the channels, by qualified name."""
        return [r.module for r in self.dependent if r.role == PARAM]

    @property
    def A(self) -> list[str]:
        return [r.module for r in self.feed_in]

    @property
    def D(self) -> list[str]:
        return [r.module for r in self.dependent]

    @property
    def B(self) -> list[str]:
        return [r.module for r in self.feed_out]

    def __repr__(self) -> str:
        state = "coupled" if self.coupled else "single"
        if not self.prunable:
            state = "unprunable: " + "; ".join(self.reasons)
        elif self.inexact:
            state += ", NOT exact: " + "; ".join(self.inexact)
        return (f"DFC#{self.index}({self.channels} ch, {state}, A={_short(self.A)}, "
                f"D={_short(self.D)}, B={_short(self.B)})")


def _short(names: list[str], n: int = 3) -> str:
    return "[" + ", ".join(names[:n]) + (f", ... +{len(names) - n}" if len(names) > n else "") + "]"


@dataclass
class ChannelGraph:
    """Every DFC of a model, and the layer shapes seen while tracing it."""
    dfcs: list[DFC]                 # prunable DFCs
    unprunable: list[DFC]           # channel spaces that must stay whole, with the reasons
    shapes: dict[str, tuple]        # module -> (input shape, output shape) at the example input
    input_shape: tuple
    # prunable by whole groups of a grouped conv (ResNeXt, RegNet): prune() takes them, the scoring
    # criteria (made for one channel per unit) do not see them
    grouped: list[DFC] = field(default_factory=list)
    # feed-out layer -> "sum" or "amax" when it reads channels through a global spatial sum or max
    # (not an average): DFPC's bound then uses the all-ones matrix, not 1/(H*W)
    global_pool: dict[str, str] = field(default_factory=dict)
    # model tensor (qualified name) sliced as a PARAM ref -> its shape when discovered
    params: dict[str, tuple] = field(default_factory=dict)

    @property
    def num_coupled(self) -> int:
        return sum(d.coupled for d in self.dfcs)

    @property
    def num_channels(self) -> int:
        return sum(d.channels for d in self.dfcs)

    def __repr__(self) -> str:
        grouped = f", {len(self.grouped)} DFCs by whole groups" if self.grouped else ""
        return (f"ChannelGraph({len(self.dfcs)} DFCs, {self.num_coupled} coupled, "
                f"{self.num_channels} prunable channels, {len(self.unprunable)} unprunable spaces{grouped})")

    def dfc_of(self, module: str, role: str | None = None) -> list[DFC]:
        """The DFCs in which ``module`` takes part (optionally only in one role)."""
        out = []
        for d in self.dfcs:
            refs = d.feed_in + d.dependent + d.feed_out
            if any(r.module == module and (role is None or r.role == role) for r in refs):
                out.append(d)
        return out

    def rows(self) -> list[dict]:
        """One plain row per DFC (prunable first), for a table."""
        return [{"dfc": d.index, "channels": d.channels, "coupled": d.coupled, "prunable": d.prunable,
                 "|A|": len(d.feed_in), "|D|": len(d.dependent), "|B|": len(d.feed_out),
                 "A": ", ".join(d.A), "B": ", ".join(d.B), "reason": "; ".join(d.reasons + d.inexact)}
                for d in self.dfcs + self.unprunable + self.grouped]

    def table(self, max_names: int = 3) -> str:
        """A plain-text table of the DFCs."""
        head = f"{'DFC':>4} {'ch':>5} {'cpl':>3} {'|A|':>3} {'|D|':>3} {'|B|':>3}  A -> B"
        lines = [head, "-" * len(head)]
        for d in self.dfcs + self.unprunable + self.grouped:
            flag = "yes" if d.coupled else "no"
            tail = f"{_short(d.A, max_names)} -> {_short(d.B, max_names)}"
            if not d.prunable:
                tail += "  [unprunable: " + "; ".join(d.reasons) + "]"
            elif d.inexact:
                tail += "  [NOT exact: " + "; ".join(d.inexact) + "]"
            elif d in self.grouped:
                tail += f"  [by whole groups of {max(r.block for r in d.feed_in + d.dependent + d.feed_out)} channels]"
            lines.append(f"{d.index:>4} {d.channels:>5} {flag:>3} {len(d.feed_in):>3} "
                         f"{len(d.dependent):>3} {len(d.feed_out):>3}  {tail}")
        return "\n".join(lines)


__all__ = ["FEED_IN", "DEPENDENT", "FEED_OUT", "GROUPED_IN", "PARAM", "HEAD_IN", "HEAD_OUT", "UntraceableModelError", "ChannelRef", "DFC",
           "ChannelGraph"]

"""Union-find of atomic channel spaces, and the channel layout of a traced tensor (for propagation)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .types import ChannelRef

class _Spaces:
    """Union-find over atomic channel spaces, with the layers that share each one."""

    def __init__(self):
        self.parent: list[int] = []
        self.length: list[int] = []
        self.reasons: dict[int, list[str]] = {}
        self.refs: dict[int, list[tuple[ChannelRef, frozenset]]] = {}
        self.bn_after: dict[int, dict[str, str]] = {}
        self.inexact: dict[int, list[str]] = {}       # why pruning the space is not exact (opt-in)
        self.unit: list[int] = []                    # base channels per DFC channel (whole groups)

    def new(self, length: int, reason: str | None = None) -> int:
        i = len(self.parent)
        self.parent.append(i)
        self.length.append(length)
        self.unit.append(1)
        if reason:
            self.mark(i, reason)
        return i

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> int:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return ri
        if self.length[ri] != self.length[rj]:       # cannot happen for well-formed graphs
            self.mark(ri, f"joins channel spaces of different sizes ({self.length[ri]} vs {self.length[rj]})")
        self.parent[rj] = ri
        self.unit[ri] = math.lcm(self.unit[ri], self.unit[rj])
        for d in (self.reasons, self.refs, self.bn_after, self.inexact):
            if rj in d:
                src = d.pop(rj)
                if isinstance(src, dict):
                    d.setdefault(ri, {}).update(src)
                else:
                    d.setdefault(ri, []).extend(src)
        return ri

    def mark(self, i: int, reason: str) -> None:
        r = self.reasons.setdefault(self.find(i), [])
        if reason not in r:
            r.append(reason)

    def note_inexact(self, i: int, why: str) -> None:
        r = self.inexact.setdefault(self.find(i), [])
        if why not in r:
            r.append(why)

    def add_ref(self, i: int, ref: ChannelRef, origins: frozenset = frozenset(), width: Fraction = Fraction(1)) -> None:
        """``width``: the layer's channels per base channel of the space (a grouped conv changes it)."""
        self.refs.setdefault(self.find(i), []).append((ref, origins, width))
        self.coarsen(i, width.denominator)

    def coarsen(self, i: int, factor: int) -> None:
        """Make every DFC channel of the space a multiple of ``factor`` base channels."""
        r = self.find(i)
        self.unit[r] = math.lcm(self.unit[r], factor)


@dataclass(frozen=True)
class _Seg:
    atom: int
    length: int                 # in base channels of the atom
    origins: frozenset          # feed-in layers whose output reaches this segment channel-wise
    width: Fraction = Fraction(1)   # tensor channels per base channel (o/i after a grouped conv)

    @property
    def channels(self) -> int:
        return int(self.length * self.width)


@dataclass(frozen=True)
class _Desc:
    """The channel axis of a traced tensor: segments side by side; each channel spans ``stride``
    consecutive positions (1, or H*W after a flatten). ``dim``: the axis that holds the channels
    (1 for (N, C, ...) maps; the last one for tokens (N, L, C) and channels-last maps)."""
    segs: tuple
    stride: int = 1
    pooled: str = ""        # "sum" / "amax": a global spatial sum or max made these (N, C) values
    dim: int = 1

    @property
    def channels(self) -> int:
        return sum(s.channels for s in self.segs)

    def layout(self) -> list:
        return [(s.length, s.width) for s in self.segs] + [self.stride, self.dim]



__all__ = ["_Spaces", "_Seg", "_Desc"]    # internal to the graph pass

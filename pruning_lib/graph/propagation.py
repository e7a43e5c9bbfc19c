"""Propagation of channel spaces over a traced graph: the pass that turns a torch.fx graph into DFCs.

Each feed-in layer creates an atomic channel space; the rules of :mod:`pruning_lib.graph.rules`
pass spaces through, unify them (union-find, :mod:`pruning_lib.graph.spaces`) or refuse them with
the reason; the spaces left at the end are the DFCs (DFPC, Narshana et al., ICLR 2023, section 3).
"""
from __future__ import annotations

import operator

import torch
import torch.fx

from .rules import ModuleRules, OpRules, TupleRules
from .spaces import _Desc, _Seg, _Spaces
from .types import DEPENDENT, FEED_IN, FEED_OUT, GROUPED_IN, DFC, ChannelGraph, ChannelRef


class Propagation(ModuleRules, OpRules, TupleRules):
    """One pass over the traced nodes, assigning each tensor's channel dimension to spaces (the
    rules for each kind of node live in :mod:`pruning_lib.graph.rules`)."""

    def __init__(self, gm: torch.fx.GraphModule, frozen: dict[str, str] | None = None):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.frozen = frozen or {}                     # module -> why its channels stay whole
        self.items: dict[torch.fx.Node, tuple] = {}    # node giving several tensors -> (each one's layout, or None and the reason)
        self.sp = _Spaces()
        self.desc: dict[torch.fx.Node, _Desc | None] = {}
        self.shapes: dict[str, tuple] = {}
        self.module_atoms: dict[str, tuple] = {}       # module -> its atoms as feed-in (re-used modules)
        self.consumed: dict[str, _Desc] = {}           # module -> the input it read first
        self.pooled_reads: dict[str, str] = {}         # feed-out module -> "sum"/"amax" global pool it reads

    # -- helpers
    @staticmethod
    def _shape(node) -> tuple | None:
        tm = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
        return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None

    def _fresh(self, node, reason: str | None = None, origin: str | None = None) -> _Desc | None:
        shape = self._shape(node)
        if shape is None or len(shape) < 2:
            return None
        atom = self.sp.new(shape[1], reason)
        return _Desc((_Seg(atom, shape[1], frozenset([origin] if origin else [])),))

    def _mark(self, d: _Desc | None, reason: str) -> None:
        if d is not None:
            for s in d.segs:
                self.sp.mark(s.atom, reason)

    def _ref(self, d: _Desc, module: str, role: str) -> None:
        off = 0
        for s in d.segs:
            self.sp.add_ref(s.atom, ChannelRef(module, role, off, d.stride), s.origins, s.width)
            off += s.channels

    @staticmethod
    def _arg0(node):
        """The first (input) argument, positional or given by keyword."""
        if node.args:
            return node.args[0]
        return next((node.kwargs[k] for k in ("input", "tensors", "self") if k in node.kwargs), None)

    @staticmethod
    def _dim_arg(node, pos: int, default):
        return node.args[pos] if len(node.args) > pos else node.kwargs.get("dim", default)

    def _inputs(self, node) -> list[_Desc]:
        out = []
        for a in node.all_input_nodes:
            d = self.desc.get(a)
            if d is not None:
                out.append(d)
        return out

    def _unsupported(self, node, what: str) -> _Desc | None:
        return self._refuse(node, f"{what} at node {node.name!r} is not understood by the channel graph")

    def _refuse(self, node, reason: str) -> _Desc | None:
        """The node's input and output channels stay whole, for ``reason``."""
        for d in self._inputs(node):
            self._mark(d, reason)
        return self._fresh(node, reason)

    def _unify(self, descs: list[_Desc], node) -> _Desc | None:
        """Element-wise op of same-shape tensors: channel k of every input is channel k of the output."""
        first = descs[0]
        for d in descs[1:]:
            if d.layout() != first.layout():
                return self._unsupported(node, "element-wise op on differently concatenated channels")
        segs = []
        for i, s in enumerate(first.segs):
            atom, origins = s.atom, set(s.origins)
            for d in descs[1:]:
                self.sp.union(atom, d.segs[i].atom)
                origins |= d.segs[i].origins
            segs.append(_Seg(atom, s.length, frozenset(origins), s.width))
        return _Desc(tuple(segs), first.stride)

    # -- the pass
    def run(self, input_shape: tuple) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.desc[node] = self._fresh(node, "network input channels")
            elif node.op == "get_attr":
                self.desc[node] = self._fresh(node, f"parameter or buffer {node.target!r} used in the graph")
            elif node.op in ("call_module", "call_function", "call_method"):
                handler = {"call_module": self._module, "call_function": self._function,
                           "call_method": self._method}[node.op]
                if node.op == "call_function" and node.target is operator.getitem and node.args[0] in self.items:
                    d = self._item(node)
                elif any(a in self.items for a in node.all_input_nodes):
                    d = self._whole_tuple(node)
                elif self._aggregate(node):
                    d = self._multi(node)
                else:
                    d = handler(node)
                self.desc[node] = self._checked(node, d)
            elif node.op == "output":
                for a in node.all_input_nodes:
                    self._mark(self.desc.get(a), "network output")
                    self._mark(self.items.get(a, (None,))[0], "network output")
        return self._collect(input_shape)

    # -- ops giving several tensors (a tuple): their results are followed through getitem
    def _checked(self, node, d: _Desc | None) -> _Desc | None:
        """A safety net: the channel layout must cover the output's channel dimension exactly
        (catches an op wrongly treated as channel-wise, e.g. padding along channels)."""
        shape = self._shape(node)
        if d is None or shape is None or len(shape) < 2 or d.channels * d.stride == shape[1]:
            return d
        reason = (f"node {node.name!r} changes the channel dimension "
                  f"({d.channels * d.stride} -> {shape[1]}) in a way the channel graph does not follow")
        self._mark(d, reason)
        return self._fresh(node, reason)

    # -- results
    def _collect(self, input_shape: tuple) -> ChannelGraph:
        groups: dict[int, list] = {}
        for atom in range(len(self.sp.parent)):
            groups.setdefault(self.sp.find(atom), [])
        order: dict[str, int] = {}                      # modules in the order the graph calls them
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                order.setdefault(node.target, len(order))
        refs_sorted = lambda rs: sorted(rs, key=lambda r: (order.get(r.module, len(order)), r.offset))
        dfcs, grouped = [], set()
        for root in groups:
            unit = self.sp.unit[root]
            refs = [(ChannelRef(r.module, r.role, r.offset, r.stride, int(w * unit)), o)
                    for r, o, w in self.sp.refs.get(root, [])]
            if not refs:
                continue
            feed_in = refs_sorted(_dedup(r for r, _ in refs if r.role == FEED_IN))
            dependent = refs_sorted(_dedup(r for r, _ in refs if r.role in (DEPENDENT, GROUPED_IN)))
            feed_out = refs_sorted(_dedup(r for r, _ in refs if r.role == FEED_OUT))
            reasons = list(self.sp.reasons.get(root, []))
            if not feed_in and not reasons:
                reasons.append("no layer produces these channels")
            if self.sp.length[root] % unit and not reasons:
                reasons.append(f"its {self.sp.length[root]} channels are not whole groups of {unit} "
                               "(grouped convolutions)")
            a_names = {r.module for r in feed_in}
            upstream: dict[str, list[str]] = {}
            for r, origins in refs:
                if r.role == FEED_OUT:
                    upstream.setdefault(r.module, set()).update(origins & a_names)
            d = DFC(0, self.sp.length[root] // unit, feed_in, dependent, feed_out, not reasons, reasons,
                    {b: sorted(a) for b, a in upstream.items()}, dict(self.sp.bn_after.get(root, {})))
            dfcs.append(d)
            if not reasons and any(r.block != 1 or r.role == GROUPED_IN for r, _ in refs):
                grouped.add(d)
        prunable = [d for d in dfcs if d.prunable and d not in grouped]
        unprunable = [d for d in dfcs if not d.prunable]
        by_groups = [d for d in dfcs if d in grouped]
        for i, d in enumerate(prunable + unprunable + by_groups):
            d.index = i
        return ChannelGraph(prunable, unprunable, self.shapes, input_shape, by_groups, dict(self.pooled_reads))


def _dedup(refs) -> list[ChannelRef]:
    seen, out = set(), []
    for r in refs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


__all__ = ["Propagation"]

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
from ..layers import handler_for
from .types import (DEPENDENT, FEED_IN, FEED_OUT, GROUPED_IN, HEAD_IN, HEAD_OUT, PARAM, DFC, ChannelGraph,
                    ChannelRef)


class Propagation(ModuleRules, OpRules, TupleRules):
    """One pass over the traced nodes, assigning each tensor's channel dimension to spaces (the
    rules for each kind of node live in :mod:`pruning_lib.graph.rules`)."""

    def __init__(self, gm: torch.fx.GraphModule, frozen: dict[str, str] | None = None,
                 inexact_norms: bool = False):
        self.gm = gm
        self.inexact_norms = inexact_norms            # LayerNorm modules over channels: dependent, noted inexact
        self.params_of: dict[torch.fx.Node, tuple[str, int]] = {}   # node -> (model tensor, its ndim)
        self.param_ok: dict[torch.fx.Node, set] = {}  # model tensor node -> the users that follow it
        self.param_atoms: dict[str, list[int]] = {}   # model tensor -> the spaces it is sliced with
        self.modules = dict(gm.named_modules())
        self.frozen = frozen or {}                     # module -> why its channels stay whole
        self.item_dims: dict[torch.fx.Node, int] = {}
        self.first_only: set = set()
        self.head_atoms: dict[torch.fx.Node, int] = {}  # attention node -> the space of its heads                  # several-tensor nodes whose result 0 alone is followed  # node giving several tensors -> their channel axis
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

    def _fresh(self, node, reason: str | None = None, origin: str | None = None, dim: int = 1) -> _Desc | None:
        """A new space on axis ``dim`` of the node's output (refused when ``reason`` is given)."""
        shape = self._shape(node)
        if shape is None or len(shape) < 2:
            return None
        dim = dim if 0 < dim < len(shape) else 1
        atom = self.sp.new(shape[dim], reason)
        return _Desc((_Seg(atom, shape[dim], frozenset([origin] if origin else [])),), 1, "", dim)

    def _mark(self, d: _Desc | None, reason: str) -> None:
        if d is not None:
            for s in d.segs:
                self.sp.mark(s.atom, reason)

    def _ref(self, d: _Desc, module: str, role: str) -> None:
        off = 0
        for s in d.segs:
            self.sp.add_ref(s.atom, ChannelRef(module, role, off, d.stride, axis=d.dim), s.origins, s.width)
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

    def _refuse(self, node, reason: str, dim: int | None = None) -> _Desc | None:
        """The node's input and output channels stay whole, for ``reason`` (the output's space on
        axis ``dim``; by default where the first input's channels lie when the rank is kept)."""
        ins = self._inputs(node)
        for d in ins:
            self._mark(d, reason)
        if dim is None:
            src, out = self._shape(self._arg0(node)), self._shape(node)
            dim = ins[0].dim if ins and src is not None and out is not None and len(src) == len(out) else 1
        return self._fresh(node, reason, dim=dim)

    def _unify(self, descs: list[_Desc], node, dim: int | None = None) -> _Desc | None:
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
        return _Desc(tuple(segs), first.stride, "", first.dim if dim is None else dim)

    # -- the pass
    def run(self, input_shape: tuple) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.desc[node] = self._fresh(node, "network input channels")
            elif node.op == "get_attr":        # followed by its users: sliced where it is broadcast per channel
                shape = self._shape(node)
                self.desc[node] = None
                if shape is not None:
                    self.params_of[node] = (node.target, len(shape))
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
        if d is None or shape is None or len(shape) < 2 or (d.dim < len(shape)
                                                           and d.channels * d.stride == shape[d.dim]):
            return d
        got = shape[d.dim] if d.dim < len(shape) else "none"
        reason = (f"node {node.name!r} changes the channel dimension "
                  f"({d.channels * d.stride} -> {got}) in a way the channel graph does not follow")
        self._mark(d, reason)
        return self._fresh(node, reason)

    # -- results
    def _check_params(self) -> dict[str, tuple]:
        """A model tensor is sliced only when every use of it is followed (a broadcast per channel),
        it lies in one space, and it is a tensor of its own (not a layer's weight, not tied)."""
        names: dict[int, list[str]] = {}
        root = self.gm
        for pname, t in list(root.named_parameters(remove_duplicate=False)) + list(root.named_buffers(remove_duplicate=False)):
            names.setdefault(id(t), []).append(pname)
        shapes = {}
        for pname, atoms in self.param_atoms.items():
            why = []
            nodes = [n for n, (p, _) in self.params_of.items() if p == pname]
            for n in nodes:
                stray = [u.name for u in n.users if u not in self.param_ok.get(n, set())]
                if stray:
                    why.append(f"{pname} is also read at node {stray[0]!r}, where the channel graph does not follow it")
            if len({self.sp.find(a) for a in atoms}) > 1:
                why.append(f"{pname} is broadcast over two different channel spaces")
            owner_name, _, attr = pname.rpartition(".")
            owner = root.get_submodule(owner_name)
            if handler_for(owner) is not None:
                why.append(f"{pname} belongs to layer {owner_name} ({type(owner).__name__}) and is read directly")
            t = getattr(owner, attr)
            if len(names.get(id(t), [])) > 1:
                why.append(f"{pname} is tied to {[n for n in names[id(t)] if n != pname][0]} (one shared tensor)")
            for a in atoms:
                for w in why:
                    self.sp.mark(a, w)
            shapes[pname] = tuple(t.shape)
        return shapes

    def _collect(self, input_shape: tuple) -> ChannelGraph:
        params = self._check_params()
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
            refs = [(ChannelRef(r.module, r.role, r.offset, r.stride, int(w * unit), r.axis), o)
                    for r, o, w in self.sp.refs.get(root, [])]
            if not refs:
                continue
            feed_in = refs_sorted(_dedup(r for r, _ in refs if r.role in (FEED_IN, HEAD_IN)))
            dependent = refs_sorted(_dedup(r for r, _ in refs if r.role in (DEPENDENT, GROUPED_IN, PARAM)))
            feed_out = refs_sorted(_dedup(r for r, _ in refs if r.role in (FEED_OUT, HEAD_OUT)))
            reasons = list(self.sp.reasons.get(root, []))
            if not feed_in and not reasons:
                reasons.append("no layer produces these channels")
            if self.sp.length[root] % unit and not reasons:
                reasons.append(f"its {self.sp.length[root]} channels are not whole groups of {unit} "
                               "(grouped convolutions)")
            a_names = {r.module for r in feed_in}
            upstream: dict[str, list[str]] = {}
            for r, origins in refs:
                if r.role in (FEED_OUT, HEAD_OUT):
                    upstream.setdefault(r.module, set()).update(origins & a_names)
            d = DFC(0, self.sp.length[root] // unit, feed_in, dependent, feed_out, not reasons, reasons,
                    {b: sorted(a) for b, a in upstream.items()}, dict(self.sp.bn_after.get(root, {})),
                    list(self.sp.inexact.get(root, [])))
            dfcs.append(d)
            if not reasons and any(r.block != 1 or r.role == GROUPED_IN for r, _ in refs):
                grouped.add(d)
        prunable = [d for d in dfcs if d.prunable and d not in grouped]
        unprunable = [d for d in dfcs if not d.prunable]
        by_groups = [d for d in dfcs if d in grouped]
        for i, d in enumerate(prunable + unprunable + by_groups):
            d.index = i
        return ChannelGraph(prunable, unprunable, self.shapes, input_shape, by_groups, dict(self.pooled_reads),
                            {p: params[p] for d in prunable + by_groups for p in d.params})


def _dedup(refs) -> list[ChannelRef]:
    seen, out = set(), []
    for r in refs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


__all__ = ["Propagation"]

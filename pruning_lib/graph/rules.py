"""The propagation rules of the channel graph, by kind of traced node: module calls (through the
layer handlers of :mod:`pruning_lib.layers`), functions and methods (through the op tables
of :mod:`pruning_lib.graph.ops`), and ops that return several tensors."""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import CHANNELWISE, GROUPED, PRODUCER, LayerHandler, handler_for, is_weighted
from .ops import (ACTIVATIONS, CHANNELWISE_FUNCS, CHANNELWISE_METHODS, ELEMENTWISE, ELEMENTWISE_METHODS,
                  MULTI_OUTPUT, NON_TENSOR, SPATIAL_2D, SPATIAL_2D_FUNCS)
from .spaces import _Desc, _Seg
from .types import DEPENDENT, FEED_IN, FEED_OUT, GROUPED_IN, ChannelRef


class ModuleRules:
    """Module calls: producers create channel spaces, dependent layers pass them on, grouped convs
    coarsen them to whole groups, flatten scales them by the spatial size."""

    def _module(self, node) -> _Desc | None:
        """A module call: its handler's role (producer, channel-wise, grouped) says what it does to
        the channels; activations, pools and flatten pass them on; anything else is refused."""
        name, m = node.target, self.modules[node.target]
        ins = self._inputs(node)
        x = ins[0] if ins else None
        shape_in = self._shape(self._arg0(node))
        self.shapes.setdefault(name, (shape_in, self._shape(node)))
        if name in self.frozen:
            return self._refuse(node, self.frozen[name])
        h = handler_for(m)
        role = h.role if h is not None else None
        if len(ins) > 1 or (x is None and is_weighted(m)):
            return self._unsupported(node, f"module {name} ({type(m).__name__}) with several inputs")
        if isinstance(m, SPATIAL_2D) and (shape_in is None or len(shape_in) != 4):
            return self._refuse(node, f"module {name} ({type(m).__name__}) on a {len(shape_in or ())}-D "
                                      "tensor pools or pads across dim 1, the channels")
        if role == GROUPED:
            return self._grouped(node, name, m, x)
        if role == PRODUCER:
            if h.spatial and x.stride != 1:
                return self._unsupported(node, f"convolution {name} on a flattened tensor")
            if not h.spatial and (shape_in is None or len(shape_in) != 2):
                return self._unsupported(node, f"linear layer {name} on a {len(shape_in or ())}-D tensor")
            return self._producer(node, name, x)
        if role == CHANNELWISE:
            return self._channelwise(node, name, h, x)
        if isinstance(m, nn.Flatten):
            return self._flatten(node, x, m.start_dim, m.end_dim)
        if isinstance(m, ACTIVATIONS) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return self._global_max(node, x) if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) else x
        return self._unsupported(node, f"module {name} ({type(m).__name__})")

    def _channelwise(self, node, name: str, h: LayerHandler, x: _Desc | None) -> _Desc | None:
        """A dependent layer (BatchNorm, depthwise conv): channel k in is channel k out."""
        if x is None:
            return None
        if h.spatial and x.stride != 1:
            return self._unsupported(node, f"convolution {name} on a flattened tensor")
        if name in self.consumed:          # called again: its entries are shared by both inputs
            self._share(name, x)
        else:
            self.consumed[name] = x
            self._ref(x, name, DEPENDENT)
        if h.kind == "batchnorm":
            src = self._arg0(node)
            if (len(x.segs) == 1 and src.op == "call_module"
                    and src.target in self.module_atoms):           # BN right after a feed-in layer
                self.sp.bn_after.setdefault(self.sp.find(x.segs[0].atom), {})[src.target] = name
        return x

    def _grouped(self, node, name: str, m: nn.Conv2d, x: _Desc) -> _Desc | None:
        """A grouped conv: group j reads input channels [j*i, (j+1)*i) and writes output channels
        [j*o, (j+1)*o), so input and output share one DFC whose channel is a whole group (its
        units are made whole groups; o/i scales the layout)."""
        i, o = m.in_channels // m.groups, m.out_channels // m.groups
        starts = [sum(s.channels for s in x.segs[:j]) for j in range(len(x.segs) + 1)]
        what = f"grouped convolution {name} (groups={m.groups})"
        if x.stride != 1:
            return self._refuse(node, f"{what} on a flattened tensor")
        if any(c % i for c in starts):
            return self._refuse(node, f"{what}: its groups of {i} channels straddle concatenated inputs")
        if name in self.consumed:
            self._mark(self.consumed[name], f"{what} is called twice")
            return self._refuse(node, f"{what} is called twice")
        self.consumed[name] = x
        for s in x.segs:
            self.sp.coarsen(s.atom, (s.width / i).denominator)
        self._ref(x, name, GROUPED_IN)
        out = _Desc(tuple(_Seg(s.atom, s.length, s.origins, s.width * Fraction(o, i)) for s in x.segs))
        self._ref(out, name, DEPENDENT)
        return out

    def _share(self, name: str, x: _Desc) -> None:
        """A module applied a second time reads x with the same weight slices as its first input."""
        prev = self.consumed[name]
        if prev.layout() != x.layout():
            self._mark(x, f"{name} is called on differently laid out inputs")
            self._mark(prev, f"{name} is called on differently laid out inputs")
        else:
            for a, b in zip(prev.segs, x.segs):
                self.sp.union(a.atom, b.atom)

    def _global_max(self, node, x: _Desc | None) -> _Desc | None:
        """A max pool whose output has one position per channel: a global max (DFPC bounds it by the
        window sum, not the average)."""
        shape = self._shape(node)
        if x is not None and shape is not None and len(shape) > 2 and all(s == 1 for s in shape[2:]):
            return _Desc(x.segs, x.stride, "amax")
        return x

    def _producer(self, node, name: str, x: _Desc) -> _Desc | None:
        """A feed-in/feed-out layer (conv, linear): reads x's channels, creates new ones."""
        if x.pooled:
            self.pooled_reads[name] = x.pooled
        if name in self.consumed:            # a module called twice: both inputs share its weight slices
            self._share(name, x)
        else:
            self.consumed[name] = x
            self._ref(x, name, FEED_OUT)
        out = self._fresh(node, origin=name)
        if name in self.module_atoms:
            self.sp.union(self.module_atoms[name][0], out.segs[0].atom)
        else:
            self.module_atoms[name] = (out.segs[0].atom,)
            self.sp.add_ref(out.segs[0].atom, ChannelRef(name, FEED_IN))
        return out

    def _flatten(self, node, x: _Desc | None, start: int, end: int) -> _Desc | None:
        shape_in = self._shape(self._arg0(node))
        if x is None or shape_in is None:
            return None
        end = end % len(shape_in)
        if start % len(shape_in) != 1 or end != len(shape_in) - 1:
            return self._unsupported(node, f"flatten(start_dim={start}, end_dim={end})")
        spatial = 1
        for s in shape_in[2:]:
            spatial *= s
        return _Desc(x.segs, x.stride * spatial, x.pooled)


class OpRules:
    """Function and method calls: channel-wise ops pass spaces through, element-wise ops unify them,
    concatenation lays them side by side, spatial reductions keep them."""

    def _function(self, node) -> _Desc | None:
        f = node.target
        ins = self._inputs(node)
        if not ins:
            if self._shape(node) is None or f in NON_TENSOR:
                return None
            return self._fresh(node, f"tensor created by {getattr(f, '__name__', f)} inside forward()")
        if f in NON_TENSOR:
            return None if self._shape(node) is None else self._unsupported(node, f"indexing {f.__name__}")
        if f in CHANNELWISE_FUNCS:
            if len(ins) != 1:
                return self._unsupported(node, f"{f.__name__} with tensor arguments")
            d = self._spatial_only(node, f, ins[0])
            return self._global_max(node, d) if f in (F.max_pool2d, F.adaptive_max_pool2d) else d
        if f is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self._flatten(node, ins[0], start, end)
        if f in ELEMENTWISE:
            return self._elementwise(node, f.__name__)
        if f is torch.cat:
            return self._cat(node)
        if f is torch.mean or f is torch.sum or f is torch.amax:
            return self._reduce(node, ins[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"),
                                f.__name__)
        return self._unsupported(node, f"function {getattr(f, '__name__', f)}")

    def _method(self, node) -> _Desc | None:
        name = node.target
        ins = self._inputs(node)
        if not ins:
            return None
        if name in ("size", "dim", "numel") or self._shape(node) is None:
            return None
        if name in CHANNELWISE_METHODS:
            return ins[0] if len(ins) == 1 else self._unsupported(node, f".{name}() with tensor arguments")
        if name in ELEMENTWISE_METHODS:
            return self._elementwise(node, name)
        if name == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self._flatten(node, ins[0], start, end)
        if name in ("view", "reshape"):
            shape_in, shape_out = self._shape(node.args[0]), self._shape(node)
            if shape_in and shape_out and len(shape_out) == 2 and shape_out[0] == shape_in[0] and len(shape_in) >= 2:
                return self._flatten(node, ins[0], 1, -1)                  # (N, C, H, W) -> (N, C*H*W)
            if shape_in == shape_out:
                return ins[0]
            return self._unsupported(node, f".{name}{tuple(shape_out or ())}")
        if name in ("mean", "sum", "amax"):
            return self._reduce(node, ins[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"), name)
        return self._unsupported(node, f"method .{name}()")

    def _spatial_only(self, node, f, x: _Desc) -> _Desc | None:
        """A channel-wise function, unless it pads the batch or channel axis or is a 2-D pool of a
        tensor that is not 4-D (then it works across channels)."""
        shape_in = self._shape(self._arg0(node))
        ndim = len(shape_in or ())
        if f in SPATIAL_2D_FUNCS and ndim != 4:
            return self._refuse(node, f"{f.__name__} of a {ndim}-D tensor at node {node.name!r} pools "
                                      "across dim 1, the channels")
        if f is F.pad:
            pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", ())
            across = [pad[i] for i in range(2 * (ndim - 2), len(pad))] if ndim >= 2 else list(pad)
            if any(not isinstance(p, int) or p != 0 for p in across):
                return self._refuse(node, f"padding along the batch or channel axis at node {node.name!r} "
                                          f"(pad={tuple(pad)} of a {ndim}-D tensor)")
        return x

    def _reduce(self, node, x: _Desc, dims, kind: str = "mean") -> _Desc | None:
        shape_in = self._shape(self._arg0(node))
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        norm = {d % len(shape_in) for d in dims} if shape_in and dims else set()
        if x.stride == 1 and norm and 0 not in norm and 1 not in norm:
            if kind != "mean" and norm == set(range(2, len(shape_in))):     # a global sum or max
                return _Desc(x.segs, x.stride, kind)
            return x                                                        # a spatial reduction
        return self._unsupported(node, f"reduction over dims {dims}")

    def _elementwise(self, node, what: str) -> _Desc | None:
        out_shape = self._shape(node)
        full, other_tensors = [], []
        for a in node.all_input_nodes:
            d, s = self.desc.get(a), self._shape(a)
            if s is None:
                continue                                              # not a tensor
            if d is not None and len(s) == len(out_shape) >= 2 and s[1] == out_shape[1]:
                full.append(d)                                        # same channels as the output
            elif len(s) == 0 or all(v == 1 for v in s):
                continue                                              # a scalar tensor
            elif len(s) == len(out_shape) >= 2 and s[1] == 1:
                continue                                              # broadcast over channels: (N,1,..)
            else:
                other_tensors.append(a)
        if other_tensors or not full:
            return self._unsupported(node, f"element-wise {what} with a broadcast tensor")
        return self._unify(full, node)

    def _cat(self, node) -> _Desc | None:
        tensors = self._arg0(node)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)):
            return self._unsupported(node, "torch.cat of a tensor sequence it cannot see")
        out_shape = self._shape(node)
        descs = [self.desc.get(t) for t in tensors]
        if any(d is None for d in descs):
            return self._unsupported(node, "torch.cat of untracked tensors")
        if dim % len(out_shape) == 1:
            if any(d.stride != 1 for d in descs):
                return self._unsupported(node, "torch.cat of flattened tensors")
            return _Desc(tuple(s for d in descs for s in d.segs))
        return self._unify(descs, node)                           # cat along batch/space: channels align


class TupleRules:
    """Ops returning several tensors (chunk, split, max(dim), ...): followed through their getitems
    along a spatial dim, refused along the batch or channel axis."""

    @staticmethod
    def _aggregate(node) -> bool:
        tm = node.meta.get("tensor_meta")
        return isinstance(tm, (tuple, list, dict)) and not hasattr(tm, "shape")

    def _multi(self, node) -> None:
        """An op returning several tensors: each keeps the input's channels when it works along
        a spatial dim; otherwise the input's channels and every result are refused."""
        t = node.target
        name = t if node.op == "call_method" else getattr(t, "__name__", str(t))
        known = node.op != "call_module" and name in MULTI_OUTPUT and (
            node.op == "call_method" or getattr(torch, name, None) is t)
        label = f"module {t}" if node.op == "call_module" else f"{name}()"
        ins, shape_in = self._inputs(node), self._shape(self._arg0(node))
        if known and len(ins) == 1 and ins[0].stride == 1 and shape_in and len(shape_in) >= 2:
            pos, default = MULTI_OUTPUT[name]
            dim = self._dim_arg(node, pos, default)
            if isinstance(dim, int) and dim % len(shape_in) >= 2:
                self.items[node] = (ins[0], None)
                return None
            label = f"{name}(dim={dim})"
        reason = (f"{label} at node {node.name!r} returns several tensors split or reduced along the "
                  "batch or channel axis (or not understood); the channel graph does not follow them")
        for d in ins:
            self._mark(d, reason)
        self.items[node] = (None, reason)
        return None

    def _item(self, node) -> _Desc | None:
        """One result of a several-tensor op, taken by getitem."""
        d, reason = self.items[node.args[0]]
        if self._aggregate(node):
            self.items[node] = (d, reason)
            return None
        if d is None:
            return self._fresh(node, reason)
        shape = self._shape(node)
        return d if shape is not None and len(shape) >= 2 else None

    def _whole_tuple(self, node) -> _Desc | None:
        """A several-tensor result used whole (not through getitem): not followed."""
        reason = f"node {node.name!r} uses a tuple of tensors whole"
        for a in node.all_input_nodes:
            self._mark(self.items.get(a, (None,))[0], reason)
        if self._aggregate(node):
            self.items[node] = (None, reason)
            return None
        return self._unsupported(node, f"{getattr(node.target, '__name__', node.target)} of a tuple of tensors")


__all__ = ["ModuleRules", "OpRules", "TupleRules"]

"""The propagation rules of the channel graph, by kind of traced node: module calls (through the
layer handlers of :mod:`pruning_lib.layers`), functions and methods (through the op tables
of :mod:`pruning_lib.graph.ops`), and ops that return several tensors."""
from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ATTENTION, CHANNELWISE, GROUPED, NORMALISING, PRODUCER, LayerHandler, handler_for, is_weighted
from .ops import (ACTIVATIONS, CHANNELWISE_FUNCS, CHANNELWISE_METHODS, ELEMENTWISE, ELEMENTWISE_METHODS,
                  MULTI_OUTPUT, NON_TENSOR, NORM_FUNCS, PARAM_VIEWS, PERMUTE_METHODS, PERMUTES, POINTWISE,
                  POINTWISE_FUNCS, SPATIAL_2D, SPATIAL_2D_FUNCS)
from .spaces import _Desc, _Seg, _Spaces
from .types import DEPENDENT, FEED_IN, FEED_OUT, GROUPED_IN, HEAD_IN, HEAD_OUT, PARAM, ChannelRef

LAYERNORM_REASON = ("normalised together by a LayerNorm (its mean and variance mix the channels): no removal "
                    "is exact")
LAYERNORM_OPT_IN = "; discover(..., inexact_norms=True) prunes them anyway"


class RuleHost:
    """What the rules read and call on the pass that runs them; :class:`~pruning_lib.graph.propagation.Propagation`
    defines every one (the mixins below hold rules only, no state of their own)."""
    modules: dict[str, nn.Module]                       # the traced model's modules by name
    frozen: dict[str, str]                              # module -> why its channels stay whole
    inexact_norms: bool
    sp: _Spaces
    desc: dict[torch.fx.Node, _Desc | None]             # node -> its output's channel spaces
    shapes: dict[str, tuple]
    items: dict[torch.fx.Node, tuple]
    item_dims: dict[torch.fx.Node, int]
    first_only: set
    head_atoms: dict[torch.fx.Node, int]
    module_atoms: dict[str, tuple]
    consumed: dict[str, _Desc]
    pooled_reads: dict[str, str]
    params_of: dict[torch.fx.Node, tuple[str, int]]
    param_ok: dict[torch.fx.Node, set]
    param_atoms: dict[str, list[int]]

    @staticmethod
    def _shape(node) -> tuple | None: raise NotImplementedError

    @staticmethod
    def _arg0(node): raise NotImplementedError

    @staticmethod
    def _dim_arg(node, pos: int, default): raise NotImplementedError

    def _fresh(self, node, reason: str | None = None, origin: str | None = None,
               dim: int = 1) -> _Desc | None: raise NotImplementedError

    def _mark(self, d: _Desc | None, reason: str) -> None: raise NotImplementedError

    def _ref(self, d: _Desc, module: str, role: str) -> None: raise NotImplementedError

    def _inputs(self, node) -> list[_Desc]: raise NotImplementedError

    def _unsupported(self, node, what: str) -> _Desc | None: raise NotImplementedError

    def _refuse(self, node, reason: str, dim: int | None = None) -> _Desc | None: raise NotImplementedError

    def _unify(self, descs: list[_Desc], node, dim: int | None = None) -> _Desc | None: raise NotImplementedError


class ModuleRules(RuleHost):
    """Module calls: producers create channel spaces, dependent layers pass them on, grouped convs
    coarsen them to whole groups, flatten scales them by the spatial size."""

    def _module(self, node) -> _Desc | None:
        """A module call: its handler's role (producer, channel-wise, grouped, normalising) says what
        it does to the channels; activations, pools and flatten pass them on; anything else is refused."""
        name, m = node.target, self.modules[node.target]
        ins = self._inputs(node)
        x = ins[0] if ins else None
        shape_in = self._shape(self._arg0(node))
        self.shapes.setdefault(name, (shape_in, self._shape(node)))
        if name in self.frozen:
            return self._refuse(node, self.frozen[name])
        h = handler_for(m)
        role = h.role if h is not None else None
        if role == PRODUCER and not h.spatial and len(ins) <= 1 and len(node.all_input_nodes) == 1:
            return self._linear(node, name, x, shape_in)
        if len(ins) > 1 or (x is None and is_weighted(m)):
            return self._unsupported(node, f"module {name} ({type(m).__name__}) with several inputs")
        if role == NORMALISING:
            return self._norm(node, name, x, shape_in, len(m.normalized_shape))
        if role == ATTENTION:
            out = self._attention(node, name, ins, shape_in)
            why = h.unsupported(m)
            return out if out is not None else self._refuse(node, f"attention {name} ({type(m).__name__}): {why}" if why
                                                            else f"attention {name} ({type(m).__name__}) on a tensor "
                                                                 "whose channels do not lie on its last axis")
        if x is not None and x.dim != 1 and not (isinstance(m, (POINTWISE, nn.Flatten)) or (
                isinstance(m, nn.PReLU) and m.num_parameters == 1)):
            return self._refuse(node, f"module {name} ({type(m).__name__}) works on axis 1 or the spatial axes, "
                                      f"but the channels lie on axis {x.dim} (channels-last) at node {node.name!r}")
        if isinstance(m, SPATIAL_2D) and (shape_in is None or len(shape_in) != 4):
            return self._refuse(node, f"module {name} ({type(m).__name__}) on a {len(shape_in or ())}-D "
                                      "tensor pools or pads across dim 1, the channels")
        if role == GROUPED:
            return self._grouped(node, name, m, x)
        if role == PRODUCER:
            if h.spatial and x.stride != 1:
                return self._unsupported(node, f"convolution {name} on a flattened tensor")
            return self._producer(node, name, x)
        if role == CHANNELWISE:
            return self._channelwise(node, name, h, x)
        if isinstance(m, nn.Flatten):
            return self._flatten(node, x, m.start_dim, m.end_dim)
        if isinstance(m, ACTIVATIONS) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return self._global_max(node, x) if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) else x
        return self._unsupported(node, f"module {name} ({type(m).__name__})")

    def _linear(self, node, name: str, x: _Desc | None, shape_in) -> _Desc | None:
        """A Linear acts on the last axis: (N, C) features, (N, L, C) tokens, (N, H, W, C) maps. Its
        input features are the followed space when the channels lie on the last axis; otherwise
        (or when it reads a constant, e.g. a coordinates table) they are a space of their own,
        refused with the reason, and its output features are a new space as usual."""
        last = len(shape_in) - 1 if shape_in else None
        if x is not None and last is not None and last >= 1 and x.dim == last and (x.stride == 1 or last == 1):
            return self._producer(node, name, x, last)
        if x is not None:
            why = (f"Linear {name} reads the last axis ({last}) of a tensor whose channels the graph follows "
                   f"on axis {x.dim} at node {node.name!r}") if last is not None and last >= 1 \
                else f"linear layer {name} on a {len(shape_in or ())}-D tensor at node {node.name!r}"
            self._mark(x, why + " is not understood by the channel graph")
            why += " is not understood by the channel graph"
        else:
            why = f"Linear {name} reads a tensor that is not derived from the network input (a constant table)"
        if last is None or last < 1:
            return self._fresh(node, why)
        n_in = shape_in[-1]
        x_in = _Desc((_Seg(self.sp.new(n_in, why), n_in, frozenset()),), 1, "", last)
        if name in self.consumed:                 # called before: those weight columns are read here too
            x_in = self.consumed[name]
            self._mark(x_in, why)
        return self._producer(node, name, x_in, last)

    def _norm(self, node, name: str, x: _Desc | None, shape_in, n_axes: int) -> _Desc | None:
        """A LayerNorm over the last ``n_axes`` axes: channel-wise when the channels lie elsewhere;
        over the channels it is refused (its mean and variance mix them), or, with the opt-in,
        a dependent layer whose removals are noted as not exact."""
        if x is None or shape_in is None:
            return None if x is None else self._fresh(node, f"LayerNorm {name} on an unknown shape", dim=x.dim)
        if x.dim < len(shape_in) - n_axes:
            return x                                          # normalises per channel: channel-wise
        if not self.inexact_norms or n_axes != 1 or x.stride != 1:
            reason = f"{LAYERNORM_REASON} (LayerNorm {name}){LAYERNORM_OPT_IN if n_axes == 1 else ''}"
            self._mark(x, reason)
            return self._fresh(node, reason, dim=x.dim)
        return self._dependent_norm(node, name, x)

    def _dependent_norm(self, node, name: str, x: _Desc) -> _Desc:
        if name in self.consumed:
            self._share(name, x)
        else:
            self.consumed[name] = x
            self._ref(x, name, DEPENDENT)
        for s in x.segs:
            self.sp.note_inexact(s.atom, f"LayerNorm {name} normalises these channels together: removing "
                                         "some changes how the others are normalised")
        return x

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

    def _producer(self, node, name: str, x: _Desc, dim: int = 1) -> _Desc | None:
        """A feed-in/feed-out layer (conv, linear): reads x's channels, creates new ones (on axis
        ``dim`` of its output: 1 for a conv, the last for a Linear)."""
        if x.pooled:
            self.pooled_reads[name] = x.pooled
        if name in self.consumed:            # a module called twice: both inputs share its weight slices
            self._share(name, x)
        else:
            self.consumed[name] = x
            self._ref(x, name, FEED_OUT)
        out = self._fresh(node, origin=name, dim=dim)
        if out is None:
            return None
        if name in self.module_atoms:
            self.sp.union(self.module_atoms[name][0], out.segs[0].atom)
        else:
            self.module_atoms[name] = (out.segs[0].atom,)
            self.sp.add_ref(out.segs[0].atom, ChannelRef(name, FEED_IN, axis=dim))
        return out

    def _flatten(self, node, x: _Desc | None, start: int, end: int) -> _Desc | None:
        shape_in = self._shape(self._arg0(node))
        if x is None or shape_in is None:
            return None
        end = end % len(shape_in)
        if x.dim == 1 and start % len(shape_in) == 1 and end == len(shape_in) - 1:
            spatial = 1
            for s in shape_in[2:]:
                spatial *= s
            return _Desc(x.segs, x.stride * spatial, x.pooled)
        return self._reshape(node, x, f"flatten(start_dim={start}, end_dim={end})")

    def _reshape(self, node, x: _Desc, what: str) -> _Desc | None:
        """A reshape that keeps the channel axis whole: it maps to the output axis of the same size
        with the same number of elements before it (row-major order then keeps channel k at index
        k), e.g. (N, C, H, W) -> (N, C, H*W) or (B, H, W, C) -> (B, G, P, C)."""
        shape_in, shape_out = self._shape(self._arg0(node)), self._shape(node)
        if shape_in is None or shape_out is None:
            return self._unsupported(node, what)
        if tuple(shape_in) == tuple(shape_out):
            return x
        if x.stride == 1 and x.dim < len(shape_in):
            before = math.prod(shape_in[:x.dim])
            for j in range(len(shape_out)):
                if math.prod(shape_out[:j]) == before and shape_out[j] == shape_in[x.dim]:
                    return _Desc(x.segs, 1, x.pooled if j == x.dim else "", j)
        return self._unsupported(node, what)

    def _permute(self, node, x: _Desc | None, order) -> _Desc | None:
        """permute / transpose: the channel axis moves to where ``order`` puts it."""
        shape_in = self._shape(self._arg0(node))
        if x is None or shape_in is None:
            return None
        n = len(shape_in)
        try:
            order = [int(d) % n for d in order]
        except (TypeError, ValueError):
            return self._unsupported(node, f"permutation {order!r}")
        if x.stride != 1 and order.index(x.dim) != x.dim:
            return self._unsupported(node, "moving the axis of a flattened tensor")
        return _Desc(x.segs, x.stride, x.pooled, order.index(x.dim))

    def _permute_order(self, node, method: bool):
        """The full permutation of a permute/transpose/swapaxes node (function or method form)."""
        shape_in = self._shape(self._arg0(node))
        n = len(shape_in or ())
        target = node.target if method else getattr(node.target, "__name__", "")
        args = list(node.args[1:])
        if target == "permute":
            dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
            return list(dims or node.kwargs.get("dims", ()))
        a = args[0] if args else node.kwargs.get("dim0", node.kwargs.get("axis0"))
        b = args[1] if len(args) > 1 else node.kwargs.get("dim1", node.kwargs.get("axis1"))
        order = list(range(n))
        try:
            order[a % n], order[b % n] = order[b % n], order[a % n]
        except TypeError:
            return None
        return order


class OpRules(RuleHost):
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
        if f in POINTWISE_FUNCS:
            if len(ins) != 1:
                return self._unsupported(node, f"{f.__name__} with tensor arguments")
            return ins[0]
        if f in CHANNELWISE_FUNCS:
            if len(ins) != 1:
                return self._unsupported(node, f"{f.__name__} with tensor arguments")
            if ins[0].dim != 1:
                return self._refuse(node, f"{f.__name__} works along the spatial axes of an (N, C, H, W) map, "
                                          f"but the channels lie on axis {ins[0].dim} at node {node.name!r}")
            d = self._spatial_only(node, f, ins[0])
            return self._global_max(node, d) if f in (F.max_pool2d, F.adaptive_max_pool2d) else d
        if f in PERMUTES:
            order = self._permute_order(node, method=False)
            return self._permute(node, ins[0], order) if order is not None else \
                self._unsupported(node, f"{f.__name__} with these arguments")
        if f is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self._flatten(node, ins[0], start, end)
        if f is torch.reshape:
            return self._view(node, ins[0], "reshape")
        if f in ELEMENTWISE:
            return self._elementwise(node, f.__name__)
        if f is torch.cat:
            return self._cat(node)
        if f is torch.mean or f is torch.sum or f is torch.amax:
            return self._reduce(node, ins[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"),
                                f.__name__)
        if f in NORM_FUNCS:
            return self._norm_function(node, f, ins[0])
        return self._unsupported(node, f"function {getattr(f, '__name__', f)}")

    def _norm_function(self, node, f, x: _Desc) -> _Desc | None:
        """F.layer_norm (a LayerNorm traced through, e.g. torchvision's LayerNorm2d) or F.group_norm:
        refused when it normalises over the channel axis (always, even with the opt-in: its
        parameters are read directly, not through a module surgery could shrink)."""
        shape_in = self._shape(self._arg0(node))
        if f is F.layer_norm and shape_in is not None:
            ns = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape", ())
            n_axes = 1 if isinstance(ns, int) else len(ns)
            if x.dim < len(shape_in) - n_axes:
                return x
            reason = f"{LAYERNORM_REASON} (layer_norm at node {node.name!r})"
            return self._refuse(node, reason, dim=x.dim)
        return self._unsupported(node, f"function {getattr(f, '__name__', f)}")

    def _view(self, node, x: _Desc, name: str) -> _Desc | None:
        shape_in, shape_out = self._shape(self._arg0(node)), self._shape(node)
        if (x.dim == 1 and shape_in and shape_out and len(shape_out) == 2 and len(shape_in) > 2
                and shape_out[0] == shape_in[0] and shape_out[1] == math.prod(shape_in[1:])):
            return self._flatten(node, x, 1, -1)                  # (N, C, H, W) -> (N, C*H*W)
        return self._reshape(node, x, f".{name}{tuple(shape_out or ())}")

    def _method(self, node) -> _Desc | None:
        name = node.target
        ins = self._inputs(node)
        if not ins:
            if name in PARAM_VIEWS and node.args and node.args[0] in self.params_of:
                self.params_of[node] = self.params_of[node.args[0]]      # still that model tensor
                self.param_ok.setdefault(node.args[0], set()).add(node)
            return None
        if name in ("size", "dim", "numel") or self._shape(node) is None:
            return None
        if name in CHANNELWISE_METHODS:
            return ins[0] if len(ins) == 1 else self._unsupported(node, f".{name}() with tensor arguments")
        if name in ELEMENTWISE_METHODS:
            return self._elementwise(node, name)
        if name in PERMUTE_METHODS:
            order = self._permute_order(node, method=True)
            return self._permute(node, ins[0], order) if order is not None else \
                self._unsupported(node, f".{name}() with these arguments")
        if name == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self._flatten(node, ins[0], start, end)
        if name in ("view", "reshape"):
            return self._view(node, ins[0], name)
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
        if x.stride == 1 and norm and 0 not in norm and x.dim not in norm:
            if x.dim == 1 and kind != "mean" and norm == set(range(2, len(shape_in))):   # a global sum or max
                return _Desc(x.segs, x.stride, kind)
            keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
            dim = x.dim if keep else x.dim - sum(d < x.dim for d in norm)
            return _Desc(x.segs, x.stride, "", dim) if dim != x.dim else x          # a spatial reduction
        return self._unsupported(node, f"reduction over dims {dims}")

    def _elementwise(self, node, what: str) -> _Desc | None:
        """Channel k of the output reads channel k of every operand that spans the channel axis;
        an operand broadcast along it (size 1: a gate (N, 1, H, W), a scalar) leaves the channels
        alone; a model tensor spanning it (a layer scale (C, 1, 1), a positional embedding
        (1, L, C)) is sliced with them (a PARAM ref). Anything else is refused."""
        out_shape = self._shape(node)
        if out_shape is None:
            return None
        n = len(out_shape)
        full, axes = [], set()
        for a in node.all_input_nodes:
            d, s = self.desc.get(a), self._shape(a)
            if d is None or s is None:
                continue
            ax = d.dim + n - len(s)
            if s[d.dim] == out_shape[ax]:
                full.append(d)
                axes.add(ax)
        if len(axes) != 1:
            if not full:
                return self._unsupported(node, f"element-wise {what} with a broadcast tensor")
            return self._unsupported(node, f"element-wise {what} of tensors whose channels lie on different axes")
        c = axes.pop()
        params = []
        for a in node.all_input_nodes:
            d, s = self.desc.get(a), self._shape(a)
            if s is None or any(d is f for f in full):
                continue                                              # not a tensor, or already counted
            j = c - (n - len(s))
            if j < 0 or s[j] == 1:
                if a in self.params_of:
                    self.param_ok.setdefault(a, set()).add(node)      # broadcast: not sliced, not touched
                continue                                              # broadcast along the channels
            if a in self.params_of and full[0].stride == 1:
                params.append((a, j))
                continue
            return self._unsupported(node, f"element-wise {what} with a broadcast tensor")
        out = self._unify(full, node, dim=c)
        if out is not None:
            for a, j in params:
                self._param_ref(node, a, j, out)
        return out

    def _param_ref(self, node, a, axis: int, d: _Desc) -> None:
        """Model tensor ``a`` spans the channel axis of ``d`` on its own axis ``axis`` (right-aligned
        broadcasting; ``expand`` only adds leading axes): it is sliced with the channels."""
        pname, ndim = self.params_of[a]
        axis = axis - (len(self._shape(a)) - ndim)
        if axis < 0:
            self._mark(d, f"{pname} is broadcast to span the channels at node {node.name!r}")
            return
        self.param_ok.setdefault(a, set()).add(node)
        off = 0
        for s in d.segs:
            self.sp.add_ref(s.atom, ChannelRef(pname, PARAM, off, 1, 1, axis), frozenset(), s.width)
            self.param_atoms.setdefault(pname, []).append(s.atom)
            off += s.channels

    def _cat(self, node) -> _Desc | None:
        tensors = self._arg0(node)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)):
            return self._unsupported(node, "torch.cat of a tensor sequence it cannot see")
        out_shape = self._shape(node)
        descs = [self.desc.get(t) for t in tensors]
        known = [d for d in descs if d is not None]
        if not known:
            return self._unsupported(node, "torch.cat of untracked tensors")
        c = known[0].dim
        if any(d.dim != c for d in known) or any(d.dim + len(out_shape) - len(self._shape(t)) != c
                                                 for t, d in zip(tensors, descs) if d is not None):
            return self._unsupported(node, "torch.cat of tensors whose channels lie on different axes")
        if dim % len(out_shape) == c:
            if any(d is None for d in descs):
                return self._unsupported(node, "torch.cat of untracked tensors")
            if any(d.stride != 1 for d in descs):
                return self._unsupported(node, "torch.cat of flattened tensors")
            return _Desc(tuple(s for d in descs for s in d.segs), 1, "", c)
        params = [t for t, d in zip(tensors, descs) if d is None]
        if any(t not in self.params_of for t in params) or (params and known[0].stride != 1):
            return self._unsupported(node, "torch.cat of untracked tensors")
        out = self._unify(known, node, dim=c)                 # cat along batch/space: channels align
        if out is not None:
            for t in params:                                  # a class token (1, 1, C) joined to the tokens
                self._param_ref(node, t, c, out)
        return out


class TupleRules(RuleHost):
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
            keeps = name in ("chunk", "split", "tensor_split", "sort", "topk")     # results keep every axis
            c = ins[0].dim
            if isinstance(dim, int) and dim % len(shape_in) not in (0, c) and (keeps or dim % len(shape_in) > c):
                self.items[node] = (ins[0], None)
                return None
            label = f"{name}(dim={dim})"
        reason = (f"{label} at node {node.name!r} returns several tensors split or reduced along the "
                  "batch or channel axis (or not understood); the channel graph does not follow them")
        if node.op == "call_module" and getattr(handler_for(self.modules[t]), "role", None) == ATTENTION:
            out = self._attention(node, t, ins, shape_in)
            if out is not None:
                self.items[node] = (out, None)
                self.first_only.add(node)
                return None
        if node.op == "call_module" and isinstance(self.modules[t], nn.MultiheadAttention):
            reason = (f"nn.MultiheadAttention {t} reads and writes these channels through its packed "
                      "in_proj / out_proj weights (attention heads are not a pruning unit here)")
            shape_q = self._shape(self._arg0(node))
            self.item_dims[node] = len(shape_q) - 1 if shape_q else 1      # its output: like the query
        for d in ins:
            self._mark(d, reason)
        self.items[node] = (None, reason)
        return None

    def _attention(self, node, name: str, ins: list, shape_in) -> _Desc | None:
        """Self-attention with heads as a unit (an ATTENTION handler): query, key and value are one
        tensor whose channels lie on its last axis; the module reads them (feed-out), writes a new
        space (feed-in), and its heads are a DFC of their own (q, k, v rows -> output columns).
        None (then refused) for anything else, e.g. cross-attention or masks per head."""
        m, h = self.modules[name], handler_for(self.modules[name])
        args = list(node.args[:3]) + [node.kwargs.get(k) for k in ("query", "key", "value")[len(node.args):]]
        args = [a for a in args if a is not None]
        masks = [a for a in list(node.args[3:]) + list(node.kwargs.values()) if isinstance(a, torch.fx.Node)]
        if (name in self.frozen or h.unsupported(m) or len(ins) != 1 or masks or len(set(args)) != 1
                or not shape_in or ins[0].dim != len(shape_in) - 1 or ins[0].stride != 1 or name in self.consumed):
            return None
        last = len(shape_in) - 1
        x = ins[0]
        self.consumed[name] = x
        self._ref(x, name, FEED_OUT)
        out_atom = self.sp.new(h.sizes(m)[1])
        self.module_atoms[name] = (out_atom,)
        self.sp.add_ref(out_atom, ChannelRef(name, FEED_IN, axis=last))
        heads = self.sp.new(h.heads(m))
        self.head_atoms[node] = heads
        self.sp.add_ref(heads, ChannelRef(name, HEAD_IN, axis=last), frozenset([name]))
        self.sp.add_ref(heads, ChannelRef(name, HEAD_OUT, axis=last), frozenset([name]))
        self.shapes.setdefault(name, (shape_in, self._shape(node)))
        return _Desc((_Seg(out_atom, h.sizes(m)[1], frozenset([name])),), 1, "", last)

    def _item(self, node) -> _Desc | None:
        """One result of a several-tensor op, taken by getitem."""
        d, reason = self.items[node.args[0]]
        if node.args[0] in self.first_only and node.args[1] != 0 and self._shape(node) is not None:
            why = f"the attention weights of {node.args[0].target} (not followed)"
            if node.users:                       # averaged over the heads: removing one changes them
                self.sp.mark(self.head_atoms[node.args[0]], f"the attention weights of {node.args[0].target} "
                                                            "(averaged over its heads) are used")
            return self._fresh(node, why)
        if self._aggregate(node):
            self.items[node] = (d, reason)
            return None
        if d is None:
            return self._fresh(node, reason, dim=self.item_dims.get(node.args[0], 1))
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


__all__ = ["RuleHost", "ModuleRules", "OpRules", "TupleRules"]

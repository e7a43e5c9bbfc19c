"""Discovery of data flow couplings (DFCs) from a model's traced graph (DFPC, Narshana et al. 2023).

A DFC (A, D, B) is a set of channels shared by the feed-in layers A (whose output channel k flows
in), the dependent per-channel layers D on the way (BatchNorm, depthwise convs) and the feed-out
layers B (whose input channel k is read). Between A and B every operation acts channel by channel
(activations, pooling, residual additions, identity shortcuts), so channel k can only be removed
from all of them at once. A DFC is *coupled* when |A| > 1 or |B| > 1.

How: the model is traced with ``torch.fx`` and its shapes propagated from an example input (on
the ``meta`` device: shapes without arithmetic). Each
feed-in layer creates an atomic channel space; channel-wise operations pass spaces through,
additions unify them (union-find), concatenations along channels lay them side by side (offsets
into the reader), flatten scales them by the spatial size (a Linear reads C*H*W features).
Operations the graph does not understand make the spaces they touch unprunable, with the reason;
so does any operation whose output channel count disagrees with the layout followed so far.
Ops returning several tensors (``chunk``, ``split``, ``unbind``, ``max(dim)``, ``sort``, ``topk``,
function or method form) are followed through their getitems when they work along a spatial dim
and refused along the batch or channel axis (a max over channels mixes them); padding along
channels and 2-D pools of 3-D tensors (which pool across channels) are refused too. Layers named
in ``leaf_modules``, parametrised ones (weight_norm, spectral_norm), ones with tied weights and ones
whose parameters the graph also reads directly keep their channels whole.
A grouped (non-depthwise) convolution reads input group j only into output group j, so its input
and output channels are one space pruned by whole groups: such DFCs, whose channel is a block of
``ChannelRef.block`` layer channels, are listed apart in ``ChannelGraph.grouped`` (prune() takes
them; the scoring criteria, written for one channel per unit, see only ``ChannelGraph.dfcs``).
"""
from __future__ import annotations

import builtins
import math
import operator
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata

FEED_IN, DEPENDENT, FEED_OUT = "feed_in", "dependent", "feed_out"
GROUPED_IN = "grouped_in"       # the input side of a grouped conv, pruned by whole groups


class UntraceableModelError(RuntimeError):
    """torch.fx could not trace the model; the message names the failing code and the way out."""


@dataclass(frozen=True)
class ChannelRef:
    """One layer's share of a DFC: channel k of the DFC is index ``offset + k`` of the layer's
    output (feed-in, dependent) or input (feed-out, grouped-in) channels. ``stride`` > 1 when a
    Linear reads a flattened map: channel k is then the ``stride`` features starting at
    ``(offset + k) * stride``. ``block`` > 1 in a DFC through a grouped conv, whose channel k is a
    whole group: the ``block`` layer channels starting at ``offset + k * block``."""
    module: str
    role: str
    offset: int = 0
    stride: int = 1
    block: int = 1

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

    @property
    def coupled(self) -> bool:
        return len(self.feed_in) > 1 or len(self.feed_out) > 1

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
                 "A": ", ".join(d.A), "B": ", ".join(d.B), "reason": "; ".join(d.reasons)}
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
            elif d in self.grouped:
                tail += f"  [by whole groups of {max(r.block for r in d.feed_in + d.dependent + d.feed_out)} channels]"
            lines.append(f"{d.index:>4} {d.channels:>5} {flag:>3} {len(d.feed_in):>3} "
                         f"{len(d.dependent):>3} {len(d.feed_out):>3}  {tail}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- union-find of spaces

class _Spaces:
    """Union-find over atomic channel spaces, with the layers that share each one."""

    def __init__(self):
        self.parent: list[int] = []
        self.length: list[int] = []
        self.reasons: dict[int, list[str]] = {}
        self.refs: dict[int, list[tuple[ChannelRef, frozenset]]] = {}
        self.bn_after: dict[int, dict[str, str]] = {}
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
        for d in (self.reasons, self.refs, self.bn_after):
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
    """The channel dimension (dim 1) of a traced tensor: segments side by side; each channel spans
    ``stride`` consecutive positions (1, or H*W after a flatten)."""
    segs: tuple
    stride: int = 1

    @property
    def channels(self) -> int:
        return sum(s.channels for s in self.segs)

    def layout(self) -> list:
        return [(s.length, s.width) for s in self.segs] + [self.stride]


# --------------------------------------------------------------------------- operation tables

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
                nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.MaxPool2d, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d)
_CHANNELWISE_FUNCS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish,
                      F.hardsigmoid, F.hardtanh, F.softplus, F.dropout, F.dropout2d, F.max_pool2d,
                      F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate,
                      torch.relu, torch.relu_, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
                      torch.clone, torch.nn.functional.pad}
try:    # torchvision's stochastic depth scales whole samples (N, 1, 1, 1): channel-wise
    from torchvision.ops import stochastic_depth as _stochastic_depth
    _CHANNELWISE_FUNCS.add(_stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is a dependency, but discovery does not need it
    pass
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clone", "contiguous",
                        "detach", "float", "to", "clamp", "clamp_", "clamp_min", "clamp_min_"}
_ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                operator.isub, operator.imul, torch.add, torch.sub, torch.mul, torch.div}
_ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_NON_TENSOR = {builtins.getattr, operator.getitem, builtins.len}
# 2-D spatial ops: on a 3-D tensor (N, C, L) PyTorch reads dim 1 as a spatial axis (an unbatched
# (C, H, W) input), so they pool or pad across channels there.
_SPATIAL_2D = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.ZeroPad2d)
_SPATIAL_2D_FUNCS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
# Ops returning several tensors, function or method form: name -> (position of ``dim`` counting the
# input, its default). Along a spatial dim every result keeps the input's channels; along the batch
# or channel axis they split or mix channels (max over channels), which the graph refuses.
_MULTI_OUTPUT = {"chunk": (2, 0), "split": (2, 0), "tensor_split": (2, 0), "unbind": (1, 0),
                 "max": (1, None), "min": (1, None), "sort": (1, -1), "topk": (2, -1),
                 "kthvalue": (2, -1), "median": (1, -1), "mode": (1, -1)}


def _is_depthwise(m: nn.Conv2d) -> bool:
    """Channel k in -> channel k out. (A depthwise conv pruned to one channel has groups = 1 and is
    then read as an ordinary 1 -> 1 conv, a DFC of its own: the two cannot be told apart. Either
    way that channel stays, since a DFC's last channel is never removed.)"""
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


# --------------------------------------------------------------------------- tracing

class _LeafTracer(torch.fx.Tracer):
    def __init__(self, leaves: tuple):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaves or (self.leaves and isinstance(m, tuple(x for x in self.leaves
                                                                          if isinstance(x, type)))):
            return True
        return super().is_leaf_module(m, qualname)


def _user_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}, in {f.name}: `{(f.line or '').strip()}`)"


def trace(model: nn.Module, leaf_modules: Iterable = ()) -> torch.fx.GraphModule:
    """``torch.fx`` trace of ``model``; a clear error when Python control flow defeats tracing."""
    tracer = _LeafTracer(tuple(leaf_modules))
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise UntraceableModelError(
            f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}{_user_frame(e)}. "
            "Usually a forward() branches or loops on tensor values or shapes. Make that code "
            "independent of tensor values, or pass the submodule that contains it in "
            "leaf_modules=[...] (its channels are then kept whole, marked unprunable).") from e
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


def discover(model: nn.Module, input_shape: tuple = (1, 3, 32, 32), leaf_modules: Iterable = ()) -> ChannelGraph:
    """Every DFC of ``model``, found on its ``torch.fx`` graph at an input of ``input_shape``.

    The model is not modified (its train/eval modes are restored). ``leaf_modules``: submodule
    names or types to keep opaque (for parts torch.fx cannot trace); their channels stay whole,
    as do those of parametrised layers and of layers sharing (tying) a Parameter.
    """
    leaf_modules = tuple(leaf_modules)
    gm = trace(model, leaf_modules)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        p = next(model.parameters(), None)
        x = torch.zeros(input_shape, dtype=p.dtype if p is not None else torch.float32,
                        device=p.device if p is not None else "cpu")
        _propagate_shapes(gm, x)
    except Exception as e:
        what = str(e) if isinstance(e, _ShapeError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"running {type(model).__name__} on an input of shape {tuple(input_shape)} "
                         f"failed {what}. Pass the input_shape the model expects (N, C, H, W), "
                         "e.g. (1, 3, 32, 32) for CIFAR models.") from e
    finally:
        for m, t in modes.items():
            m.training = t
    return _Propagation(gm, _frozen_modules(model, gm, leaf_modules)).run(tuple(input_shape))


def _frozen_modules(model: nn.Module, gm: torch.fx.GraphModule, leaves: tuple) -> dict[str, str]:
    """Modules whose channels must stay whole, with the reason: those named in ``leaf_modules``,
    those whose weight is computed (parametrisations, the old weight_norm/spectral_norm hooks),
    those sharing (tying) a parameter with another module, and those whose parameters the graph
    reads directly (``get_attr``): surgery would slice a tensor another reader expects whole."""
    names = {x for x in leaves if isinstance(x, str)}
    types = tuple(x for x in leaves if isinstance(x, type))
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        mname = pname.rpartition(".")[0]
        owners.setdefault(id(p), []).append((pname, model.get_submodule(mname)))
    tied: dict[int, str] = {}
    for holders in owners.values():
        if len({id(m) for _, m in holders}) > 1:
            for pname, m in holders:
                others = ", ".join(q for q, o in holders if o is not m)
                tied.setdefault(id(m), f"{pname} is tied to {others} (one shared Parameter): pruning "
                                       "would untie them")
    direct = {n.target.rpartition(".")[0] for n in gm.graph.nodes if n.op == "get_attr"}
    out = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if name in names or (types and isinstance(m, types)):
            out[name] = f"module {name} ({type(m).__name__}) is named in leaf_modules: kept whole"
        elif torch.nn.utils.parametrize.is_parametrized(m):
            out[name] = (f"module {name} ({type(m).__name__}) is parametrised (e.g. weight_norm, "
                         "spectral_norm): remove the parametrisation first "
                         "(torch.nn.utils.parametrize.remove_parametrizations) to prune it")
        elif "weight" not in m._parameters and isinstance(getattr(m, "weight", None), torch.Tensor):
            out[name] = (f"module {name} ({type(m).__name__}) computes its weight in a hook (old "
                         "nn.utils.weight_norm / spectral_norm): remove it first "
                         "(nn.utils.remove_weight_norm / remove_spectral_norm) to prune it")
        elif id(m) in tied:
            out[name] = f"module {name}: {tied[id(m)]}"
        elif name and name in direct:
            out[name] = f"the parameters of module {name} are also read directly by the graph"
    return out


def _propagate_shapes(gm: torch.fx.GraphModule, x: torch.Tensor) -> None:
    """Record every node's output shape in ``node.meta["tensor_meta"]``.

    First on the ``meta`` device: every parameter, buffer and the input are swapped for
    storage-less meta tensors, so only shapes are computed (a ResNet-101 at 224x224 in about a
    tenth of a second, nothing real is touched or copied). Real tensors are the fallback for models
    whose ops have no meta implementation or that read tensor values (leaf modules with control
    flow); its error, if any, is the one reported."""
    try:
        _Shapes(gm, meta=True).run(x.to("meta"))
        return
    except Exception:
        for n in gm.graph.nodes:
            n.meta.pop("tensor_meta", None)
    _Shapes(gm, meta=False).run(x)


_SHAPE_PRESERVING = {nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.Identity,
                     nn.Dropout, nn.SiLU, nn.Hardswish, nn.Sigmoid}


def _meta(t):
    return torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t


class _ShapeError(RuntimeError):
    """Running the traced graph failed at one node (the message names it)."""


class _Shapes(torch.fx.Interpreter):
    """Runs a traced graph without gradients, storing each node's tensor metadata as ShapeProp
    does. ``meta=True``: on meta tensors (parameters and buffers swapped per call)."""

    def __init__(self, gm: torch.fx.GraphModule, meta: bool):
        super().__init__(gm)
        self.meta = meta
        self.extra_traceback = False

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            with torch.no_grad():
                result = super().run_node(n)
        except _ShapeError:
            raise
        except Exception as e:
            where = (f"module {n.target!r} ({type(self.fetch_attr(n.target)).__name__})" if n.op == "call_module"
                     else f"{getattr(n.target, '__name__', n.target)} (graph node {n.name!r})")
            raise _ShapeError(f"at {where}: {type(e).__name__}: {e}") from e
        found = False

        def extract(obj):
            nonlocal found
            if isinstance(obj, torch.Tensor):
                found = True
                return _extract_tensor_metadata(obj)
            return obj

        meta = torch.fx.node.map_aggregate(result, extract)
        if found:
            n.meta["tensor_meta"] = meta
        return result

    def call_module(self, target, args, kwargs):
        submod = self.fetch_attr(target)
        if not self.meta:
            return submod(*args, **kwargs)
        x = args[0] if args else None
        if type(submod) in _SHAPE_PRESERVING and isinstance(x, torch.Tensor) and len(args) == 1 and not kwargs:
            if isinstance(submod, nn.modules.batchnorm._BatchNorm) and (x.dim() < 2 or x.shape[1] != submod.num_features):
                raise ValueError(f"{target} expects {submod.num_features} channels, got input {tuple(x.shape)}")
            return torch.empty_like(x)          # BN, activations: the meta kernels are slow decompositions
        state = {k: _meta(v) for k, v in submod.named_parameters()}
        state.update({k: _meta(v) for k, v in submod.named_buffers()})
        return torch.func.functional_call(submod, state, tuple(args), dict(kwargs))

    def get_attr(self, target, args, kwargs):
        value = super().get_attr(target, args, kwargs)
        return _meta(value) if self.meta else value


class _Propagation:
    """One pass over the traced nodes, assigning each tensor's channel dimension to spaces."""

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
    @staticmethod
    def _aggregate(node) -> bool:
        tm = node.meta.get("tensor_meta")
        return isinstance(tm, (tuple, list, dict)) and not hasattr(tm, "shape")

    def _multi(self, node) -> None:
        """An op returning several tensors: each keeps the input's channels when it works along
        a spatial dim; otherwise the input's channels and every result are refused."""
        t = node.target
        name = t if node.op == "call_method" else getattr(t, "__name__", str(t))
        known = node.op != "call_module" and name in _MULTI_OUTPUT and (
            node.op == "call_method" or getattr(torch, name, None) is t)
        label = f"module {t}" if node.op == "call_module" else f"{name}()"
        ins, shape_in = self._inputs(node), self._shape(self._arg0(node))
        if known and len(ins) == 1 and ins[0].stride == 1 and shape_in and len(shape_in) >= 2:
            pos, default = _MULTI_OUTPUT[name]
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

    def _module(self, node) -> _Desc | None:
        name, m = node.target, self.modules[node.target]
        ins = self._inputs(node)
        x = ins[0] if ins else None
        shape_in = self._shape(self._arg0(node))
        self.shapes.setdefault(name, (shape_in, self._shape(node)))
        if name in self.frozen:
            return self._refuse(node, self.frozen[name])
        if len(ins) > 1 or (x is None and isinstance(m, (nn.Conv2d, nn.Linear))):
            return self._unsupported(node, f"module {name} ({type(m).__name__}) with several inputs")
        if isinstance(m, _SPATIAL_2D) and (shape_in is None or len(shape_in) != 4):
            return self._refuse(node, f"module {name} ({type(m).__name__}) on a {len(shape_in or ())}-D "
                                      "tensor pools or pads across dim 1, the channels")
        if isinstance(m, nn.Conv2d) and not _is_depthwise(m):
            if m.groups > 1:
                return self._grouped(node, name, m, x)
            if x.stride != 1:
                return self._unsupported(node, f"convolution {name} on a flattened tensor")
            return self._producer(node, name, x)
        if isinstance(m, nn.Linear):
            if shape_in is None or len(shape_in) != 2:
                return self._unsupported(node, f"linear layer {name} on a {len(shape_in or ())}-D tensor")
            return self._producer(node, name, x)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Conv2d)):       # BN, depthwise conv
            if x is None:
                return None
            if isinstance(m, nn.Conv2d) and x.stride != 1:
                return self._unsupported(node, f"convolution {name} on a flattened tensor")
            if name in self.consumed:          # called again: its entries are shared by both inputs
                self._share(name, x)
            else:
                self.consumed[name] = x
                self._ref(x, name, DEPENDENT)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                src = self._arg0(node)
                if (len(x.segs) == 1 and src.op == "call_module"
                        and src.target in self.module_atoms):           # BN right after a feed-in layer
                    self.sp.bn_after.setdefault(self.sp.find(x.segs[0].atom), {})[src.target] = name
            return x
        if isinstance(m, nn.Flatten):
            return self._flatten(node, x, m.start_dim, m.end_dim)
        if isinstance(m, _ACTIVATIONS) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return x
        return self._unsupported(node, f"module {name} ({type(m).__name__})")

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

    def _producer(self, node, name: str, x: _Desc) -> _Desc | None:
        """A feed-in/feed-out layer (conv, linear): reads x's channels, creates new ones."""
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
        return _Desc(x.segs, x.stride * spatial)

    def _function(self, node) -> _Desc | None:
        f = node.target
        ins = self._inputs(node)
        if not ins:
            if self._shape(node) is None or f in _NON_TENSOR:
                return None
            return self._fresh(node, f"tensor created by {getattr(f, '__name__', f)} inside forward()")
        if f in _NON_TENSOR:
            return None if self._shape(node) is None else self._unsupported(node, f"indexing {f.__name__}")
        if f in _CHANNELWISE_FUNCS:
            if len(ins) != 1:
                return self._unsupported(node, f"{f.__name__} with tensor arguments")
            return self._spatial_only(node, f, ins[0])
        if f is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self._flatten(node, ins[0], start, end)
        if f in _ELEMENTWISE:
            return self._elementwise(node, f.__name__)
        if f is torch.cat:
            return self._cat(node)
        if f is torch.mean or f is torch.sum or f is torch.amax:
            return self._reduce(node, ins[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"))
        return self._unsupported(node, f"function {getattr(f, '__name__', f)}")

    def _method(self, node) -> _Desc | None:
        name = node.target
        ins = self._inputs(node)
        if not ins:
            return None
        if name in ("size", "dim", "numel") or self._shape(node) is None:
            return None
        if name in _CHANNELWISE_METHODS:
            return ins[0] if len(ins) == 1 else self._unsupported(node, f".{name}() with tensor arguments")
        if name in _ELEMENTWISE_METHODS:
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
            return self._reduce(node, ins[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"))
        return self._unsupported(node, f"method .{name}()")

    def _spatial_only(self, node, f, x: _Desc) -> _Desc | None:
        """A channel-wise function, unless it pads the batch or channel axis or is a 2-D pool of a
        tensor that is not 4-D (then it works across channels)."""
        shape_in = self._shape(self._arg0(node))
        ndim = len(shape_in or ())
        if f in _SPATIAL_2D_FUNCS and ndim != 4:
            return self._refuse(node, f"{f.__name__} of a {ndim}-D tensor at node {node.name!r} pools "
                                      "across dim 1, the channels")
        if f is F.pad:
            pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", ())
            across = [pad[i] for i in range(2 * (ndim - 2), len(pad))] if ndim >= 2 else list(pad)
            if any(not isinstance(p, int) or p != 0 for p in across):
                return self._refuse(node, f"padding along the batch or channel axis at node {node.name!r} "
                                          f"(pad={tuple(pad)} of a {ndim}-D tensor)")
        return x

    def _reduce(self, node, x: _Desc, dims) -> _Desc | None:
        shape_in = self._shape(self._arg0(node))
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        norm = {d % len(shape_in) for d in dims} if shape_in and dims else set()
        if x.stride == 1 and norm and 0 not in norm and 1 not in norm:
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
        return ChannelGraph(prunable, unprunable, self.shapes, input_shape, by_groups)


def _dedup(refs) -> list[ChannelRef]:
    seen, out = set(), []
    for r in refs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out

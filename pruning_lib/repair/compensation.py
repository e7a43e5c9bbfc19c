"""Compensation of the layers that read removed channels (ModHiFi, Kashyap et al., NeurIPS 2025,
Proposition 3.8 and section D.2).

After channels are removed, each reader b (a conv or Linear whose input lost channels) is refitted so
that its output on the input *the pruned network produces* matches the unpruned reader's output on
the unpruned input, in least squares:

- a k x k conv: delta* of Proposition 3.8, one scalar per kept kernel slice (c, i): the solution of
  (Q_c[C,C] + lambda I) delta = R_c,C with Q_c,ij = E<A'_ci, A'_cj> and R_ci = E<Y_c, A'_ci>
  (A' the kept contributions on the pruned input, Y_c the unpruned output); when the kept inputs are
  unchanged this is the paper's delta*_C = 1_C + Q_CC^{-1} Q_C,Cbar 1 (:func:`delta_closed_form`);
  then W'_ci = delta_ci W_ci;
- a 1x1 conv or a Linear: the exact least-squares refit of all kept weights, (G + lambda I) W^T = H
  with G = sum P P^T and H = sum P Y^T (for these layers delta* is this refit: each A_ci is w_ci
  times input i, so rescaling w_ci is all a refit can do).

Everything comes from :class:`~pruning_lib.repair.moments.PatchMoments` accumulated over batches,
so memory is bounded by the Gram (C K)^2, never by the data. lambda is ``ridge`` times the mean
diagonal of the system (the paper's lambda = 1e-4, made scale-free). With ``intercept`` the fit is
centred and the constant shift it finds is folded exactly into the reader's bias, or, for a
bias-free reader followed by a BatchNorm, into that BatchNorm's running mean (BN(y + beta) with mean
m equals BN(y) with mean m - beta).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..graph import ChannelGraph
from ..surgery import plan
from .inputs import iter_inputs
from .layerwise import LayerwiseUnavailable, NodeRunner
from .moments import (PatchMoments, UnsupportedReaderError, layer_patches, outputs_by_position, reader_kind,
                      weight_blocks)

__all__ = ["LayerCompensation", "CompensationResult", "METHODS", "least_squares_refit", "delta_star",
           "delta_closed_form", "reconstruction_error", "compensate", "paired_moments"]

METHODS = ("auto", "delta", "lstsq")


@dataclass
class LayerCompensation:
    """One reader's refit: ``method`` ``"delta"`` (Prop. 3.8) or ``"lstsq"``; ``lam`` the absolute ridge
    used (the mean over output channels for delta); ``shift_into`` where the fitted constant went
    (``"bias"``, ``"<bn>.running_mean"``, or ``""`` when none was fitted); ``error_before`` /
    ``error_after``: E||Y - Y_hat||^2 / E||Y - mean Y||^2 on the calibration samples."""
    name: str
    kind: str
    method: str
    inputs: int
    outputs: int
    samples: int
    lam: float
    shift_into: str
    error_before: float
    error_after: float


@dataclass
class CompensationResult:
    """The compensated model and one record per reader, in the order they were refitted; ``skipped``
    names readers left as they are, with the reason."""
    model: nn.Module
    layers: list[LayerCompensation]
    skipped: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        from dataclasses import asdict
        return [asdict(r) for r in self.layers]

    def table(self) -> str:
        lines = [f"{'reader':<28} {'method':>6} {'in':>5} {'out':>5} {'error before':>13} {'after':>9}"]
        lines += [f"{r.name:<28} {r.method:>6} {r.inputs:>5} {r.outputs:>5} {r.error_before:>13.4f} "
                  f"{r.error_after:>9.4f}" for r in self.layers]
        return "\n".join(lines)


def _centred(m: PatchMoments, intercept: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gram and cross sums, centred (covariances times the row count) when ``intercept``."""
    g, h = m.gram, m.cross.reshape(-1, m.outputs)
    if intercept:
        p = m.psum.reshape(-1)
        g = g - torch.outer(p, p) / m.rows
        h = h - torch.outer(p, m.ysum) / m.rows
    return g, h


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a x = b for symmetric PSD ``a`` (batched); the minimum-norm least-squares solution when singular."""
    if not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise FloatingPointError("the normal equations hold inf or NaN: the layer's calibration inputs or "
                                 "outputs overflowed (check the data's scale and the upstream layers)")
    x, info = torch.linalg.solve_ex(a, b)
    if bool((info != 0).any()) or not bool(torch.isfinite(x).all()):
        x = torch.linalg.lstsq(a, b, driver="gelsd").solution
    return x


def _shift(m: PatchMoments, w_flat: torch.Tensor) -> torch.Tensor:
    return (m.ysum - w_flat @ m.psum.reshape(-1)) / m.rows


def least_squares_refit(m: PatchMoments, ridge: float = 1e-4, intercept: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """The exact least-squares refit from the moments: W (C_out, C K) minimising
    sum ||Y - W P - b||^2 + lam ||W||^2 with lam = ``ridge`` x mean diag of the (centred) Gram; b the
    fitted constant (None without ``intercept``). Returns (W, b, lam)."""
    g, h = _centred(m, intercept)
    lam = ridge * float(g.diagonal().mean()) if ridge else 0.0
    if ridge and lam <= 0:
        lam = ridge
    w = _solve(g + lam * torch.eye(len(g), dtype=g.dtype), h).T.contiguous()
    return w, (_shift(m, w) if intercept else None), lam


_EINSUM_CHUNK = 1 << 24


def _csm(gram4: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Q_c,ij = w_ci^T G_ij w_cj for every output channel c (eq. 2 from the patch Gram), (C_out, C, C)."""
    c_out, c, k = w.shape
    step = max(1, _EINSUM_CHUNK // max(1, c * c * k))
    return torch.cat([torch.einsum("cia,iajb,cjb->cij", w[s:s + step], gram4, w[s:s + step])
                      for s in range(0, c_out, step)])


def delta_star(m: PatchMoments, weight: torch.Tensor, ridge: float = 1e-4, intercept: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """delta* of Proposition 3.8 for every output channel: (Q_c + lam_c I) delta_c = R_c with Q_c the
    CSM of the kept contributions and R_ci = E<Y_c, A_ci> (centred with ``intercept``), lam_c =
    ``ridge`` x mean diag Q_c. ``weight``: the reader's kept weights (C_out, C, K). Returns
    (delta (C_out, C), the constant b (or None), lam (C_out,))."""
    g, h = _centred(m, intercept)
    c, k = m.channels, m.patch
    w = weight.double()
    q = _csm(g.view(c, k, c, k), w)
    r = torch.einsum("cia,iac->ci", w, h.view(c, k, -1))
    lam = ridge * q.diagonal(dim1=1, dim2=2).mean(1)
    lam = torch.where((lam <= 0) & (ridge > 0), torch.full_like(lam, ridge), lam)
    eye = torch.eye(c, dtype=q.dtype)
    delta = _solve(q + lam[:, None, None] * eye, r.unsqueeze(2)).squeeze(2)
    b = _shift(m, (delta[:, :, None] * w).reshape(len(w), -1)) if intercept else None
    return delta, b, lam


def delta_closed_form(q: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """Proposition 3.8's closed form for one output channel's CSM ``q`` (n x n) and kept set C:
    delta*_C = 1_C + Q[C,C]^{-1} Q[C,Cbar] 1, 0 elsewhere (the printed Q[C,C] 1_{n-k} read as the cross
    block Q[C,Cbar], as its dimensions and the proof in App. B.3 require)."""
    n = q.shape[0]
    kept = sorted(kept)
    gone = [i for i in range(n) if i not in set(kept)]
    qc = q[kept][:, kept]
    rhs = q[kept][:, gone].sum(1) if gone else torch.zeros(len(kept), dtype=q.dtype)
    out = torch.zeros(n, dtype=q.dtype)
    out[kept] = 1 + torch.linalg.solve(qc, rhs)
    return out


def reconstruction_error(m: PatchMoments, w_flat: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """E||Y - W P - b||^2 / E||Y - mean Y||^2 over the accumulated samples (from the moments alone)."""
    w = w_flat.double()
    h = m.cross.reshape(-1, m.outputs)
    err = m.y2sum.sum() - 2 * (w * h.T).sum() + ((w @ m.gram) * w).sum()
    if b is not None:
        b = b.double()
        err = err - 2 * (b * m.ysum).sum() + 2 * (b * (w @ m.psum.reshape(-1))).sum() + m.rows * (b * b).sum()
    var = (m.y2sum - m.ysum ** 2 / m.rows).sum()
    return float(err / var) if var > 0 else float(err)


class _Stop(Exception):
    """Raised in a hook once every watched layer has been seen: the rest of the forward is not needed."""


def _forward_until(model: nn.Module, x: torch.Tensor, names: list[str], grab) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` far enough for every layer in ``names`` to run once; ``grab(module, inputs,
    output)`` picks what to keep from each."""
    got: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(m, inputs, output):
            if name not in got:
                got[name] = grab(m, inputs, output)
            if len(got) == len(names):
                raise _Stop
        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in got]
    if missing:
        raise ValueError(f"the forward pass never reached {missing[:3]}")
    return got


@torch.no_grad()
def paired_moments(pruned: nn.Module, reference: nn.Module, readers: dict[str, tuple[list[int], int]], data,
                   samples: int | None = None, batch_size: int = 250) -> dict[str, PatchMoments]:
    """For each reader (name -> (kept output indices in ``reference``, features per channel)): the
    moments of its patches in ``pruned`` against its outputs in ``reference`` on the same batches (the
    unpruned output as target, the pruned network's input as regressor). Models must be in eval mode."""
    names = list(readers)
    moments: dict[str, PatchMoments] = {}
    p0 = next(pruned.parameters())
    for x in iter_inputs(data, batch_size, samples):
        x = x.to(p0.device, p0.dtype if x.is_floating_point() else x.dtype)
        ys = _forward_until(reference, x, names, lambda m, i, o: o)
        xs = _forward_until(pruned, x, names, lambda m, i, o: i[0])
        for n in names:
            moments[n] = _add_pair(moments.get(n), pruned.get_submodule(n), xs[n], ys[n], *readers[n])
    return moments


def _add_pair(m: PatchMoments | None, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: list[int],
              stride: int) -> PatchMoments:
    """``m`` (made on the first batch) plus one batch: ``layer``'s patches of ``x`` against the kept outputs ``y``."""
    p = layer_patches(layer, x, stride)
    y = outputs_by_position(y)[:, keep]
    m = m if m is not None else PatchMoments(p.shape[1], p.shape[2], y.shape[1], full_gram=True)
    m.add(p, y)
    return m


def _execution_order(model: nn.Module, names: list[str], x: torch.Tensor) -> list[str]:
    seen: list[str] = []
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, i, n=n: seen.append(n) if n not in seen else None) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen + [n for n in names if n not in seen]


def _bn_after(graph: ChannelGraph, name: str) -> str | None:
    for dfc in graph.dfcs + graph.unprunable + graph.grouped:
        if name in dfc.bn_after:
            return dfc.bn_after[name]
    return None


def _stride_of(graph: ChannelGraph, name: str) -> int:
    for dfc in graph.dfcs + graph.unprunable + graph.grouped:
        for ref in dfc.feed_out:
            if ref.module == name:
                return ref.stride
    return 1


@torch.no_grad()
def _sequential_one_pass(target: nn.Module, reference: nn.Module, graph: ChannelGraph, readers, data, samples,
                         batch_size, method, ridge, intercept) -> list[LayerCompensation]:
    """The sequential refits in one node-by-node pass of each network (:mod:`.layerwise`)."""
    p0 = next(target.parameters())
    batches = [x.to(p0.device, p0.dtype if x.is_floating_point() else x.dtype)
               for x in iter_inputs(data, batch_size, samples)]
    pruned_run = NodeRunner(target, batches, list(readers))
    reference_run = NodeRunner(reference, batches, list(readers))
    records = []
    for n in pruned_run.order():
        m = None
        for x, y in zip(pruned_run.input_of(n), reference_run.output_of(n)):
            m = _add_pair(m, target.get_submodule(n), x, y, *readers[n])
        records.append(_refit(target, graph, n, m, readers[n][1], method, ridge, intercept))
    return records


@torch.no_grad()
def compensate(pruned: nn.Module, reference: nn.Module, graph: ChannelGraph, removals, data, *,
               method: str = "auto", ridge: float = 1e-4, intercept: bool = True, sequential: bool = True,
               samples: int | None = None, batch_size: int = 250, one_pass: bool = True,
               inplace: bool = False) -> CompensationResult:
    """Refit every reader of removed channels of ``pruned`` = ``prune(reference, graph, removals)``.

    ``method``: ``"auto"`` (delta* for k x k convs, the exact least-squares refit for 1x1 convs and
    Linear layers), ``"delta"`` (Prop. 3.8 everywhere) or ``"lstsq"`` (full refit everywhere, an
    extension beyond the paper for k x k convs). ``sequential``: refit readers in execution order, each
    on the input the already-compensated upstream produces (one pass over ``data`` per reader, cut
    short after it, or, with ``one_pass``, one node-by-node pass of the traced network over all samples
    holding their live activations: the same refits, memory for speed; the per-reader passes when the
    network cannot be traced); ``False``: one pass, every reader on the uncompensated pruned network's input.
    A constant per output channel is always fitted into a reader's bias; for a bias-free reader
    followed by a BatchNorm, into its running mean when ``intercept`` (else no constant is fitted).
    ``data``: unlabelled samples (``samples`` caps them). ``pruned`` is copied unless ``inplace``;
    ``reference`` is never modified."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {METHODS}")
    if ridge < 0:
        raise ValueError(f"ridge={ridge}: give a non-negative relative ridge (the paper's 1e-4)")
    cut = plan(graph, removals)
    target = pruned if inplace else copy.deepcopy(pruned)
    readers, skipped = {}, {}
    for name, c in cut.items():
        if not c["in"]:
            continue
        try:
            reader_kind(reference.get_submodule(name), name)
        except UnsupportedReaderError as e:
            skipped[name] = str(e)
            continue
        n_out = reference.get_submodule(name).weight.shape[0]
        readers[name] = ([o for o in range(n_out) if o not in c["out"]], _stride_of(graph, name))
    modes = {m: m.training for m in list(reference.modules()) + list(target.modules())}
    records: list[LayerCompensation] = []
    try:
        reference.eval()
        target.eval()
        if not readers:
            return CompensationResult(target, records, skipped)
        if sequential and one_pass:
            try:
                records = _sequential_one_pass(target, reference, graph, readers, data, samples, batch_size,
                                               method, ridge, intercept)
                return CompensationResult(target, records, skipped)
            except LayerwiseUnavailable:
                pass
        p0 = next(target.parameters())
        first = next(iter_inputs(data, batch_size, 1)).to(p0.device, p0.dtype)
        order = _execution_order(target, list(readers), first)
        groups = [[n] for n in order] if sequential else [order]
        for group in groups:
            moments = paired_moments(target, reference, {n: readers[n] for n in group}, data, samples, batch_size)
            for n in group:
                records.append(_refit(target, graph, n, moments[n], readers[n][1], method, ridge, intercept))
    finally:
        for m, t in modes.items():
            m.training = t
    return CompensationResult(target, records, skipped)


def _refit(model: nn.Module, graph: ChannelGraph, name: str, m: PatchMoments, stride: int, method: str,
           ridge: float, intercept: bool) -> LayerCompensation:
    layer = model.get_submodule(name)
    kind = reader_kind(layer, name)
    bn_name = _bn_after(graph, name) if layer.bias is None else None
    bn = model.get_submodule(bn_name) if bn_name else None
    into_bn = bn is not None and getattr(bn, "running_mean", None) is not None
    fit_shift = layer.bias is not None or (intercept and into_bn)
    w_old = weight_blocks(layer, stride)
    b_old = layer.bias.detach().double() if layer.bias is not None else None
    before = reconstruction_error(m, w_old.reshape(len(w_old), -1), b_old)
    use = method if method != "auto" else ("delta" if kind == "conv" and m.patch > 1 else "lstsq")
    if use == "delta":
        delta, b, lam = delta_star(m, w_old, ridge, fit_shift)
        w_new = delta[:, :, None] * w_old
        lam = float(lam.mean())
    else:
        w_flat, b, lam = least_squares_refit(m, ridge, fit_shift)
        w_new = w_flat.view_as(w_old)
    layer.weight.copy_(w_new.reshape(layer.weight.shape).to(layer.weight.dtype))
    where = ""
    if b is not None:
        if layer.bias is not None:
            layer.bias.copy_(b.to(layer.bias.dtype))
            where = "bias"
        else:
            bn.running_mean.sub_(b.to(bn.running_mean.dtype))
            where = f"{bn_name}.running_mean"
    after = reconstruction_error(m, w_new.reshape(len(w_new), -1), b if b is not None else b_old)
    return LayerCompensation(name, kind, use, m.channels, m.outputs, m.samples, lam, where, before, after)

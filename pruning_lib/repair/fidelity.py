"""The singleton fidelity criterion ``hifi`` of ModHiFi-P (Kashyap et al., NeurIPS 2025).

For a reader layer (a conv or Linear reading a DFC's channels) with output channel c and input
channel i, the input contribution is A_ci = Phi_i * W_ci (eq. CONV). From unlabelled batches this
module estimates, per (c, i), the quantities of Proposition 3.8, eq. (3):

    R_ci = E<Y_c, A_ci>,   q_ii = E||A_ci||^2,   alpha_ci = R_ci / q_ii,
    s_ci = 1 - E||Y_c - alpha_ci A_ci||^2 / E||Y_c||^2 = R_ci^2 / (q_ii E||Y_c||^2),

centred by default as in section D.2 (covariances instead of second moments; here with the
sample mean of A_ci over samples and positions, so that R~ = Q~ 1 holds exactly). Then the rule of
Algorithm 1/2 (section 4, D.2) turns per-(c, i) scores into per-channel decisions: channel k of a
DFC survives iff it is in the HiFi set (the top of c's c_in scores) of some output channel c of some
reader b of the DFC. Its scalar form, used for a global order: P_k = max over b and c of the
percentile rank of (c, k) among c's scores; k is pruned at threshold tau iff P_k < tau.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..graph import DFC, ChannelGraph, discover
from ..scoring import ChannelScores, register_criterion
from .inputs import iter_inputs
from .moments import PatchMoments, layer_patches, outputs_by_position, reader_kind, weight_blocks

__all__ = ["ReaderFidelity", "HiFiScores", "SCORES", "reader_fidelity", "fidelity_statistics", "percentile_ranks",
           "hifi_scores", "hifi_removals"]

SCORES = ("saliency", "fidelity", "alpha")
TIEBREAK = 1e-6       # weight of the tie-break in the scalar score (below the smallest percentile step 1/c_in)


@dataclass
class ReaderFidelity:
    """Eq. (3) for one reader, every entry (C_out, C_in): ``saliency`` R_ci (R~_ci when ``centred``),
    ``contribution`` q_ii = E||A_ci||^2, ``alpha`` and ``fidelity`` s_ci; ``energy`` E||Y_c||^2 (C_out,)."""
    name: str
    saliency: torch.Tensor
    contribution: torch.Tensor
    alpha: torch.Tensor
    fidelity: torch.Tensor
    energy: torch.Tensor
    samples: int
    centred: bool

    def score(self, which: str) -> torch.Tensor:
        """The (C_out, C_in) matrix named ``which`` (one of :data:`SCORES`)."""
        if which not in SCORES:
            raise ValueError(f"score={which!r}: choose one of {SCORES}")
        return getattr(self, which)


@dataclass(repr=False)
class HiFiScores(ChannelScores):
    """:class:`ChannelScores` of ``hifi`` (P_k plus a tie-break below one percentile step), with the
    per-reader statistics and each DFC's P_k (``percentile``) kept for inspection."""
    readers: dict[str, ReaderFidelity] = field(default_factory=dict)
    percentile: dict[DFC, torch.Tensor] = field(default_factory=dict)


def reader_fidelity(name: str, m: nn.Module, moments: PatchMoments, stride: int = 1,
                    centre: bool = True) -> ReaderFidelity:
    """Eq. (3) from a reader's accumulated moments (outputs without the layer's bias, Y_c = sum_i A_ci).

    R_ci = w_ci^T (sum P_i Y_c) / N and q_ii = w_ci^T (sum P_i P_i^T) w_ci / N (section D.3); centred,
    R~ = R - L mu_c m_ci, q~ = q - L m_ci^2 and E||Y_c - mu_c||^2 = E||Y_c||^2 - L mu_c^2 with
    m_ci = mean of A_ci, mu_c = sum_i m_ci and L output positions."""
    w = weight_blocks(m, stride)
    n, L = moments.samples, moments.positions
    if n == 0:
        raise ValueError(f"no samples reached {name}")
    r = torch.einsum("cia,iac->ci", w, moments.cross) / n
    q = torch.einsum("cia,iab,cib->ci", w, moments.diag_blocks(), w) / n
    energy = moments.y2sum / n
    if centre:
        mean_a = torch.einsum("cia,ia->ci", w, moments.psum) / (n * L)
        mu = moments.ysum / (n * L)
        r = r - L * mu[:, None] * mean_a
        q = q - L * mean_a ** 2
        energy = energy - L * mu ** 2
    q = q.clamp_min(0)
    energy = energy.clamp_min(0)
    tiny = torch.finfo(torch.float64).tiny
    alpha = torch.where(q > tiny, r / q.clamp_min(tiny), torch.zeros_like(r))
    denom = q * energy[:, None]
    s = torch.where(denom > tiny, r * r / denom.clamp_min(tiny), torch.zeros_like(r))
    return ReaderFidelity(name, r, q, alpha, s.clamp(0, 1), energy, n, centre)


def _readers(graph: ChannelGraph) -> dict[str, int]:
    """Every feed-out layer of the prunable DFCs, with the features per channel it reads."""
    out: dict[str, int] = {}
    for dfc in graph.dfcs:
        for ref in dfc.feed_out:
            if out.setdefault(ref.module, ref.stride) != ref.stride:
                raise ValueError(f"{ref.module} reads channels of {out[ref.module]} and of {ref.stride} features "
                                 "from different DFCs; the fidelity scores need one layout per reader")
    return out


@torch.no_grad()
def fidelity_statistics(model: nn.Module, graph: ChannelGraph, data, *, centre: bool = True,
                        samples: int | None = None, batch_size: int = 250) -> dict[str, ReaderFidelity]:
    """Eq. (3) for every reader of ``graph``'s prunable DFCs, streaming over ``data`` (unlabelled
    batches: forward hooks accumulate :class:`PatchMoments` with the Gram's diagonal blocks only).
    ``samples`` caps the samples read. The model is left as it was (modes restored, hooks removed)."""
    readers = _readers(graph)
    mods = {name: model.get_submodule(name) for name in readers}
    for name, m in mods.items():
        reader_kind(m, name)
    moments: dict[str, PatchMoments] = {}

    def hook(name, stride):
        def fn(m, inputs, output):
            p = layer_patches(m, inputs[0], stride)
            y = output - m.bias.view(1, -1, *([1] * (output.dim() - 2))) if m.bias is not None else output
            y = outputs_by_position(y)
            if name not in moments:
                moments[name] = PatchMoments(p.shape[1], p.shape[2], y.shape[1], full_gram=False)
            moments[name].add(p, y)
        return fn

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook(name, readers[name])) for name, m in mods.items()]
    p0 = next(model.parameters())
    try:
        model.eval()
        for x in iter_inputs(data, batch_size, samples):
            model(x.to(p0.device, p0.dtype if x.is_floating_point() else x.dtype))
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
    missing = sorted(set(mods) - set(moments))
    if missing:
        raise ValueError(f"the forward pass never reached {missing[:3]}: is the graph this model's?")
    return {name: reader_fidelity(name, mods[name], moments[name], readers[name], centre) for name in mods}


def percentile_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Per row (output channel), each entry's rank among the row's entries divided by their number:
    1 for the highest, 1/c_in for the lowest; ties take the highest rank they share."""
    ordered = scores.sort(dim=1).values
    return torch.searchsorted(ordered.contiguous(), scores.contiguous(), right=True).double() / scores.shape[1]


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    lo = scores.min(1, keepdim=True).values
    span = scores.max(1, keepdim=True).values - lo
    return torch.where(span > 0, (scores - lo) / span.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.zeros_like(scores))


def channel_decisions(stats: dict[str, ReaderFidelity], graph: ChannelGraph,
                      score: str = "saliency") -> tuple[dict[DFC, torch.Tensor], dict[DFC, torch.Tensor]]:
    """Per DFC: P_k = max over readers b in B and output channels c of the percentile rank of (c, k)
    (Algorithm 2's union over coupled readers, in scalar form), and the tie-break
    max over b, c of the row-normalised score."""
    pct, tie = {}, {}
    ranks = {name: percentile_ranks(st.score(score)) for name, st in stats.items()}
    norms = {name: _normalised(st.score(score)) for name, st in stats.items()}
    for dfc in graph.dfcs:
        p = torch.zeros(dfc.channels, dtype=torch.float64)
        t = torch.zeros(dfc.channels, dtype=torch.float64)
        for ref in dfc.feed_out:
            cols = [ref.offset + k for k in range(dfc.channels)]
            p = torch.maximum(p, ranks[ref.module][:, cols].max(0).values)
            t = torch.maximum(t, norms[ref.module][:, cols].max(0).values)
        pct[dfc], tie[dfc] = p, t
    return pct, tie


@register_criterion("hifi")
def hifi_scores(model: nn.Module, graph: ChannelGraph | None = None, *, data=None,
                input_shape: tuple | None = None, score: str = "saliency", centre: bool = True,
                samples: int | None = None, batch_size: int = 250) -> HiFiScores:
    """The ``hifi`` criterion: per channel k of each prunable DFC, P_k (see the module docstring) from
    eq. (3) on unlabelled ``data`` (a DataLoader, tensor of inputs or course split name), plus a
    tie-break below one percentile step. Lower is pruned first, so the global order removes channels
    that are in no output channel's HiFi set first, as Algorithm 2 does at any threshold.

    ``score``: what ranks the inputs of an output channel: ``"saliency"`` (R~_ci, signed, section
    D.2's vision practice; the default), ``"fidelity"`` (s_ci of eq. 3) or ``"alpha"`` (section 4's
    text). ``centre``: covariances (D.2) or plain second moments. ``samples``: cap on samples read.
    The model is not modified."""
    if score not in SCORES:
        raise ValueError(f"score={score!r}: choose one of {SCORES}")
    if data is None:
        raise ValueError("the hifi criterion needs data=: unlabelled samples (a DataLoader, a tensor of inputs, a "
                         "course split name such as 'dist', or pruning_lib.repair.synthesize_images(model).loader())")
    if graph is None:
        input_shape = input_shape if input_shape is not None else (1,) + tuple(next(iter_inputs(data, 1, 1)).shape[1:])
        graph = discover(model, input_shape)
    stats = fidelity_statistics(model, graph, data, centre=centre, samples=samples, batch_size=batch_size)
    pct, tie = channel_decisions(stats, graph, score)
    scores = {d: pct[d] + TIEBREAK * tie[d] for d in graph.dfcs}
    return HiFiScores("hifi", graph, scores, readers=stats, percentile=pct)


def hifi_removals(scores: HiFiScores, tau: float) -> dict[DFC, list[int]]:
    """Algorithm 2 at threshold ``tau``: per DFC the channels with P_k < tau (in no output channel's top
    1 - tau of any reader), never the DFC's last channel (the best-scored one stays: not in the paper)."""
    if not 0 < tau <= 1:
        raise ValueError(f"tau={tau}: give a percentile threshold in (0, 1]")
    out = {}
    for dfc, p in scores.percentile.items():
        gone = [k for k in range(dfc.channels) if p[k] < tau]
        if len(gone) == dfc.channels:
            gone.remove(int(torch.argmax(scores.scores[dfc])))
        if gone:
            out[dfc] = gone
    return out

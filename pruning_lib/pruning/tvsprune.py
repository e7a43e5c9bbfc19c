"""TVSPrune and IterTVSPrune: prune the filters that cannot tell classes apart (Murti et al., ICLR 2023).

Scores come from :func:`pruning_lib.scoring.tvs.tvs_scores` (the min over class pairs of a distance
between class-conditional Gaussians, per DFC channel); the unit of pruning is a DFC channel
(:mod:`pruning_lib.graph`) and pruning is physical (:mod:`pruning_lib.surgery`), not a mask. Samples
come from any data source (a DataLoader of (inputs, labels), or a course split); the accuracy gate
from a data source or an ``evaluate(model) -> float`` callable.

The eps rule (released code): in each DFC prune channel j when s_j / max_k s_k <= eps * mean_k(s_k /
max_k s_k), i.e. when s_j <= eps * mean(s): the ratio ``s_j / mean(s)`` is what is compared to eps.
"""
from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from .. import sources
from ..measure.accuracy import as_evaluator
from ..graph.discovery import discover
from ..graph.types import DFC, ChannelGraph
from ..legacy import earlier_positions
from ..measure.counts import count_flops, count_parameters
from ..progress import close_bar
from tqdm.auto import tqdm
from ..scoring.base import ChannelScores, resolve_criterion
from ..scoring.tvs import eps_ratios, tvs_scores
from ..sources import DataSource, Evaluator
from ..surgery.prune import predicted_parameters, prune
from .report import PruningReport, PruningStep
from .result import PruningResult, dfc_name, named
from .target import StopRule, Target


def eps_candidates(scores: ChannelScores, eps: float, min_channels: int = 1) -> dict[DFC, list[int]]:
    """The released rule: in each DFC the channels with s_j / max s <= eps * mean(s / max s), never
    leaving fewer than ``min_channels`` (the best-scoring channels are kept)."""
    out = {}
    for d, r in eps_ratios(scores).items():
        cand = torch.nonzero(r <= eps).flatten().tolist()
        room = d.channels - min_channels
        if len(cand) > room:
            cand = sorted(cand, key=lambda j: (float(scores.scores[d][j]), j))[:max(room, 0)]
        if cand:
            out[d] = sorted(cand)
    return out


def cap_removals(model: nn.Module, graph: ChannelGraph, removals: Mapping[DFC, list[int]],
                 order: Mapping[DFC, torch.Tensor], min_parameters: float) -> dict[DFC, list[int]]:
    """The largest part of ``removals`` that keeps at least ``min_parameters`` parameters, taken in
    ascending ``order`` value across DFCs; a channel whose removal would go below the bound is skipped
    and cheaper ones after it are still tried. Exact parameter counts from the surgery plan."""
    flat = sorted(((float(order[d][j]), d.index, j, d) for d, chans in removals.items() for j in chans),
                  key=lambda t: t[:3])
    chosen: dict[DFC, list[int]] = {}
    for _, _, j, d in flat:
        trial = {**chosen, d: chosen.get(d, []) + [j]}
        if predicted_parameters(model, graph, trial) >= min_parameters:
            chosen = trial
    return {d: sorted(c) for d, c in chosen.items()}


def cap_flops(model: nn.Module, graph: ChannelGraph, removals: Mapping[DFC, list[int]],
              order: Mapping[DFC, torch.Tensor], min_flops: float, input_shape: tuple) -> dict[DFC, list[int]]:
    """The longest prefix of ``removals`` (in ascending ``order`` value across DFCs) whose pruned
    model keeps at least ``min_flops`` FLOPs (counted by :func:`count_flops`; removing more channels
    never adds FLOPs, so a bisection finds it)."""
    flat = sorted(((float(order[d][j]), d.index, j, d) for d, chans in removals.items() for j in chans),
                  key=lambda t: t[:3])

    def take(n):
        out: dict[DFC, list[int]] = {}
        for _, _, j, d in flat[:n]:
            out.setdefault(d, []).append(j)
        return {d: sorted(c) for d, c in out.items()}

    lo, hi = 0, len(flat)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_flops(prune(model, graph, take(mid)), input_shape) >= min_flops:
            lo = mid
        else:
            hi = mid - 1
    return take(lo)


def _count(removals: Mapping) -> int:
    return sum(len(c) for c in removals.values())


def _check_fraction(x: float, name: str) -> None:
    if not (isinstance(x, numbers.Real) and not isinstance(x, bool) and 0.0 <= x < 1.0):
        raise ValueError(f"{name} is a fraction of the parameters in [0, 1), e.g. 0.035 for 3.5 %; got {x!r}")


def _one_shot(model: nn.Module, graph: ChannelGraph, removals: dict[DFC, list[int]], scores: ChannelScores,
              method: str, reason: str, name: str | None) -> PruningResult:
    """The result of removing ``removals`` at once: a report of two steps (unpruned, pruned)."""
    pruned = prune(model, graph, removals) if removals else copy.deepcopy(model)
    shape = graph.input_shape
    report = PruningReport(method, name or type(model).__name__, "")
    report.add(PruningStep(0, 0, count_parameters(model), count_flops(model, shape), note="unpruned"))
    report.add(PruningStep(1, _count(removals), count_parameters(pruned), count_flops(pruned, shape), note=reason))
    return PruningResult(pruned, report, graph, named(removals), reason, 1, scores)


# --------------------------------------------------------------------------- one shot

@earlier_positions(("graph", "data", "eps", "distance", "stream_reduce", "per_class", "scores", "input_shape"),
                   lambda args: len(args) > 2 or isinstance(args[1], ChannelGraph),
                   "tvs_prune(model, eps, data=..., graph=...)")
def tvs_prune(model: nn.Module, eps: float = 0.5, *, data: DataSource | None = None,
              graph: ChannelGraph | None = None, input_shape: tuple | None = None,
              scores: ChannelScores | None = None, distance: str = "hellinger_lb", stream_reduce: str = "mean",
              per_class: int | None = None, name: str | None = None) -> PruningResult:
    """TVSPrune, one shot: score every DFC channel on ``data`` and physically remove, in each DFC,
    the channels with s_j <= eps * mean(s) (never all of them). ``scores``: ready TVS scores (then
    ``data`` is not read). The caller's model is not modified."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (eps={eps} prunes nothing); the released default is 0.5")
    if scores is not None:
        graph = scores.graph
    if graph is None:
        graph = discover(model, sources.input_shape_for(input_shape, data, "tvs_prune"))
    if scores is None:
        scores = tvs_scores(model, graph, data=data, distance=distance, stream_reduce=stream_reduce,
                            per_class=per_class)
    removals = eps_candidates(scores, eps)
    return _one_shot(model, graph, removals, scores, "TVSPrune",
                     f"every channel with s_j <= {eps} x its DFC's mean removed", name)


def prune_to_sparsity(model: nn.Module, target: Target, *,
                      criterion: str | Callable[..., ChannelScores] | ChannelScores = "l1",
                      data: DataSource | None = None, graph: ChannelGraph | None = None,
                      input_shape: tuple | None = None, min_channels: int = 1, name: str | None = None) -> PruningResult:
    """One shot at a parameter budget, ``Target(parameters=...)``, with any criterion (a name, a function
    or ready scores): channels ranked across DFCs by their layer-normalised score s_j / mean(s) (the
    eps rule's ratio), removed lowest first, skipping any whose removal would pass the target. The
    baselines (L1, random) use this with their own scores, so all methods share one allocation rule."""
    if not isinstance(target, Target):
        raise TypeError(f"target must be a pruning_lib.Target, e.g. Target(parameters=0.035); got "
                        f"{type(target).__name__}")
    target.only(("parameters",), "prune_to_sparsity", "Give Target(parameters=...): the fraction to remove.")
    if target.parameters is None:
        raise ValueError("prune_to_sparsity needs Target(parameters=...): the fraction of the parameters to remove")
    if isinstance(criterion, ChannelScores):
        scores = criterion
        graph = scores.graph
    else:
        if graph is None:
            graph = discover(model, sources.input_shape_for(input_shape, data, "prune_to_sparsity"))
        fn = resolve_criterion(criterion)
        scores = fn(model, graph) if data is None else fn(model, graph, data=sources.resolve(data))
    p0 = count_parameters(model)
    ratios = eps_ratios(scores)
    # keep the best min_channels of each DFC out of the pool
    pool = {}
    for d in graph.dfcs:
        order = sorted(range(d.channels), key=lambda j: (float(scores.scores[d][j]), j))
        pool[d] = order[:max(d.channels - min_channels, 0)]
    removals = cap_removals(model, graph, pool, ratios, p0 * target.kept("parameters"))
    return _one_shot(model, graph, removals, scores, f"{scores.method} (one shot)",
                     f"parameters at most {target.kept('parameters'):.0%} of the unpruned", name)


# --------------------------------------------------------------------------- iterative

@dataclass
class Attempt:
    """One try of IterTVSPrune: the eps used, the channels proposed, the val accuracy, the verdict."""
    iteration: int
    eps: float
    candidates: int
    capped: int
    sparsity: float
    val_accuracy: float | None
    accepted: bool
    note: str = ""


@dataclass
class IterResult(PruningResult):
    """IterTVSPrune's run (:class:`~pruning_lib.pruning.result.PruningResult`; ``report`` has the
    accepted steps, accuracy on ``evaluate``), plus every attempt, accepted or not, and the final eps."""
    attempts: list[Attempt] = field(default_factory=list)
    eps: float = 0.0

    @property
    def iterations(self) -> int:
        return len(self.attempts)


@earlier_positions(("data", "evaluate", "target"), lambda args: not isinstance(args[1], Target),
                   "iter_tvs_prune(model, target, data=..., evaluate=...)")
def iter_tvs_prune(model: nn.Module, target: Target, *, data: DataSource | None = None,
                   evaluate: Evaluator | DataSource | None = None, input_shape: tuple | None = None,
                   progress: bool = False, eps0: float = 0.5, eps_step: float = 0.025, max_step: float | None = None,
                   max_iterations: int = 100, distance: str = "hellinger_lb", stream_reduce: str = "mean",
                   per_class: int | None = None, batch_size: int = 250, name: str = "",
                   on_scores: Callable[[nn.Module, ChannelScores], None] | None = None) -> IterResult:
    """IterTVSPrune with the released code's faults fixed (TVSPrune note, "as released").

    ``target``: a :class:`~pruning_lib.Target`: ``parameters`` (the sparsity to reach), ``flops`` (the
    fraction of FLOPs to remove, each step capped so as not to pass it), and the accuracy gate
    ``accuracy_drop`` / ``min_accuracy``; ``channels`` and ``speedup`` are refused. ``data`` (a
    DataLoader of (inputs, labels), or a course split such as ``dist``) gives the samples of the scores;
    ``evaluate`` (a DataLoader, ``evaluate(model) -> float``, or a course split such as ``val``) the
    accuracy gate. Both are required: there is no default data set.

    Each iteration re-discovers the DFCs and RE-ESTIMATES the scores on the current pruned model
    from ``data``; proposes, in every DFC, the channels with s_j <= eps * mean(s); caps the proposal,
    lowest ratio first, so that at most ``max_step`` (fraction of the ORIGINAL parameters, optional)
    is removed per step and the total never passes the target; prunes physically; and accepts if the
    accuracy on ``evaluate`` (never test) passes the target's gate (no gate: every step is accepted). A
    rejection lowers eps by ``eps_step``. Stops when the target is reached (within one channel), eps
    reaches 0, nothing is under eps, or after ``max_iterations`` tries: every iteration either removes a
    channel or lowers eps, so it always ends. The caller's model is never modified.
    After a rejection the model is unchanged, so its scores are reused; ``on_scores(model, scores)``
    is called each time scores are estimated (to inspect them).
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be a pruning_lib.Target, e.g. Target(parameters=0.035, accuracy_drop=2.0); "
                        f"got {type(target).__name__}")
    target.only(("parameters", "flops", "accuracy_drop", "min_accuracy"), "iter_tvs_prune",
                "For a channel or speedup target use global_prune(model, target, criterion='tvs', data=...)")
    if target == Target():
        raise ValueError("give a target: Target(parameters=...) (fraction of parameters to remove, e.g. 0.035) "
                         "and/or an accuracy gate (accuracy_drop in points, min_accuracy in %)")
    if max_step is not None:
        _check_fraction(max_step, "max_step")
        if max_step == 0:
            raise ValueError("max_step=0 would never remove anything; use None for no per-step cap")
    if not (eps0 > 0 and eps_step > 0):
        raise ValueError(f"eps0 and eps_step must be > 0 (got {eps0}, {eps_step}); the released values are 0.5, 0.025")
    if not (isinstance(max_iterations, int) and max_iterations >= 1):
        raise ValueError(f"max_iterations must be a positive int, got {max_iterations!r}")
    data = sources.resolve(sources.required(data, "data", "iter_tvs_prune (the samples of the scores)"))
    evaluate = sources.resolve(sources.required(evaluate, "evaluate", "iter_tvs_prune (the accuracy gate)"))
    sources.check_decides(data, "data", "iter_tvs_prune")
    sources.check_decides(evaluate, "evaluate", "iter_tvs_prune")
    input_shape = sources.input_shape_for(input_shape, data, "iter_tvs_prune")
    evaluator, val_name = as_evaluator(evaluate)
    k = sources.num_classes(data)
    keep_p, keep_f = target.kept("parameters"), target.kept("flops")

    current = copy.deepcopy(model).eval()
    p0 = count_parameters(current)
    report = PruningReport("IterTVSPrune", name or type(model).__name__, accuracy_split=val_name,
                           info={"eps0": eps0, "eps_step": eps_step, "distance": distance,
                                 "stream_reduce": stream_reduce, "target_sparsity": target.parameters,
                                 "max_step": max_step})
    report.add(PruningStep(0, 0, p0, count_flops(current, input_shape), evaluator(current), note="unpruned"))
    stop = StopRule(target, report.base)
    report.info["floor"] = (target.min_accuracy if target.min_accuracy is not None else
                            report.base.accuracy - target.accuracy_drop if target.accuracy_drop is not None else None)
    attempts: list[Attempt] = []
    alive: dict[tuple, list[int]] = {}      # DFC name -> its channels' indices in the unpruned model
    removed: dict[tuple, list[int]] = {}
    eps, reason, it = eps0, "", 0
    rejected: set = set()            # proposals rejected on the current model (it has not changed since)
    graph = scores = first_graph = None

    bar = tqdm(total=max_iterations, desc="IterTVSPrune", leave=False, disable=not progress)
    while True:
        if it >= max_iterations:
            reason = f"max_iterations ({max_iterations}) reached"
            break
        if eps <= 1e-12:
            reason = "eps reached 0"
            break
        p_now = count_parameters(current)
        hit = stop.reached(report.final)
        if hit:
            reason = hit
            break
        if scores is None:           # re-estimated on the current model after every accepted step
            graph = discover(current, input_shape)
            if first_graph is None:
                first_graph = graph
                alive = {dfc_name(d): list(range(d.channels)) for d in graph.dfcs}
            scores = tvs_scores(current, graph, data=data, distance=distance, stream_reduce=stream_reduce,
                                per_class=per_class, batch_size=batch_size, num_classes=k)
            if on_scores is not None:
                on_scores(current, scores)
        cand = eps_candidates(scores, eps)
        if _count(cand) == 0:
            reason = f"no channel scores under eps={eps:.3f} x its layer mean"
            break
        ratios = eps_ratios(scores)
        target_bound = p0 * keep_p if keep_p is not None else 0.0
        step_bound = p_now - p0 * max_step if max_step is not None else 0.0
        bound = max(target_bound, step_bound)
        chosen = cap_removals(current, graph, cand, ratios, bound) if bound > 0 else cand
        if keep_f is not None and chosen:
            chosen = cap_flops(current, graph, chosen, ratios, report.base.flops * keep_f, input_shape)
        if not chosen and step_bound > target_bound:
            # the cheapest candidate costs more than max_step: take the single lowest-ratio one that fits the target
            one = cap_removals(current, graph, cand, ratios, target_bound)
            if one:
                d, j = min(((d, j) for d, c in one.items() for j in c), key=lambda t: (float(ratios[t[0]][t[1]]), t[0].index))
                chosen = {d: [j]}
        it += 1
        bar.update(1)
        if not chosen:
            attempts.append(Attempt(it, eps, _count(cand), 0, 1 - p_now / p0, None, False,
                                    "every candidate would pass the target"))
            reason = "target reached (within one channel)"
            break
        signature = tuple(sorted((d.index, tuple(c)) for d, c in chosen.items()))
        if signature in rejected:    # the same proposal on the same model: no need to test it again
            attempts.append(Attempt(it, eps, _count(cand), _count(chosen), 1 - p_now / p0, None, False,
                                    "same proposal as a rejected one"))
            eps = round(eps - eps_step, 10)
            continue
        candidate = prune(current, graph, chosen)
        p_new = count_parameters(candidate)
        step = PruningStep(len(report.steps), 0, p_new, count_flops(candidate, input_shape), evaluator(candidate),
                           note=f"eps={eps:.3f}")
        ok = not stop.rejects(step)
        attempts.append(Attempt(it, eps, _count(cand), _count(chosen), 1 - p_new / p0, step.accuracy, ok))
        if ok:
            current, scores, rejected = candidate, None, set()
            for d, c in chosen.items():
                key, gone = dfc_name(d), set(c)
                removed.setdefault(key, []).extend(alive[key][j] for j in c)
                alive[key] = [x for j, x in enumerate(alive[key]) if j not in gone]
            step.channels_removed = sum(len(c) for c in removed.values())
            report.add(step)
        else:
            rejected.add(signature)
            eps = round(eps - eps_step, 10)
    close_bar(bar, reason)
    return IterResult(current, report, first_graph, {k: sorted(c) for k, c in removed.items()}, reason,
                      len(report.steps) - 1, None, attempts, eps)


__all__ = ["eps_candidates", "cap_removals", "cap_flops", "tvs_prune", "prune_to_sparsity", "Attempt", "IterResult",
           "iter_tvs_prune"]

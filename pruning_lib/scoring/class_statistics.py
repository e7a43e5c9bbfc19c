"""Per-filter class-conditional statistics of intermediate outputs (TVSPrune, Murti et al., ICLR 2023).

TVSPrune models the output of filter j given class c as a Gaussian N(mu_{j,c}, var_{j,c}) and scores the
filter by the worst-separated pair of classes (``shared/papers/tvsprune.md``). This module estimates
those means and variances from a labelled split (the ``dist`` split: labelled samples from the data
distribution, never the training set or the loss) and turns them into filter scores.

How the statistics are taken (and the released code's faults avoided):
- from each named module's OUTPUT (default: every ``BatchNorm2d``, i.e. the BN that follows each conv,
  "the BN output" of the paper's code), all modules in ONE forward pass per batch, by forward hooks;
- in eval mode (running BN statistics, as the model is deployed), each submodule's mode restored after;
- each hook reduces the output to its summary at once and keeps a copy, never a view, so a later
  in-place op (``ReLU(inplace=True)``) cannot overwrite what was captured; hooks are always removed.

Summary of a filter's output map (N, C, H, W) -> samples per channel:
- ``"spatial_mean"`` (default): one number per image and channel, the mean over the H x W positions
  (the usual cheap summary; a 1-D Gaussian per class and filter; n = images of the class).
- ``"spatial_flatten"``: every spatial position of every image is a sample of the filter's 1-D output
  distribution (closer to the released code, which flattened maps; n = images x H x W; the samples
  within one image are correlated, so these variances mix within- and between-image spread).
Means and (unbiased) variances are accumulated in float64 by Chan's parallel update, batch by batch
(:class:`MomentAccumulator`). TVSPrune's stream sites (:mod:`pruning_lib.scoring.tvs`) use the plain
per-class sums of :class:`SumAccumulator` instead (variances divided by n): both estimators live
here, each kept as it was so that every stored score is reproduced exactly.

The samples come from any data source (:mod:`pruning_lib.sources`): a DataLoader of (inputs,
labels) batches, or a course split such as ``dist`` (labelled samples from the data distribution).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, Sequence

import torch
from torch import nn

from .. import sources
from ..modes import eval_mode
from ..sources import DataSource
from .distances import pairwise_min, resolve_score

SUMMARIES = ("spatial_mean", "spatial_flatten")


class ChannelMoments(NamedTuple):
    """Class-conditional moments of one module's output channels: ``means``/``vars`` (K classes, C
    channels), float64, and ``counts`` (K,) samples per class. Unpacks as ``means, vars, counts``."""
    means: torch.Tensor
    vars: torch.Tensor
    counts: torch.Tensor


@dataclass
class ClassStatistics:
    """Per-module class-conditional channel moments, from one pass over a labelled split."""
    modules: dict[str, ChannelMoments]
    classes: tuple
    summary: str
    split: str
    images: int                                 # images used (all classes)
    per_class: dict = field(default_factory=dict)   # class index -> images of that class

    def __getitem__(self, module: str) -> ChannelMoments:
        if module not in self.modules:
            raise KeyError(f"no statistics for {module!r}; collected for {list(self.modules)[:6]}"
                           f"{' ...' if len(self.modules) > 6 else ''}")
        return self.modules[module]

    def __repr__(self) -> str:
        return (f"ClassStatistics({len(self.modules)} modules, {len(self.classes)} classes, "
                f"{self.images} images of {self.split!r}, summary={self.summary!r})")


def default_modules(model: nn.Module) -> list[str]:
    """Names of every ``BatchNorm2d`` in the model (the BN output of each prunable conv)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def _summarise(out: torch.Tensor, summary: str, name: str) -> torch.Tensor:
    """(N, C, ...) output -> (samples, C) float64 COPY (never a view of ``out``)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"module {name!r} returned {type(out).__name__}, not a tensor; hook a module "
                        "whose output is a single (N, C, ...) tensor")
    if out.dim() < 2:
        raise ValueError(f"module {name!r} outputs shape {tuple(out.shape)}; need (N, C) or (N, C, H, W)")
    x = out.detach()
    if x.dim() == 2:
        return x.to(torch.float64, copy=True)
    if summary == "spatial_mean":
        return x.flatten(2).to(torch.float64).mean(2)                       # reduction -> new tensor
    # spatial_flatten: each position is a sample; (N, C, HW) -> (N*HW, C)
    return x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1]).to(torch.float64, copy=True)


class MomentAccumulator:
    """Chan's parallel update of per-class count, mean and sum of squared deviations, shape (K, C);
    :meth:`moments` gives unbiased variances (divided by n - 1)."""

    def __init__(self, k: int):
        self.k = k
        self.n = self.mean = self.m2 = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        k, c = self.k, x.shape[1]
        nb = torch.bincount(y, minlength=k).to(torch.float64)
        s = torch.zeros(k, c, dtype=torch.float64, device=x.device).index_add_(0, y, x)
        mb = s / nb.clamp_min(1)[:, None]
        m2b = torch.zeros_like(s).index_add_(0, y, (x - mb[y]) ** 2)
        if self.n is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        w = (nb / n.clamp_min(1))[:, None]
        self.mean = self.mean + delta * w
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n.clamp_min(1))[:, None]
        self.n = n

    def moments(self) -> ChannelMoments:
        var = self.m2 / (self.n - 1).clamp_min(1)[:, None]
        return ChannelMoments(self.mean.cpu(), var.cpu(), self.n.long().cpu())


class SumAccumulator:
    """Per-class sums and sums of squares of (N, C) float64 samples, by one-hot products; gives the
    class means and the biased variances (divided by n, clamped at 0) for given class counts."""

    def __init__(self, k: int):
        self.k = k
        self.sums = self.sq = None

    def add(self, z: torch.Tensor, y: torch.Tensor) -> None:
        onehot = torch.nn.functional.one_hot(y, self.k).to(torch.float64)       # (N, K)
        s, q = onehot.T @ z, onehot.T @ (z * z)
        if self.sums is None:
            self.sums, self.sq = s, q
        else:
            self.sums += s
            self.sq += q

    def moments(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, variances), each (K, C), for ``counts`` samples per class."""
        n = counts.clamp_min(1)[:, None]
        mean = self.sums / n
        return mean, (self.sq / n - mean * mean).clamp_min(0.0)


@torch.no_grad()
def collect_statistics(model: nn.Module, data: DataSource | None = None,
                       modules: Sequence[str] | None = None, per_class: int | None = None,
                       batch_size: int = 250, summary: str = "spatial_mean", seed: int = 0,
                       device: torch.device | str | None = None, progress: bool = False,
                       num_classes: int | None = None) -> ClassStatistics:
    """Class-conditional mean and variance of every channel of each module's output, on ``data``.

    ``data``: a DataLoader of (inputs, labels) batches or a course split (or its name; ``batch_size``
    batches a split). ``modules``: module names (default: every BatchNorm2d). ``per_class``: use that
    many images of each class of a split (a seeded, class-balanced subset; default: all of it, e.g.
    200 per class of ``dist``). ``num_classes``: default the split's classes, or 1 + the largest
    label of a loader (one extra pass). ``summary``: ``"spatial_mean"`` or ``"spatial_flatten"``
    (see the module docstring). The model runs in eval mode, all modules in one forward pass per
    batch; it is returned unchanged (each submodule's mode restored, hooks removed)."""
    if summary not in SUMMARIES:
        raise ValueError(f"unknown summary {summary!r}; choose one of {SUMMARIES}")
    data = sources.resolve(sources.required(data, "data", "collect_statistics"))
    k = num_classes or sources.num_classes(data)
    if per_class is not None and sources.is_split(data):
        counts = torch.bincount(data.y, minlength=k)
        if per_class < 2:
            raise ValueError(f"per_class={per_class}: a variance needs at least 2 images per class")
        if per_class > int(counts.min()):
            raise ValueError(f"per_class={per_class} but split {data.name!r} has only {int(counts.min())} "
                             f"images of its smallest class; lower per_class or use a larger split")
    data = sources.per_class_subset(data, per_class, seed)
    named = dict(model.named_modules())
    names = list(modules) if modules is not None else default_modules(model)
    if not names:
        raise ValueError("no modules to hook: the model has no BatchNorm2d; pass modules=[...] by name")
    missing = [n for n in names if n not in named or n == ""]
    if missing:
        raise ValueError(f"modules {missing} are not in the model; valid names look like "
                         f"{[n for n in named if n][:5]} (see model.named_modules())")
    device = torch.device(device) if device else next(model.parameters()).device
    stats = OutputStatistics(model, names, k, summary)
    images = observe(model, data, [stats], k=k, batch_size=batch_size, device=device,
                     progress="class statistics" if progress else None)
    return stats.result(data, images)


class BatchObserver(Protocol):
    """What :func:`observe` runs: ``attach`` installs hooks on the model (their handles returned),
    ``start`` and ``finish`` are called with each batch's labels before and after its forward pass."""

    def attach(self) -> list: ...

    def start(self, y: torch.Tensor) -> None: ...

    def finish(self, y: torch.Tensor) -> None: ...


@torch.no_grad()
def observe(model: nn.Module, data: DataSource, observers: Sequence[BatchObserver], *, k: int,
            batch_size: int, device: torch.device, progress: str | None = None) -> torch.Tensor:
    """One eval-mode forward pass over ``data`` feeding every observer (so several statistics cost
    one pass); returns the images seen per class (K,). Hooks are removed and each submodule's mode
    restored whatever happens. ``progress``: a tqdm description, or None for no bar."""
    images = torch.zeros(k, dtype=torch.long)
    handles: list = []
    try:
        with eval_mode(model):
            for o in observers:
                handles += o.attach()
            it = sources.iter_batches(data, batch_size)
            if progress:
                from tqdm.auto import tqdm
                it = tqdm(it, total=sources.batch_count(data, batch_size), desc=progress, leave=False)
            for x, y in it:
                for o in observers:
                    o.start(y)
                model(x.to(device))
                images += torch.bincount(y.cpu(), minlength=k)
                for o in observers:
                    o.finish(y)
    finally:
        for h in handles:
            h.remove()
    return images


class OutputStatistics:
    """Per-class moments of each named module's output, taken by forward hooks batch by batch (the
    observer behind :func:`collect_statistics`)."""

    def __init__(self, model: nn.Module, names: Sequence[str], k: int, summary: str):
        self.named = dict(model.named_modules())
        self.names, self.summary = list(names), summary
        self.acc = {n: MomentAccumulator(k) for n in self.names}
        self.current: dict[str, torch.Tensor] = {}

    def _hook(self, name: str):
        def fn(_module, _inputs, out):
            if name in self.current:
                raise RuntimeError(f"module {name!r} runs more than once per forward pass (a shared "
                                   "module); its outputs are ambiguous, hook a module used once")
            self.current[name] = _summarise(out, self.summary, name)
        return fn

    def attach(self) -> list:
        return [self.named[n].register_forward_hook(self._hook(n)) for n in self.names]

    def start(self, y: torch.Tensor) -> None:
        self.current.clear()

    def finish(self, y: torch.Tensor) -> None:
        for n in self.names:
            if n not in self.current:
                raise RuntimeError(f"module {n!r} was not called in the forward pass; hook modules "
                                   "that run on every input")
            feats = self.current[n]
            yy = y.to(feats.device)
            reps = feats.shape[0] // yy.shape[0]          # spatial_flatten: H*W samples per image
            self.acc[n].add(feats, yy.repeat_interleave(reps) if reps > 1 else yy)

    def result(self, data: DataSource, images: torch.Tensor) -> ClassStatistics:
        if not int(images.sum()):
            raise sources.DataSourceError(f"the data source {sources.source_name(data)!r} yielded no samples: "
                                          "class statistics need labelled batches")
        k = len(images)
        classes = tuple(data.classes) if sources.is_split(data) else tuple(range(k))
        per = {c: int(v) for c, v in enumerate(images)}
        return ClassStatistics({n: self.acc[n].moments() for n in self.names}, classes, self.summary,
                               sources.source_name(data), int(images.sum()), per)


DISTANCES = ("hellinger_lb", "tv_exact", "mean_gap", "hellinger")


def filter_scores(stats: ClassStatistics, distance: str = "hellinger_lb",
                  modules: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """TVSPrune's filter score per channel of each module: min over all class pairs c < c' of the
    distance between N(mu_c, var_c) and N(mu_c', var_c') (float64 tensor of length C).

    ``distance``: ``"hellinger_lb"`` (H^2, the lower bound on TV, the paper's usable score),
    ``"tv_exact"`` (exact 1-D TV), ``"mean_gap"`` (|mu_c - mu_c'|, the released code's score) or
    ``"hellinger"`` (H). A low score means some pair of classes looks alike to this filter."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
    fn = resolve_score(distance)
    names = list(modules) if modules is not None else list(stats.modules)
    return {n: observed_pairwise_min(fn, stats[n].means, stats[n].vars, stats[n].counts, f"the statistics of {n}")
            for n in names}


def observed_pairwise_min(fn, means: torch.Tensor, vars: torch.Tensor, counts: torch.Tensor,
                          where: str) -> torch.Tensor:
    """:func:`~pruning_lib.scoring.distances.pairwise_min` over the pairs of classes that HAVE samples
    (``counts`` > 0): a class without samples has no distribution, and two of them would make every
    channel's minimum 0. With one observed class there is no pair: every channel scores +inf (the
    minimum over no pair; nothing is found indistinguishable), with a warning from :func:`sources.observed`."""
    cls = sources.observed(counts, where)
    if len(cls) < 2:
        return torch.full((means.shape[1],), float("inf"), dtype=torch.float64)
    return pairwise_min(fn, means[cls], vars[cls])


__all__ = ["ChannelMoments", "ClassStatistics", "MomentAccumulator", "SumAccumulator", "SUMMARIES", "DISTANCES", "default_modules",
           "observed_pairwise_min",
           "collect_statistics", "filter_scores", "observe", "BatchObserver", "OutputStatistics"]

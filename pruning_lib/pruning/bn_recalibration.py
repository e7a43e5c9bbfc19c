"""BatchNorm recalibration after pruning: re-estimate the running statistics on unlabelled samples
(the "BNFix" of the TVSPrune authors' follow-up; Murti et al.)."""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .. import sources
from ..modes import kept_modes
from ..sources import DataSource
from ..layers import is_batchnorm
from ..legacy import earlier_positions


@earlier_positions(("data", "inplace", "batch_size", "per_class", "augment", "cutout", "passes", "seed", "variance"),
                   lambda args: True, "bn_recalibrate(model, data=...)")
@torch.no_grad()
def bn_recalibrate(model: nn.Module, *, data: DataSource | None = None, inplace: bool = False,
                   batch_size: int = 250, per_class: int | None = None, augment: bool | None = None,
                   cutout: int = 0, passes: int = 2, seed: int = 0, variance: bool = True) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``data`` after pruning (the
    "BNFix" of the TVSPrune authors' follow-up): reset the running statistics, forward the samples
    with only the BNs in train mode and ``momentum=None`` (a plain average over all batches), then
    return to eval mode. Weights are untouched; copy unless ``inplace``. A BN that no sample reaches
    (off the eval-mode forward path, or every batch skipped for NaN inputs) keeps its statistics,
    with a warning; BNs without running statistics are skipped; an empty source is a
    DataSourceError (nothing is changed). Every submodule's train/eval mode is restored.

    ``data``: a DataLoader of (inputs, labels) (its batches as they come: augment in its dataset) or
    a course split (name). ``augment`` (the default for a split; a loader is not augmented here):
    show the samples as training did (random crop and flip, plus Cutout of
    side ``cutout`` if the checkpoint was trained with it; ``passes`` passes, seeded), because the
    running statistics the weights were trained with describe augmented inputs (notebook 04 measures
    what plain images cost on the unpruned model).

    ``variance=False`` keeps the trained running variances and replaces only the means (estimated in the
    same passes). Removing a layer's input channels removes their share of its output variance;
    re-estimating the variance then scales the surviving signal back up, against the identity path
    of a residual block (notebook 04 compares the two after IterTVSPrune)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    data = sources.per_class_subset(sources.required(data, "data", "bn_recalibrate"), per_class)
    if augment is None:
        augment = sources.is_split(data)
    target = model if inplace else copy.deepcopy(model)
    bns = [m for m in target.modules() if is_batchnorm(m)]
    if not bns:
        raise ValueError("the model has no BatchNorm layer to recalibrate")
    bns = [m for m in bns if m.track_running_stats and m.running_mean is not None]
    if not bns:
        raise ValueError("no BatchNorm of the model keeps running statistics (track_running_stats=False): "
                         "there is nothing to recalibrate; such a BN normalises by each batch's own statistics")
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(),
              None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    reached = {id(m): 0 for m in bns}
    handles = [m.register_forward_pre_hook(lambda mod, _: reached.__setitem__(id(mod), reached[id(mod)] + 1))
               for m in bns]
    device = next(target.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    batches = skipped = 0
    ok = False
    try:
        with kept_modes(target):
            target.eval()
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            for _ in range(passes if augment else 1):
                for i, (x, _) in enumerate(sources.iter_batches(data, batch_size, train_augment=augment, generator=gen,
                                                                 cutout_size=cutout if augment else 0, finite=False)):
                    batches += 1
                    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                        skipped += 1
                        warnings.warn(f"bn_recalibrate: batch {i} of the data source holds NaN or infinite inputs; "
                                      "it is skipped (clean the data to use it)", RuntimeWarning, stacklevel=4)
                        continue
                    target(x.to(device))
        if not batches:
            raise sources.DataSourceError("bn_recalibrate: the data source yielded no batch, so no statistic can "
                                          "be estimated; give a DataLoader with samples (the BatchNorms are "
                                          "left as they were)")
        ok = True
    finally:
        for h in handles:
            h.remove()
        unseen = []
        for m, (mom, mean, var, nbt) in zip(bns, saved):
            m.momentum = mom
            if not ok or not reached[id(m)]:          # no sample reached it: keep what it had
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                if nbt is not None:
                    m.num_batches_tracked.copy_(nbt)
                unseen.append(m)
            elif not variance:
                m.running_var.copy_(var)
    if not inplace:
        target.eval()                               # a new model comes back in eval mode
    if ok and unseen:
        names = [n for n, m in target.named_modules() if any(m is u for u in unseen)]
        warnings.warn(f"bn_recalibrate: no {'finite ' if skipped else ''}sample reached {len(names)} BatchNorm(s) "
                      f"({', '.join(names[:4])}{' ...' if len(names) > 4 else ''}); they keep their statistics "
                      "(a BN off the eval-mode forward path, or every batch skipped)", RuntimeWarning, stacklevel=4)
    return target


__all__ = ["bn_recalibrate"]

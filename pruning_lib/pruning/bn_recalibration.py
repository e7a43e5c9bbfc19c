"""BatchNorm recalibration after pruning: re-estimate the running statistics on unlabelled samples
(the "BNFix" of the TVSPrune authors' follow-up; Murti et al.)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import sources
from ..sources import DataSource
from ..surgery.handlers import is_batchnorm


@torch.no_grad()
def bn_recalibrate(model: nn.Module, data: DataSource = "dist", inplace: bool = False,
                   batch_size: int = 250, per_class: int | None = None, augment: bool | None = None,
                   cutout: int = 0, passes: int = 2, seed: int = 0, variance: bool = True) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``data`` after pruning (the
    "BNFix" of the TVSPrune authors' follow-up): reset the running statistics, forward the samples
    with only the BNs in train mode and ``momentum=None`` (a plain average over all batches), then
    return to eval mode. Weights are untouched; copy unless ``inplace``.

    ``data``: a DataLoader of (inputs, labels) (its batches as they come: augment in its dataset) or
    a course split (name). ``augment`` (the default for a split; a loader is not augmented here):
    show the samples as training did (random crop and flip, plus Cutout of
    side ``cutout`` if the checkpoint was trained with it; ``passes`` passes, seeded), because the
    running statistics the weights were trained with describe augmented inputs: measured on our
    ResNet-20, recalibrating the UNPRUNED model on plain images costs about 3 points of val accuracy,
    with the training augmentation about 0.2.

    ``variance=False`` keeps the trained running variances and replaces only the means (estimated in the
    same passes). Removing a layer's input channels removes their share of its output variance;
    re-estimating the variance then scales the surviving signal back up, against the identity path
    of a residual block. Measured on our 91 % ResNet-56 after IterTVSPrune at 3.5 % sparsity: test
    accuracy 90.32 % stale, 86.88 % fully recalibrated, 90.51 % with the means only (notebook 04)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    data = sources.per_class_subset(data, per_class)
    if augment is None:
        augment = sources.is_split(data)
    target = model if inplace else copy.deepcopy(model)
    bns = [m for m in target.modules() if is_batchnorm(m)]
    if not bns:
        raise ValueError("the model has no BatchNorm layer to recalibrate")
    momenta = [m.momentum for m in bns]
    trained_vars = [m.running_var.clone() for m in bns]
    device = next(target.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    target.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for _ in range(passes if augment else 1):
            for x, _ in sources.iter_batches(data, batch_size, train_augment=augment, generator=gen,
                                             cutout_size=cutout if augment else 0):
                target(x.to(device))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        target.eval()
    if not variance:
        for m, var in zip(bns, trained_vars):
            m.running_var.copy_(var)
    return target


__all__ = ["bn_recalibrate"]

"""Batches of a split held in memory: normalisation, and the training augmentation (crop, flip, Cutout)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import MEAN, STD
from .splits import CIFAR10Split


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float32, standardised with the CIFAR-10 channel statistics."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x.float().div_(255) - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding ``pad``) and horizontal flip of a uint8 batch.

    Vectorised over the batch: each image gets its own crop offset and flip, at tensor speed.
    """
    n, _, h, w = x.shape
    dev = x.device                 # random numbers come from the (CPU) generator, indexing runs on x's device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]          # (n,1,h,1)
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]          # (n,1,1,w)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image at a random centre (DeVries & Taylor, 2017).

    The square covers rows/columns ``[c - size//2, c - size//2 + size)`` around a centre ``c`` drawn
    uniformly over the image, clipped at the border (so near an edge it is smaller).
    Applied to normalised images, zero is the data mean. Vectorised over the batch."""
    if size < 0:
        raise ValueError(f"cutout size must be >= 0 pixels (0 disables it), got {size}")
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n,), generator=generator).to(dev)[:, None, None]
    cx = torch.randint(0, w, (n,), generator=generator).to(dev)[:, None, None]
    dy = torch.arange(h, device=dev)[None, :, None] - cy + size // 2                  # (n,h,1)
    dx = torch.arange(w, device=dev)[None, None, :] - cx + size // 2                  # (n,1,w)
    inside = (dy >= 0) & (dy < size) & (dx >= 0) & (dx < size)                        # (n,h,w)
    return x.masked_fill(inside[:, None], 0.0)


def batches(split: CIFAR10Split, batch_size: int, shuffle: bool = False, train_augment: bool = False,
            generator: torch.Generator | None = None, drop_last: bool = False, cutout_size: int = 0):
    """Yield (normalised float images, labels) batches from a split held in memory.

    ``train_augment``: random crop and flip per image; ``cutout_size`` > 0 adds Cutout."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size].to(split.x.device)
        x = split.x[idx]
        if train_augment:
            x = augment(x, generator)
        x = normalize(x)
        if train_augment and cutout_size:
            x = cutout(x, cutout_size, generator)
        yield x, split.y[idx.to(split.y.device)]


__all__ = ["normalize", "augment", "cutout", "batches"]

"""The course's fixed, disjoint, class-balanced splits of CIFAR-10 (train, dist, val, test) as tensors."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .common import CLASSES, DIST_PER_CLASS, SPLIT_SEED, SPLITS, VAL_PER_CLASS
from .loading import _load_tensors


@dataclass
class CIFAR10Split:
    """One split as tensors: ``x`` uint8 (N, 3, 32, 32), ``y`` int64 (N,)."""
    name: str
    x: torch.Tensor
    y: torch.Tensor
    copy: str                      # "official" (lossless) or "jpeg" (the JPEG-compressed copy)
    classes: tuple = CLASSES

    def __len__(self) -> int:
        return len(self.y)

    @property
    def reporting_only(self) -> bool:
        """The test split and its subsets report results and never decide anything (a gate, scores):
        the course's rule, read by the pruning verbs through the data-source protocol."""
        return self.name.partition("[")[0] == "test"

    def __repr__(self) -> str:
        return f"CIFAR10Split({self.name!r}, n={len(self)}, copy={self.copy!r})"

    def to(self, device) -> "CIFAR10Split":
        """The same split with its tensors on ``device`` (a no-op when they are there already)."""
        return CIFAR10Split(self.name, self.x.to(device), self.y.to(device), self.copy, self.classes)

    def subset(self, n: int, seed: int = 0) -> "CIFAR10Split":
        """A class-balanced subset of ``n`` images (n divisible by the class count)."""
        per_class, rest = divmod(n, len(self.classes))
        if rest:
            raise ValueError(f"subset size {n} must be a multiple of {len(self.classes)} classes")
        idx = balanced_indices(self.y, per_class, seed)
        return CIFAR10Split(f"{self.name}[{n}]", self.x[idx], self.y[idx], self.copy, self.classes)


def balanced_indices(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """``per_class`` indices of each class, drawn by a seeded permutation, sorted."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than {per_class} requested")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def split_indices(train_y: torch.Tensor, dist_per_class: int = DIST_PER_CLASS,
                  val_per_class: int = VAL_PER_CLASS, seed: int = SPLIT_SEED) -> dict:
    """Disjoint, class-balanced index sets of the training images: train / dist / val."""
    held = balanced_indices(train_y, dist_per_class + val_per_class, seed)
    g = torch.Generator().manual_seed(seed + 1)
    dist, val = [], []
    for c in range(int(train_y.max()) + 1):
        idx = held[train_y[held] == c]
        idx = idx[torch.randperm(len(idx), generator=g)]
        dist.append(idx[:dist_per_class])
        val.append(idx[dist_per_class:])
    mask = torch.ones(len(train_y), dtype=torch.bool)
    mask[held] = False
    return {"train": torch.nonzero(mask).flatten(),
            "dist": torch.cat(dist).sort().values,
            "val": torch.cat(val).sort().values}


def load_split(name: str, data_dir: Path | str | None = None, copy: str | None = None) -> CIFAR10Split:
    """One of ``train``, ``dist``, ``val``, ``test`` as tensors (decoding and caching on first use)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
    t = _load_tensors(data_dir, copy)
    if name == "test":
        return CIFAR10Split("test", t["test_x"], t["test_y"], t["copy"])
    idx = split_indices(t["train_y"])[name]
    return CIFAR10Split(name, t["train_x"][idx], t["train_y"][idx], t["copy"])


__all__ = ["CIFAR10Split", "balanced_indices", "split_indices", "load_split"]

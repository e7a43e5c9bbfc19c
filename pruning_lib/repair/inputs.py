"""Unlabelled input batches from any data source: what the repairs read (no labels are needed).

ModHiFi's "distributional access" (Kashyap et al., NeurIPS 2025, section 2.2) means samples without
labels. Accepted here: a ``DataLoader`` (or any re-iterable) whose items are tensors or tuples whose
first entry is the input tensor, a tensor of inputs, or a course split / its name (normalised as the
course normalises them).
"""
from __future__ import annotations

from typing import Iterator

import torch

from .. import sources

__all__ = ["iter_inputs", "RepairDataError"]


class RepairDataError(TypeError):
    """A data source the repairs cannot read (the message says the fix)."""


def _split_batches(data, batch_size: int) -> Iterator[torch.Tensor] | None:
    """Normalised batches of a course split (given by name or as a ``CIFAR10Split``), else None; the
    course is imported only for a split name (a split object means it already is)."""
    data = sources.resolve(data)
    if not sources.is_split(data):
        return None
    from ..course.data import batches
    return (x for x, _ in batches(data, batch_size))


def iter_inputs(data, batch_size: int = 250, limit: int | None = None, *, what: str = "data") -> Iterator[torch.Tensor]:
    """The input tensors of ``data``, batch by batch, at most ``limit`` samples in all.

    ``batch_size`` batches a tensor or a course split; a loader's batches come as it makes them."""
    if data is None:
        raise RepairDataError(f"{what}=None: the repairs need unlabelled samples; pass a DataLoader, a tensor of "
                              "inputs, a course split name such as 'dist', or synthesised images "
                              "(pruning_lib.repair.synthesize_images(model).loader())")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: give a positive number of samples, or None for all of them")
    split = _split_batches(data, batch_size)
    if split is not None:
        source = split
    elif isinstance(data, torch.Tensor):
        source = iter(data.split(batch_size))
    else:
        if isinstance(data, (bytes, dict)) or not hasattr(data, "__iter__"):
            raise RepairDataError(f"{what} is a {type(data).__name__}; pass a DataLoader (items: input tensors or "
                                  "(input, ...) tuples), a tensor of inputs or a course split name")
        if iter(data) is data:
            raise RepairDataError(f"{what} is a one-shot iterator ({type(data).__name__}), but the repairs read it "
                                  "several times; pass a DataLoader or a list of batches")
        source = iter(data)
    seen = 0
    for i, batch in enumerate(source):
        x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        if not isinstance(x, torch.Tensor):
            raise RepairDataError(f"batch {i} of {what} holds a {type(x).__name__}, not an input tensor; give "
                                  "batches that are tensors or (inputs, ...) tuples")
        if limit is not None and seen + len(x) > limit:
            x = x[:limit - seen]
        if len(x):
            yield x
        seen += len(x)
        if limit is not None and seen >= limit:
            return
    if seen == 0:
        raise RepairDataError(f"{what} yielded no samples")

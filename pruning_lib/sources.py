"""Data as the ecosystem passes it: any iterable of ``(inputs, labels)`` batches, or an ``evaluate`` callable.

Wherever an algorithm needs samples (TVSPrune's class statistics, BN recalibration, an accuracy
gate), it takes a *data source*: a ``torch.utils.data.DataLoader`` (or any re-iterable of
``(inputs, labels)`` pairs of tensors), or, for the course, a :class:`~pruning_lib.course.data.CIFAR10Split`
or the name of one (``"dist"``, ``"val"``...), whose batches apply CIFAR-10's normalisation.
Wherever an algorithm needs an accuracy, it also takes an ``evaluate(model) -> float`` callable.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from .course.data import CIFAR10Split, batches, load_split

DataSource = Any          # DataLoader | Iterable[(Tensor, Tensor)] | CIFAR10Split | str
Evaluator = Callable[[nn.Module], float]


class DataSourceError(TypeError):
    """A data source that is not an iterable of (inputs, labels) batches (the message says the fix)."""


def is_split(data) -> bool:
    """Whether ``data`` is one of the course's CIFAR-10 splits (batched and normalised by the course)."""
    return isinstance(data, CIFAR10Split)


def resolve(data: DataSource) -> DataSource:
    """``data`` with a course split name (``"dist"``, ``"val"``, ...) loaded; anything else as it is."""
    if isinstance(data, str):
        return load_split(data)
    return data


def _check_iterable(data) -> None:
    if is_split(data):
        return
    if isinstance(data, (torch.Tensor, bytes, dict)) or not isinstance(data, Iterable):
        raise DataSourceError(
            f"expected a data source: a DataLoader (or any iterable of (inputs, labels) batches), a course "
            f"split or its name; got {type(data).__name__}. Wrap tensors as "
            "DataLoader(TensorDataset(inputs, labels), batch_size=...)")


def _checked_batch(batch, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise DataSourceError(
            f"batch {i} of the data source is a {type(batch).__name__}, not an (inputs, labels) pair; give a "
            "DataLoader over a dataset whose items are (input, label) pairs (e.g. a TensorDataset of both)")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor):
        raise DataSourceError(f"batch {i}: the inputs are a {type(x).__name__}, not a tensor; convert them "
                              "in the dataset (e.g. torchvision.transforms.ToTensor())")
    if not isinstance(y, torch.Tensor):
        raise DataSourceError(f"batch {i}: the labels are a {type(y).__name__}, not a tensor of class indices; "
                              "return integer labels from the dataset (the default collate makes a tensor)")
    return x, y


def iter_batches(data: DataSource, batch_size: int = 250, *, train_augment: bool = False,
                 generator: torch.Generator | None = None, cutout_size: int = 0
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(inputs, labels)`` batches of ``data``. ``batch_size`` and the augmentation options apply
    to a course split (its own batching, which normalises); a loader's batches come as it makes them."""
    data = resolve(data)
    if is_split(data):
        yield from batches(data, batch_size, train_augment=train_augment, generator=generator,
                                     cutout_size=cutout_size)
        return
    if train_augment or cutout_size:
        raise DataSourceError("augmentation options apply to the course's CIFAR10Split only; put the "
                              "augmentation in your DataLoader's dataset transforms instead")
    _check_iterable(data)
    for i, batch in enumerate(data):
        yield _checked_batch(batch, i)


def _reiterable(data) -> None:
    if iter(data) is data:
        raise DataSourceError(f"{type(data).__name__} can be iterated only once, but it is read more than "
                              "once here; pass a DataLoader or a list of (inputs, labels) batches")


def num_classes(data: DataSource) -> int:
    """Number of classes: a split's class list, else 1 + the largest label (one pass over ``data``)."""
    data = resolve(data)
    if is_split(data):
        return len(data.classes)
    _check_iterable(data)
    _reiterable(data)
    top = -1
    for _, y in iter_batches(data):
        if y.numel():
            top = max(top, int(y.max()))
    if top < 1:
        raise DataSourceError("the data source has fewer than 2 classes among its labels; class-conditional "
                              "statistics need labelled samples of at least two classes")
    return top + 1


def source_name(data: DataSource) -> str:
    """A split's name, or the type name of any other source (for reports)."""
    return data if isinstance(data, str) else getattr(data, "name", type(data).__name__)


def per_class_subset(data: DataSource, per_class: int | None, seed: int = 0) -> DataSource:
    """A class-balanced subset of a course split (``per_class`` images of each class); for another
    source, ``per_class`` must be None (subset your dataset before making its loader)."""
    data = resolve(data)
    if per_class is None:
        return data
    if not is_split(data):
        raise DataSourceError("per_class subsets a course CIFAR10Split; for a DataLoader, build it over a "
                              "subset of your dataset (torch.utils.data.Subset) and pass per_class=None")
    return data.subset(per_class * len(data.classes), seed=seed)


def first_input(data: DataSource) -> torch.Tensor:
    """The inputs of the first batch (e.g. to find the input shape of a user's model)."""
    for x, _ in iter_batches(data):
        return x
    raise DataSourceError("the data source yielded no batch")


def as_evaluator(evaluate: Evaluator | DataSource, batch_size: int = 500) -> tuple[Evaluator, str]:
    """``evaluate`` as an ``evaluate(model) -> float`` callable (accuracy in % on a data source), and
    its name for reports."""
    if callable(evaluate) and not isinstance(evaluate, nn.Module) and not is_split(evaluate):
        return evaluate, getattr(evaluate, "__name__", type(evaluate).__name__)
    from .measure.accuracy import evaluate as accuracy
    data = resolve(evaluate)
    _check_iterable(data)
    return (lambda m: accuracy(m, data, batch_size=batch_size)), source_name(data)


def batch_count(data: DataSource, batch_size: int) -> int | None:
    """How many batches ``data`` gives (None when unknown), for progress bars."""
    data = resolve(data)
    if is_split(data):
        return math.ceil(len(data) / batch_size)
    try:
        return len(data)
    except TypeError:
        return None


__all__ = ["DataSource", "Evaluator", "DataSourceError", "iter_batches", "num_classes", "source_name",
           "per_class_subset", "as_evaluator", "is_split", "resolve", "first_input", "batch_count"]

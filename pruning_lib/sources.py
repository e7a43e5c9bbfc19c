"""Data as the ecosystem passes it: any iterable of ``(inputs, labels)`` batches, or an ``evaluate`` callable.

Wherever an algorithm needs samples (TVSPrune's class statistics, BN recalibration, an accuracy
gate), it takes a *data source*. The protocol a data source meets, checked batch by batch by
:func:`iter_batches` (a :class:`DataSourceError` names the batch and the fix otherwise):

* it is re-iterable (a ``torch.utils.data.DataLoader``, a list of batches; a generator is read
  once only, which is refused where a verb reads the data twice);
* each batch is an ``(inputs, labels)`` pair (further items are ignored): ``inputs`` a tensor whose
  first dim is the batch, finite (no NaN or infinity); ``labels`` a 1-D integer tensor of class
  indices >= 0, one per input (not one-hot, not a column, not floats);
* it yields at least one batch where a statistic or an accuracy is computed from it;
* it may declare ``reporting_only = True`` (the course's test split and its subsets do): a verb
  that DECIDES on data (an accuracy gate, scores) refuses it (:func:`check_decides`).

The course's CIFAR-10 splits (:class:`~pruning_lib.course.data.CIFAR10Split`, or the name of one,
``"dist"``, ``"val"``...) are the other accepted source: they batch and normalise themselves. This
module does not import the course at import time; a split name loads it when first used.

Wherever an algorithm needs an accuracy, it takes an ``evaluate(model) -> float`` callable or a
data source, held to one contract (:class:`pruning_lib.measure.accuracy.Accuracy`): a finite
percentage in [0, 100].
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

import sys

DataSource = Any          # DataLoader | Iterable[(Tensor, Tensor)] | CIFAR10Split | str
Evaluator = Callable[[nn.Module], float]


class DataSourceError(TypeError):
    """A data source that is not an iterable of (inputs, labels) batches (the message says the fix)."""


def required(data: DataSource | None, argument: str, verb: str) -> DataSource:
    """``data``, or a ValueError naming ``argument`` of ``verb`` when it is missing: the generic
    verbs have no default data (a course split name such as ``"dist"`` is passed explicitly)."""
    if data is None:
        raise ValueError(f"{verb} needs {argument}=: a DataLoader of (inputs, labels) batches of your data "
                         "(or, in the course, a split such as load_split('dist')); there is no default data set")
    return data


def check_decides(data, argument: str, verb: str) -> None:
    """Refuse a source that declares itself ``reporting_only`` where ``verb`` decides on it."""
    if getattr(data, "reporting_only", False) is True:
        raise ValueError(f"{verb}: {argument}={source_name(data)!r} is for reporting only (the test split); "
                         "decide on a held-out validation source instead (in the course: 'val' to gate, "
                         "'dist' to score)")


def is_split(data) -> bool:
    """Whether ``data`` is one of the course's CIFAR-10 splits (batched and normalised by the course).
    (Without the course imported, nothing can be one: the check does not import it.)"""
    course = sys.modules.get(__package__ + ".course.data")
    return course is not None and isinstance(data, course.CIFAR10Split)


def resolve(data: DataSource) -> DataSource:
    """``data`` with a course split name (``"dist"``, ``"val"``, ...) loaded; anything else as it is."""
    if isinstance(data, str):
        from .course.data import load_split          # the course, only when a split is named
        return load_split(data)
    return data


def check_iterable(data) -> None:
    if is_split(data):
        return
    if isinstance(data, (torch.Tensor, bytes, dict)) or not isinstance(data, Iterable):
        raise DataSourceError(
            f"expected a data source: a DataLoader (or any iterable of (inputs, labels) batches), a course "
            f"split or its name; got {type(data).__name__}. Wrap tensors as "
            "DataLoader(TensorDataset(inputs, labels), batch_size=...)")


def _checked_batch(batch, i: int, finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``i`` as ``(inputs, labels)``: labels a 1-D integer tensor of class indices (made int64),
    one per input; with ``finite``, inputs without NaN or infinity. The data-source contract."""
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
    if y.dim() != 1:
        fix = ("labels.squeeze(1)" if y.dim() == 2 and y.shape[1] == 1 else
               "labels.argmax(1) for one-hot labels" if y.dim() == 2 else "one class index per sample")
        raise DataSourceError(f"batch {i}: the labels have shape {tuple(y.shape)}; labels must be a 1-D tensor "
                              f"of class indices, one per input ({fix})")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataSourceError(f"batch {i}: the labels are {y.dtype}; labels must be integer class indices "
                              "(labels.long(); for one-hot or probability labels, labels.argmax(1))")
    if x.dim() == 0 or len(x) != len(y):
        raise DataSourceError(f"batch {i}: {tuple(x.shape)[:1] or 'no'} inputs but {len(y)} labels; give one "
                              "label per input (the first dim of both is the batch)")
    if y.numel() and int(y.min()) < 0:
        raise DataSourceError(f"batch {i}: a label is {int(y.min())}; labels are class indices 0, 1, ...")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise DataSourceError(f"batch {i}: the inputs hold NaN or infinite values; clean the data (e.g. "
                              "torch.nan_to_num in the dataset's transform) or drop those samples")
    return x, y.long()


def iter_batches(data: DataSource, batch_size: int = 250, *, train_augment: bool = False,
                 generator: torch.Generator | None = None, cutout_size: int = 0, finite: bool = True
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(inputs, labels)`` batches of ``data``, each checked against the data-source contract
    (labels: 1-D integer class indices, one per input; inputs finite unless ``finite=False``).
    ``batch_size`` and the augmentation options apply to a course split (its own batching, which
    normalises); a loader's batches come as it makes them."""
    data = resolve(data)
    if is_split(data):
        from .course.data import batches
        yield from batches(data, batch_size, train_augment=train_augment, generator=generator,
                           cutout_size=cutout_size)
        return
    if train_augment or cutout_size:
        raise DataSourceError("augmentation options apply to the course's CIFAR10Split only; put the "
                              "augmentation in your DataLoader's dataset transforms instead")
    check_iterable(data)
    for i, batch in enumerate(data):
        yield _checked_batch(batch, i, finite)


def _reiterable(data) -> None:
    if iter(data) is data:
        raise DataSourceError(f"{type(data).__name__} can be iterated only once, but it is read more than "
                              "once here; pass a DataLoader or a list of (inputs, labels) batches")


def num_classes(data: DataSource) -> int:
    """Number of classes: a split's class list, else 1 + the largest label (one pass over ``data``).
    Classes without samples are left out of every class-pair comparison (:func:`observed`)."""
    data = resolve(data)
    if is_split(data):
        return len(data.classes)
    check_iterable(data)
    _reiterable(data)
    top = -1
    for _, y in iter_batches(data):
        if y.numel():
            top = max(top, int(y.max()))
    if top < 0:
        raise DataSourceError("the data source yielded no labelled sample; class-conditional statistics need "
                              "labelled samples of at least two classes")
    return top + 1


def observed(counts: torch.Tensor, where: str = "the data source") -> torch.Tensor:
    """Indices of the classes with at least one sample among ``counts`` (samples per class). A
    statistic over class pairs must skip classes without samples, whose empty moments would make a
    pair at distance 0 (TVSPrune, Murti et al. 2023). No sample at all is a DataSourceError; a single
    class leaves no pair to compare (a warning; see :func:`pruning_lib.scoring.class_statistics.observed_pairwise_min`)."""
    idx = torch.nonzero(counts > 0).flatten()
    if len(idx) == 0:
        raise DataSourceError(f"{where}: no labelled sample; give labelled samples of at least two classes")
    if len(idx) == 1:
        warnings.warn(f"{where}: samples of one class only (class {int(idx[0])}); class-conditional scores "
                      "compare pairs of classes, so no channel is found indistinguishable (every score is "
                      "+inf and nothing is pruned); give samples of at least two classes", UserWarning, stacklevel=3)
    return idx


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


def input_shape_for(input_shape: Sequence[int] | None, data: DataSource | None, verb: str,
                    batch: int = 1) -> tuple[int, ...]:
    """``input_shape`` as a tuple, else one example of ``data``'s first batch as ``(batch, C, H, W)``:
    a model's input shape is never assumed (no dataset's shape is a default)."""
    if input_shape is not None:
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
        if not shape or len(shape) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                  for s in shape):
            raise ValueError(f"{verb}: input_shape={input_shape!r} is not a shape; give (N, C, H, W) as positive "
                             "ints, e.g. (1, 3, 32, 32) for CIFAR-10 or (1, 3, 224, 224) for ImageNet")
        return shape
    if data is not None:
        return (batch,) + tuple(first_input(resolve(data)).shape[1:])
    other = "" if "input_shape)" in verb else ", or data= to read it from, or graph=discover(model, input_shape)"
    raise TypeError(f"{verb} needs the model's input shape: give input_shape=(N, C, H, W) (e.g. (1, 3, 32, 32) for "
                    f"CIFAR-10, (1, 3, 224, 224) for ImageNet){other}; no dataset's shape is assumed")


def batch_count(data: DataSource, batch_size: int) -> int | None:
    """How many batches ``data`` gives (None when unknown), for progress bars."""
    data = resolve(data)
    if is_split(data):
        return math.ceil(len(data) / batch_size)
    try:
        return len(data)
    except TypeError:
        return None


__all__ = ["DataSource", "Evaluator", "DataSourceError", "iter_batches", "num_classes", "observed",
           "source_name", "per_class_subset", "check_iterable", "required", "check_decides", "is_split", "resolve", "first_input", "batch_count",
           "input_shape_for"]

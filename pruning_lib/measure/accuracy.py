"""Top-1 accuracy of a model on any data source (a DataLoader, a course split or its name), and the
evaluation contract every accuracy gate uses (:class:`Accuracy`: a finite percentage in [0, 100])."""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable

import torch
from torch import nn

from ..modes import eval_mode, unmaterialised
from ..sources import (DataSource, DataSourceError, Evaluator, batch_count, check_iterable, is_split, iter_batches,
                       resolve, source_name)


@torch.no_grad()
def evaluate(model: nn.Module, data: DataSource, batch_size: int = 500,
             device: torch.device | str | None = None, progress: bool = False) -> float:
    """Top-1 accuracy (in %, finite, in [0, 100]) of ``model`` on ``data`` (a DataLoader of (inputs,
    labels), a :class:`~pruning_lib.course.data.CIFAR10Split` or its name; ``batch_size`` batches a
    split). Labels must be 1-D class indices and inputs finite (a DataSourceError says which batch
    is not); the model must give (N, classes) logits.

    The model is evaluated in eval mode and every submodule is left in the mode it had."""
    model = unmaterialised(model)
    device = torch.device(device) if device else next(model.parameters()).device
    correct = seen = 0
    it = iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, total=batch_count(data, batch_size), desc=f"eval {source_name(data)}", leave=False)
    with eval_mode(model):
        for i, (x, y) in enumerate(it):
            x = x.to(device, non_blocking=True)
            logits = model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(y):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"evaluate: the model returned {shape} for batch {i} of {len(y)} samples; "
                                 "it must return (batch, classes) logits (wrap a model that returns a tuple "
                                 "or dict so that forward gives the logits)")
            if not bool(torch.isfinite(logits).all()):
                raise ValueError(f"evaluate: the model's outputs for batch {i} hold NaN or infinite values; "
                                 "an accuracy of them would mean nothing (check the weights and the inputs)")
            correct += (logits.argmax(1) == y.to(logits.device)).sum().item()
            seen += len(y)
    if not seen:
        raise DataSourceError(f"the data source {source_name(data)!r} yielded no samples to evaluate on")
    return 100.0 * correct / seen


def _top1(model: nn.Module, data: DataSource, batch_size: int) -> float:
    """:func:`evaluate`, looked up when called (as_evaluator's argument is called evaluate too)."""
    return evaluate(model, data, batch_size=batch_size)


class Accuracy:
    """An accuracy measure held to the evaluation contract: calling it gives a float, a percentage in
    [0, 100], or NaN (which no accuracy gate accepts). A user's ``evaluate(model)`` may return any
    real number (a float, a 0-d tensor, a NumPy scalar); anything else is a TypeError naming
    ``evaluate``, a value outside [0, 100] a ValueError. A user callable whose FIRST finite result
    (the unpruned model, in every verb) lies in [0, 1] is read as returning fractions: every result
    is then multiplied by 100, with a warning (return percentages to avoid it)."""

    def __init__(self, fn: Callable[[nn.Module], Any], name: str, percent: bool):
        self.fn, self.name, self.scale = fn, name, (1.0 if percent else None)

    def __call__(self, model: nn.Module) -> float:
        raw = self.fn(model)
        v = _real(raw)
        if math.isnan(v):
            return v
        if self.scale is None:
            self.scale = 100.0 if 0.0 <= v <= 1.0 else 1.0
            if self.scale == 100.0:
                warnings.warn(f"evaluate {self.name!r} returned {v!r} for the unpruned model: read as a fraction, "
                              "every result is multiplied by 100 (accuracies here are percentages; return "
                              "100 * accuracy to silence this)", UserWarning, stacklevel=3)
        v = v * self.scale
        if not 0.0 <= v <= 100.0:
            raise ValueError(f"evaluate {self.name!r} returned {raw!r}: an accuracy is a percentage in [0, 100] "
                             "(return 100 * correct / total)")
        return v


def _real(raw) -> float:
    if isinstance(raw, torch.Tensor) and raw.numel() == 1 and not raw.is_complex():
        return float(raw)
    if isinstance(raw, numbers.Real) and not isinstance(raw, bool):
        return float(raw)
    raise TypeError(f"evaluate(model) returned {type(raw).__name__} {raw!r:.60}; it must return the accuracy as "
                    "a number (a float percentage in [0, 100], e.g. 100.0 * correct / total)")


def as_evaluator(evaluate: Evaluator | DataSource, batch_size: int = 500) -> tuple[Accuracy, str]:
    """``evaluate`` as an :class:`Accuracy` (accuracy in % on a data source, or the user's
    ``evaluate(model) -> float`` held to the same contract), and its name for reports."""
    if callable(evaluate) and not isinstance(evaluate, nn.Module) and not is_split(evaluate):
        name = getattr(evaluate, "__name__", type(evaluate).__name__)
        return Accuracy(evaluate, name, percent=False), name
    if isinstance(evaluate, nn.Module):
        raise TypeError("evaluate= got a model; give a data source (a DataLoader of (inputs, labels)) or an "
                        "evaluate(model) -> float callable")
    data = resolve(evaluate)
    check_iterable(data)
    name = source_name(data)
    return Accuracy(lambda m: _top1(m, data, batch_size), name, percent=True), name


__all__ = ["evaluate", "Accuracy", "as_evaluator"]

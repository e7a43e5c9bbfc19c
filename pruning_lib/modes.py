"""Running a caller's model without changing it: every submodule's train/eval mode is restored.

``model.train(was_training)`` would reset every submodule to the top-level flag, undoing a
caller's mixed modes (e.g. BatchNorms frozen in eval() while the rest fine-tunes); these helpers
put each submodule back as it was."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

from torch import nn
from torch.nn.parameter import is_lazy


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; each submodule's own mode restored after it."""
    with kept_modes(model):
        model.eval()
        yield model


@contextmanager
def kept_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the modes may change; on leaving it each submodule's mode is restored."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, t in modes:
            m.training = t


def unmaterialised(model: nn.Module) -> nn.Module:
    """``model``, or a copy of it when it has lazy modules (nn.LazyConv2d, ...): a forward pass would
    materialise the caller's lazy parameters at the measured input shape (and draw them from the
    global RNG), fixing the model to that shape."""
    if any(is_lazy(t) for t in list(model.parameters()) + list(model.buffers())):
        return copy.deepcopy(model)
    return model


__all__ = ["eval_mode", "kept_modes", "unmaterialised"]

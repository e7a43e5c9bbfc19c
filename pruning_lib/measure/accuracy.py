"""Top-1 accuracy of a model on any data source (a DataLoader, a course split or its name)."""
from __future__ import annotations

import torch
from torch import nn

from ..sources import DataSource, batch_count, iter_batches, source_name


@torch.no_grad()
def evaluate(model: nn.Module, data: DataSource, batch_size: int = 500,
             device: torch.device | str | None = None, progress: bool = False) -> float:
    """Top-1 accuracy (in %) of ``model`` on ``data`` (a DataLoader of (inputs, labels), a
    :class:`~pruning_lib.course.data.CIFAR10Split` or its name; ``batch_size`` batches a split).

    The model is evaluated in eval mode and left in the mode it had."""
    device = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = seen = 0
    it = iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, total=batch_count(data, batch_size), desc=f"eval {source_name(data)}", leave=False)
    for x, y in it:
        x = x.to(device, non_blocking=True)
        logits = model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
        correct += (logits.argmax(1) == y.to(logits.device)).sum().item()
        seen += len(y)
    model.train(was_training)
    if not seen:
        raise ValueError(f"the data source {source_name(data)!r} yielded no samples to evaluate on")
    return 100.0 * correct / seen


__all__ = ["evaluate"]

"""Counting what a model costs as it really is: parameters and FLOPs (measured by torch's counter)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..modes import eval_mode, unmaterialised
from ..sources import input_shape_for


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (every element of every parameter tensor)."""
    return sum(p.numel() for p in model.parameters())


def example_input(model: nn.Module, input_shape: tuple, device=None) -> torch.Tensor:
    """A seeded random input of ``input_shape`` in the model's dtype, on its device (or ``device``)."""
    p = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.randn(input_shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple | None = None) -> int:
    """FLOPs of one forward pass at ``input_shape`` (per image when the batch is 1), counted by
    ``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs; convs and matmuls only). Runs in
    eval mode; every submodule's mode is restored. ``input_shape`` is required (no dataset's shape
    is assumed)."""
    input_shape = input_shape_for(input_shape, None, "count_flops(model, input_shape)")
    model = unmaterialised(model)
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)    # MultiheadAttention's fused eval path hides its matmuls
    try:
        with eval_mode(model), FlopCounterMode(display=False) as counter:
            model(example_input(model, input_shape))
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return int(counter.get_total_flops())


__all__ = ["count_parameters", "count_flops"]

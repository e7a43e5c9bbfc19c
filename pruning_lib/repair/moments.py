"""Streaming second moments of a layer's input patches and outputs, the statistics both the fidelity
scores and the compensation are made of (ModHiFi, Kashyap et al., NeurIPS 2025, section D.3).

A dense conv or Linear layer computes, at each output position p, Y_c(p) = sum_i w_ci^T P_i(p): the
patch P_i(p) is input channel i's k x k window (im2col) for a conv, and channel i's ``stride``
features for a Linear reading a flattened map (one feature otherwise). So the input contribution of
eq. (CONV) is A_ci(p) = w_ci^T P_i(p), and every quantity of eq. (2), eq. (3) and Proposition 3.8 is a
contraction of the weights with sums over samples and positions of P, P P^T and P Y^T. Those sums are
accumulated here in float64, batch by batch, so no activation is ever stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchMoments", "layer_patches", "weight_blocks", "reader_kind", "UnsupportedReaderError"]

_CHUNK = 1 << 22      # elements of one float64 patch matrix processed at a time (32 MB)


class UnsupportedReaderError(TypeError):
    """A layer the repairs cannot treat as a reader (only dense Conv2d and Linear layers)."""


def reader_kind(m: nn.Module, name: str = "") -> str:
    """``"conv"`` for a dense ``Conv2d`` (groups = 1), ``"linear"`` for a ``Linear``; an error otherwise."""
    if isinstance(m, nn.Conv2d) and m.groups == 1:
        return "conv"
    if isinstance(m, nn.Linear):
        return "linear"
    raise UnsupportedReaderError(f"{name or type(m).__name__} is a {type(m).__name__}"
                                 f"{f' with groups={m.groups}' if isinstance(m, nn.Conv2d) else ''}: the fidelity "
                                 "scores and the compensation cover dense Conv2d and Linear readers only")


def layer_patches(m: nn.Module, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The patches a reader multiplies its weights with, shape (N, C, K, L): C input channels, K
    values per channel (k*k for a conv, ``stride`` features for a Linear), L output positions."""
    if reader_kind(m) == "conv":
        pad = getattr(m, "_reversed_padding_repeated_twice", None)
        if pad is None:
            raise UnsupportedReaderError("this Conv2d does not expose its padding; cannot form its patches")
        if any(pad):
            x = F.pad(x, list(pad), mode="constant" if m.padding_mode == "zeros" else m.padding_mode)
        p = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=0, stride=m.stride)
        return p.view(x.shape[0], m.in_channels, m.kernel_size[0] * m.kernel_size[1], -1)
    x = x.reshape(-1, x.shape[-1])
    if x.shape[1] % stride:
        raise UnsupportedReaderError(f"a Linear with {x.shape[1]} inputs cannot read channels of {stride} features")
    return x.view(x.shape[0], x.shape[1] // stride, stride, 1)


def weight_blocks(m: nn.Module, stride: int = 1) -> torch.Tensor:
    """The reader's weight as (C_out, C, K), matching :func:`layer_patches` (float64, detached)."""
    w = m.weight.detach().double()
    return w.reshape(w.shape[0], w.shape[1], -1) if w.dim() == 4 else w.reshape(w.shape[0], -1, stride)


def outputs_by_position(y: torch.Tensor) -> torch.Tensor:
    """A reader's output as (N, C_out, L)."""
    if y.dim() == 4:
        return y.flatten(2)
    return y.reshape(-1, y.shape[-1]).unsqueeze(2)


@dataclass
class PatchMoments:
    """Sums over samples n and positions p (float64): ``psum`` = sum P (C, K), ``ysum`` = sum Y and
    ``y2sum`` = sum Y^2 (C_out), ``cross`` = sum P Y^T (C, K, C_out), and the patch Gram sum P P^T,
    either whole (``gram``, (C K, C K)) or its per-channel diagonal blocks (``gram_diag``, (C, K, K)).
    ``samples`` counts the samples, ``positions`` the output positions per sample."""
    channels: int
    patch: int
    outputs: int
    full_gram: bool = True
    samples: int = 0
    positions: int = 0
    psum: torch.Tensor = field(init=False)
    ysum: torch.Tensor = field(init=False)
    y2sum: torch.Tensor = field(init=False)
    cross: torch.Tensor = field(init=False)
    gram: torch.Tensor | None = field(init=False, default=None)
    gram_diag: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self):
        c, k, o = self.channels, self.patch, self.outputs
        z = dict(dtype=torch.float64)
        self.psum, self.ysum, self.y2sum = torch.zeros(c, k, **z), torch.zeros(o, **z), torch.zeros(o, **z)
        self.cross = torch.zeros(c, k, o, **z)
        if self.full_gram:
            self.gram = torch.zeros(c * k, c * k, **z)
        else:
            self.gram_diag = torch.zeros(c, k, k, **z)

    @property
    def rows(self) -> int:
        """Number of (sample, position) pairs summed over."""
        return self.samples * self.positions

    @torch.no_grad()
    def add(self, patches: torch.Tensor, y: torch.Tensor) -> None:
        """Add one batch: ``patches`` (N, C, K, L) and the matching outputs ``y`` (N, C_out, L)."""
        n, c, k, L = patches.shape
        if (c, k, y.shape[1]) != (self.channels, self.patch, self.outputs) or y.shape[0] != n or y.shape[2] != L:
            raise ValueError(f"batch of patches {tuple(patches.shape)} and outputs {tuple(y.shape)} do not fit "
                             f"moments of {self.channels} channels x {self.patch} values -> {self.outputs} outputs")
        if self.positions and L != self.positions:
            raise ValueError(f"{L} output positions in this batch, {self.positions} before: inputs of one size only")
        self.positions = L
        self.samples += n
        step = max(1, _CHUNK // max(1, c * k * L))
        for s in range(0, n, step):
            p = patches[s:s + step].double().reshape(-1, c * k, L).transpose(1, 2).reshape(-1, c * k)
            t = y[s:s + step].double().transpose(1, 2).reshape(-1, self.outputs)
            self.psum += p.sum(0).view(c, k)
            self.ysum += t.sum(0)
            self.y2sum += (t * t).sum(0)
            self.cross += (p.T @ t).view(c, k, -1)
            if self.full_gram:
                self.gram += p.T @ p
            else:
                pv = p.view(-1, c, k)
                self.gram_diag += torch.einsum("nia,nib->iab", pv, pv)

    def gram_blocks(self) -> torch.Tensor:
        """The whole Gram as (C, K, C, K)."""
        if self.gram is None:
            raise ValueError("these moments hold only the Gram's diagonal blocks (full_gram=False)")
        return self.gram.view(self.channels, self.patch, self.channels, self.patch)

    def diag_blocks(self) -> torch.Tensor:
        """The Gram's per-channel diagonal blocks, (C, K, K)."""
        if self.gram_diag is not None:
            return self.gram_diag
        g = self.gram_blocks()
        idx = torch.arange(self.channels)
        return g[idx, :, idx, :]

"""Checkpoints: a state_dict plus metadata, loadable with ``torch.load(..., weights_only=True)``.

A checkpoint names its architecture; loading it as another architecture is an error that says so.
A pruned model's checkpoint is marked ``pruned``: its layers are rebuilt at the stored shapes.
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn

from .models import get_model

FORMAT = "pruning-course-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that does not fit what was asked of it."""


def library_versions() -> dict:
    import torchvision
    # str(): torch.__version__ is a TorchVersion, which torch.load(weights_only=True) refuses.
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version()}


def save_checkpoint(path: str | Path, model: nn.Module, arch: str, meta: dict | None = None,
                    half: bool = False, pruned: bool = False, num_classes: int | None = None) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path``. ``half`` stores floats as float16
    (the loader restores float32); ``pruned`` records that layer shapes differ from ``arch``'s."""
    path = Path(path)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        state[k] = v.half() if half and v.is_floating_point() else v.clone()
    if num_classes is None:
        num_classes = _num_classes(model)
    ckpt = {"format": FORMAT, "arch": arch, "num_classes": num_classes, "pruned": pruned,
            "half": half, "state_dict": state,
            "meta": {**(meta or {}), "versions": library_versions()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise CheckpointError("cannot infer num_classes: the model has no nn.Linear; pass num_classes")
    return last[-1].out_features


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (weights_only load), checked for the course's format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # Checkpoints written before library_versions() stored plain strings hold a TorchVersion
    # (a str subclass, harmless): allow it so they still load.
    from torch.torch_version import TorchVersion
    safe = getattr(torch.serialization, "safe_globals", None)       # torch >= 2.5
    if safe is not None:
        with safe([TorchVersion]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pruning-course checkpoint (expected format {FORMAT}); "
                              "save models with pruning_lib.checkpoints.save_checkpoint")
    return ckpt


def load_checkpoint(path: str | Path, arch: str | None = None) -> tuple[nn.Module, dict]:
    """(model in eval mode with float32 weights, metadata). ``arch``, if given, must match."""
    ckpt = read_checkpoint(path)
    if arch is not None and arch != ckpt["arch"]:
        raise CheckpointError(f"{path} holds a {ckpt['arch']!r} checkpoint, not {arch!r}; "
                              f"load it with arch={ckpt['arch']!r} or pick the {arch} checkpoint")
    model = get_model(ckpt["arch"], num_classes=ckpt["num_classes"])
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    load_state(model, state, ckpt["arch"], pruned=ckpt["pruned"], source=str(path))
    model.eval()
    meta = dict(ckpt["meta"], arch=ckpt["arch"], pruned=ckpt["pruned"])
    return model, meta


def load_state(model: nn.Module, state: dict, arch: str, pruned: bool = False, source: str = "state") -> None:
    """Load ``state`` into ``model``; explain key or shape mismatches in terms of architectures."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this {type(model).__name__} (registry name {arch!r}): "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]}). It was saved from another architecture; load it with the "
            "architecture recorded in the checkpoint.")
    if pruned:
        resize_to_state(model, state)
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad and not pruned:
        k = bad[0]
        raise CheckpointError(
            f"{source} does not fit {arch!r}: {len(bad)} tensors differ in shape, e.g. {k} is "
            f"{tuple(state[k].shape)} in the checkpoint but {tuple(own[k].shape)} in the model. "
            "Another architecture (or a pruned model saved without pruned=True).")
    model.load_state_dict(state)


def resize_to_state(model: nn.Module, state: dict) -> None:
    """Rebuild Conv2d / BatchNorm / Linear layers in place at the shapes found in ``state``
    (how a pruned model is restored from its saved state_dict)."""
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        w = state.get(prefix + "weight")
        if isinstance(m, nn.Conv2d) and w is not None:
            out_c, in_per_group = w.shape[:2]
            groups = m.groups
            if groups > 1 and groups == m.in_channels == m.out_channels:   # depthwise stays depthwise
                groups = out_c
            m.out_channels, m.in_channels, m.groups = out_c, in_per_group * groups, groups
            m.weight = nn.Parameter(torch.empty_like(w, dtype=m.weight.dtype))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(out_c, dtype=m.bias.dtype))
        elif isinstance(m, nn.Linear) and w is not None:
            m.out_features, m.in_features = w.shape
            m.weight = nn.Parameter(torch.empty_like(w, dtype=m.weight.dtype))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0], dtype=m.bias.dtype))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and (prefix + "running_mean") in state:
            n = state[prefix + "running_mean"].shape[0]
            m.num_features = n
            if m.affine:
                m.weight = nn.Parameter(torch.empty(n, dtype=m.weight.dtype))
                m.bias = nn.Parameter(torch.empty(n, dtype=m.bias.dtype))
            m.running_mean = torch.zeros(n)
            m.running_var = torch.ones(n)

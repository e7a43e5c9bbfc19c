"""Checkpoints: a state_dict plus metadata, loadable with ``torch.load(..., weights_only=True)``.

A checkpoint names its architecture; loading it as another architecture is an error that says so.
A pruned model's checkpoint is marked ``pruned``: its layers are rebuilt at the stored shapes.
A large checkpoint may be written in shards (``shard_mb``): the file at ``path`` then holds the
metadata and a list of shard files beside it, each with its keys and SHA-256, and the loader
reassembles the state_dict, refusing a missing, altered or mixed-up shard.
"""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import torch
from torch import nn

from ..surgery.prune import resize_to_state
from .models import get_model

FORMAT = "pruning-course-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that does not fit what was asked of it."""


def library_versions() -> dict:
    import torchvision
    # str(): torch.__version__ is a TorchVersion, which torch.load(weights_only=True) refuses.
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version()}


MAX_SHARD_MB = 50.0
"""The largest shard :func:`save_checkpoint` writes (files from the GPU machine come back at most
16 MiB each, so a checkpoint written there uses ``shard_mb=15``)."""


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pack(state: dict, shard_bytes: float) -> list[list[str]]:
    """Keys of ``state`` in order, cut into runs of at most ``shard_bytes``."""
    runs, size = [[]], 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if n > shard_bytes:
            raise ValueError(f"{k} alone takes {n / 1e6:.1f} MB, more than a shard; a tensor is never split "
                             "across shards, so pass a larger shard_mb")
        if runs[-1] and size + n > shard_bytes:
            runs.append([])
            size = 0
        runs[-1].append(k)
        size += n
    return runs


def save_checkpoint(path: str | Path, model: nn.Module, arch: str, meta: dict | None = None,
                    half: bool = False, pruned: bool = False, num_classes: int | None = None,
                    shard_mb: float | None = None) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path``. ``half`` stores floats as float16
    (the loader restores float32); ``pruned`` records that layer shapes differ from ``arch``'s;
    ``shard_mb`` splits the weights into shard files of at most that many MB beside ``path``
    (``<name>.shard-01-of-03.pt`` ...), written before the index at ``path`` that lists them."""
    path = Path(path)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        state[k] = v.half() if half and v.is_floating_point() else v.clone()
    if num_classes is None:
        num_classes = _num_classes(model)
    ckpt = {"format": FORMAT, "arch": arch, "num_classes": num_classes, "pruned": pruned,
            "half": half, "meta": {**(meta or {}), "versions": library_versions()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if shard_mb is None:
        _atomic_save({**ckpt, "state_dict": state}, path)
        return path
    if not 0 < shard_mb <= MAX_SHARD_MB:
        raise ValueError(f"shard_mb={shard_mb} must be in (0, {MAX_SHARD_MB:g}] MB")
    runs = _pack(state, shard_mb * 1e6 * 0.98)          # leave room for the file's own overhead
    shards = []
    for i, keys in enumerate(runs, 1):
        shard = path.with_name(f"{path.name}.shard-{i:02d}-of-{len(runs):02d}.pt")
        _atomic_save({"format": FORMAT + "/shard", "state_dict": {k: state[k] for k in keys}}, shard)
        shards.append({"file": shard.name, "keys": keys, "sha256": _sha256(shard)})
    _atomic_save({**ckpt, "shards": shards}, path)
    return path


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise CheckpointError("cannot infer num_classes: the model has no nn.Linear; pass num_classes")
    return last[-1].out_features


def _load(path: Path):
    # Checkpoints written before library_versions() stored plain strings hold a TorchVersion
    # (a str subclass, harmless): allow it so they still load.
    from torch.torch_version import TorchVersion
    safe = getattr(torch.serialization, "safe_globals", None)       # torch >= 2.5
    try:
        if safe is not None:
            with safe([TorchVersion]):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {e}); it is truncated or not a "
                              "checkpoint: fetch or write it again") from e


def _read_shards(path: Path, shards: list[dict]) -> dict:
    """The state_dict reassembled from the shard files an index at ``path`` lists, each checked."""
    state = {}
    for s in shards:
        f = path.with_name(s["file"])
        if not f.exists():
            raise CheckpointError(f"{path} is a sharded checkpoint and its shard {f} is missing; copy all "
                                  f"{len(shards)} files {path.name}.shard-* beside it")
        if _sha256(f) != s["sha256"]:
            raise CheckpointError(f"shard {f} does not match the checksum its index {path} records (altered, "
                                  "truncated or from another save); copy the shards and index of one save")
        part = _load(f)
        if not isinstance(part, dict) or part.get("format") != FORMAT + "/shard" or \
                list(part["state_dict"]) != s["keys"]:
            raise CheckpointError(f"{f} is not the shard {path} lists; copy the shards of one save")
        state.update(part["state_dict"])
    return state


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (weights_only load), checked for the course's format; a sharded
    checkpoint's state_dict is reassembled from its shards."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = _load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pruning-course checkpoint (expected format {FORMAT}); "
                              "save models with pruning_lib.course.checkpoints.save_checkpoint")
    if "shards" in ckpt:
        ckpt = {**{k: v for k, v in ckpt.items() if k != "shards"}, "state_dict": _read_shards(path, ckpt["shards"])}
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


__all__ = ["FORMAT", "MAX_SHARD_MB", "CheckpointError", "library_versions", "save_checkpoint", "read_checkpoint",
           "load_checkpoint", "load_state", "resize_to_state"]

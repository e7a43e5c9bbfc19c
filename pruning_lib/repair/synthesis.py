"""Calibration images synthesised from the network itself, for repair without any real image.

Random inputs are optimised so that the batch statistics entering every BatchNorm layer match the
layer's running (training) statistics, under an image prior (total variation + l2), the recipe of
DeepInversion (Yin et al., CVPR 2020) and ZeroQ (Cai et al., CVPR 2020); written here from their
descriptions. The loss is sum over BN layers l of ||mu_l(x) - running_mean_l||_2 +
||var_l(x) - running_var_l||_2 (:func:`bn_statistics_loss`), plus ``tv_weight`` x the mean squared
difference of neighbouring pixels and ``l2_weight`` x the mean squared pixel. ModHiFi (Kashyap et al.,
NeurIPS 2025, section 2.2) asks only for unlabelled samples of the data distribution; synthesised
images are this library's way to have them with no data at all.

The images live in the model's input space (for the course's checkpoints: CIFAR-normalised). They
have no true labels; the dataset pairs each image with the class the model itself predicts for it
(``predicted``), so that they fit the library's (inputs, labels) data sources (such as
:func:`pruning_lib.bn_recalibrate` reads), and an "accuracy" on them is agreement with that model. A cache file keeps them with the
settings and the model's fingerprint, and is refused for another model or other settings.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

__all__ = ["SyntheticImages", "SynthesisCacheError", "bn_statistics_loss", "model_fingerprint", "synthesize_images"]

FORMAT = "pruning-course-synthesis/1"


class SynthesisCacheError(ValueError):
    """A cache file made for another model or with other settings (the message says what differs)."""


@dataclass
class SyntheticImages:
    """Synthesised images (N, C, H, W) float32, the class the model predicts for each (``predicted``,
    not a ground truth), and how they were made: ``settings``, the model's ``fingerprint``, the mean
    BN-statistics loss of the random start and of the result, the seconds the synthesis took (as
    recorded when ``from_cache``)."""
    images: torch.Tensor
    predicted: torch.Tensor
    settings: dict
    fingerprint: str
    bn_loss_start: float
    bn_loss_end: float
    seconds: float
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def dataset(self) -> TensorDataset:
        """(image, the model's predicted class) pairs."""
        return TensorDataset(self.images, self.predicted)

    def loader(self, batch_size: int = 64, shuffle: bool = False) -> DataLoader:
        """A DataLoader of (image, predicted class) pairs."""
        return DataLoader(self.dataset(), batch_size=batch_size, shuffle=shuffle)


def _bns(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_mean is not None]


def bn_statistics_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sum over BatchNorm layers of ||batch mean - running mean||_2 + ||batch var - running var||_2, the
    batch statistics taken over every axis but the channel one (biased variance, as BN computes it).
    ``model`` must be in eval mode (so its running statistics do not move)."""
    bns = _bns(model)
    if not bns:
        raise ValueError("the model has no BatchNorm layer with running statistics: nothing to match")
    terms: list[torch.Tensor] = []

    def hook(m, inputs, output):
        a = inputs[0]
        dims = [d for d in range(a.dim()) if d != 1]
        mean = a.mean(dims)
        var = a.var(dims, unbiased=False)
        terms.append(torch.linalg.vector_norm(mean - m.running_mean) + torch.linalg.vector_norm(var - m.running_var))

    handles = [m.register_forward_hook(hook) for m in bns]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(terms).sum()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class and state (every tensor's name, dtype, shape and values)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _prior(x: torch.Tensor, tv_weight: float, l2_weight: float) -> torch.Tensor:
    tv = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()
    return tv_weight * tv + l2_weight * (x ** 2).mean()


def _read_cache(path: Path, settings: dict, fingerprint: str) -> SyntheticImages:
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SynthesisCacheError(f"{path} is not a readable synthesis cache ({type(e).__name__}: {e}); delete it "
                                  "or pass another cache= path") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise SynthesisCacheError(f"{path} is not a synthesis cache ({FORMAT}); pass another cache= path")
    if d["fingerprint"] != fingerprint:
        raise SynthesisCacheError(f"{path} holds images synthesised from another model (or other weights); "
                                  "delete it, or pass a cache= path for this model")
    diff = {k: (d["settings"].get(k), v) for k, v in settings.items() if d["settings"].get(k) != v}
    diff.update({k: (v, None) for k, v in d["settings"].items() if k not in settings})
    if diff:
        what = ", ".join(f"{k}: cached {a!r}, asked {b!r}" for k, (a, b) in sorted(diff.items()))
        raise SynthesisCacheError(f"{path} was synthesised with other settings ({what}); ask for the cached "
                                  "settings, delete the file, or pass another cache= path")
    return SyntheticImages(d["images"], d["predicted"], d["settings"], fingerprint, d["bn_loss_start"], d["bn_loss_end"],
                           d["seconds"], from_cache=True)


def synthesize_images(model: nn.Module, n: int = 256, *, shape: tuple | None = None, iterations: int = 200,
                      batch_size: int = 64, lr: float = 0.1, tv_weight: float = 1e-2, l2_weight: float = 1e-4,
                      jitter: int = 2, flip: bool = True, seed: int = 0, cache: str | Path | None = None,
                      progress: bool = True) -> SyntheticImages:
    """``n`` images of ``shape`` synthesised from ``model``'s BatchNorm statistics (module docstring):
    each batch of ``batch_size`` starts from seeded Gaussian noise and takes ``iterations`` Adam steps of
    rate ``lr`` on the BN-statistics loss plus the prior, each step on a randomly shifted (up to
    ``jitter`` pixels) and flipped view (DeepInversion's augmentation).

    ``cache``: a file; reused when it holds images for this model (same fingerprint) and the same
    settings, refused with a :class:`SynthesisCacheError` when they differ, written when absent.
    The caller's model is not modified (a frozen copy is optimised against). ``shape`` (C, H, W) is
    required: one image's shape, e.g. (3, 32, 32) for CIFAR-10."""
    if shape is None or len(tuple(shape)) != 3:
        raise TypeError(f"synthesize_images needs shape=(C, H, W), one image's shape (e.g. (3, 32, 32) for CIFAR-10); "
                        f"got {shape!r}")
    shape = tuple(shape)
    for name, v in (("n", n), ("iterations", iterations), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: give a positive integer")
    if lr <= 0 or tv_weight < 0 or l2_weight < 0 or jitter < 0:
        raise ValueError("lr must be > 0 and tv_weight, l2_weight, jitter >= 0")
    settings = dict(n=n, shape=list(shape), iterations=iterations, batch_size=batch_size, lr=lr, tv_weight=tv_weight,
                    l2_weight=l2_weight, jitter=jitter, flip=flip, seed=seed)
    fingerprint = model_fingerprint(model)
    path = Path(cache) if cache is not None else None
    if path is not None and path.exists():
        return _read_cache(path, settings, fingerprint)

    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    p0 = next(frozen.parameters())
    gen = torch.Generator().manual_seed(seed)
    out, labels, start, end = [], [], 0.0, 0.0
    t0 = time.perf_counter()
    bar = tqdm(total=-(-n // batch_size) * iterations, desc="synthesising", disable=not progress)
    for s in range(0, n, batch_size):
        b = min(batch_size, n - s)
        x = torch.randn((b,) + tuple(shape), generator=gen, dtype=torch.float32).to(p0.device, p0.dtype)
        with torch.no_grad():
            start += b * float(bn_statistics_loss(frozen, x))
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(iterations):
            view = x
            if jitter:
                dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
                view = torch.roll(view, shifts=(dy, dx), dims=(-2, -1))
            if flip and bool(torch.rand((), generator=gen) < 0.5):
                view = view.flip(-1)
            loss = bn_statistics_loss(frozen, view) + _prior(x, tv_weight, l2_weight)
            (grad,) = torch.autograd.grad(loss, x)
            x.grad = grad
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.update(1)
        with torch.no_grad():
            end += b * float(bn_statistics_loss(frozen, x))
            labels.append(frozen(x).argmax(1).cpu())
        out.append(x.detach().float().cpu())
    bar.close()
    result = SyntheticImages(torch.cat(out), torch.cat(labels), settings, fingerprint, start / n, end / n, time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": FORMAT, "settings": settings, "fingerprint": fingerprint, "images": result.images,
                    "predicted": result.predicted,
                    "bn_loss_start": result.bn_loss_start, "bn_loss_end": result.bn_loss_end,
                    "seconds": result.seconds}, tmp)
        tmp.replace(path)
    return result

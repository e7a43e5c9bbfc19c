"""One split written as an image folder (``<class>/<index>.png``), the layout ``torchvision``'s ``ImageFolder`` reads."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .splits import load_split


def export_image_folder(split: str, out: Path | str, data_dir: Path | str | None = None,
                        copy: str | None = None) -> Path:
    """Write one split as ``out/<class>/<index>.png``, the layout ``torchvision.datasets.ImageFolder``
    reads: how notebook 05 stands in for a learner's own folder of images. PNG is lossless, so the
    pixels are exactly the decoded ones the checkpoints were evaluated on. Written into a temporary
    folder renamed at the end, so a half-written folder is never read; an existing ``out`` is refused."""
    from PIL import Image
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: remove it to export the {split!r} split again")
    data = load_split(split, data_dir, copy)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for c, name in enumerate(data.classes):
        folder = tmp / name
        folder.mkdir(parents=True)
        for i in torch.nonzero(data.y == c).flatten().tolist():
            Image.fromarray(data.x[i].permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


__all__ = ["export_image_folder"]

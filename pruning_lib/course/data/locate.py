"""Where the CIFAR-10 sources are in a data folder, which copy each holds, and what to do when there is none."""
from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

from .common import DATA_ENV, IMAGE_SUFFIXES, PARTS
from .images import _copy_of_images, _image_root


def _sources(data_dir: Path):
    """Every CIFAR-10 source in ``data_dir``, as (copy, path), in order of preference."""
    official = data_dir / "cifar-10-batches-py"
    if (official / "data_batch_1").exists():
        yield "official", official
    for name in ("cifar10-jpg", "cifar10", "."):
        folder = (data_dir / name).resolve()
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            yield _copy_of_folder(folder), folder
    for tar in sorted(data_dir.glob("*.tar.gz")) + sorted(data_dir.glob("*.tgz")):
        if tar.name != "cifar-10-python.tar.gz":
            yield _copy_of_tar(tar), tar


def find_source(data_dir: Path) -> tuple[str, Path] | None:
    """The first CIFAR-10 source in ``data_dir``: (copy, path), or None."""
    return next(_sources(Path(data_dir)), None)


def _copy_of_folder(folder: Path) -> str:
    first = next(_image_root(folder).glob("train/*/*"), None)
    return _copy_of_images([first.name] if first is not None else [])


def _copy_of_tar(path: Path) -> str:
    """The copy a tar holds, from its first image file (a quick look: :func:`prepare` checks it all)."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                parts = Path(m.name).parts
                if m.isfile() and len(parts) >= 3 and parts[-3] in PARTS and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    return _copy_of_images([m.name])
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        pass                         # a damaged archive: prepare() reads it in full and says what is wrong
    return "images"


def _missing_message(data_dir: Path) -> str:
    return (
        f"No CIFAR-10 found in {data_dir}.\n"
        "Put one of these there (or point ${env} at a folder that has one):\n"
        "  * the pinned JPEG copy the checkpoints were trained on: `python -m pruning_lib.data prepare`\n"
        "    downloads it where there is internet (or `--download jpeg`);\n"
        "  * the official python batches: cifar-10-batches-py/ (torchvision's CIFAR10 format), or run\n"
        "    `python -m pruning_lib.data prepare --download official` where there is internet;\n"
        "  * the image-folder layout train/<class>/*.jpg and test/<class>/*.jpg, as a folder or a\n"
        "    .tar.gz, e.g. `python -m pruning_lib.data prepare --source ../shared/data/cifar10-jpg.tar.gz`."
    ).replace("${env}", f"${DATA_ENV}")


__all__ = ["find_source"]

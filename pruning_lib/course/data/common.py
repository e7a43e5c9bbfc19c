"""The course's CIFAR-10 constants, its two errors and the data folder: what every other data module reads."""
from __future__ import annotations

import os
from pathlib import Path


CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the official CIFAR-10 training images (standard values).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


DATA_ENV = "PRUNING_COURSE_DATA"
SPLIT_SEED = 0
DIST_PER_CLASS = 200   # 2,000 images: TVSPrune's class-conditional statistics
VAL_PER_CLASS = 200    # 2,000 images: accuracy gate for pruning decisions
SPLITS = ("train", "dist", "val", "test")
COPIES = ("official", "jpeg")
KNOWN_COPIES = ("official", "jpeg", "images")   # "images": an image-folder copy that is not the pinned JPEG one
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PARTS = ("train", "test")
URL_ENV = "PRUNING_COURSE_CIFAR_URL"


_GET_JPEG = "`python -m pruning_lib.data prepare --download jpeg` fetches the pinned JPEG copy"


class DataNotFoundError(FileNotFoundError):
    """No CIFAR-10 source in the data folder; the message says what to put where."""


class DataIntegrityError(ValueError):
    """A source or cache is damaged, incomplete or not the expected copy; the message names the file and the fix."""


def default_data_dir() -> Path:
    """``$PRUNING_COURSE_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[3] / "data"


__all__ = ["CLASSES", "MEAN", "STD", "DATA_ENV", "SPLIT_SEED", "DIST_PER_CLASS", "VAL_PER_CLASS", "SPLITS",
           "COPIES", "KNOWN_COPIES", "IMAGE_SUFFIXES", "PARTS", "URL_ENV", "DataNotFoundError", "DataIntegrityError",
           "default_data_dir"]

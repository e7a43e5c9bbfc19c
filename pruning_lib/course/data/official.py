"""The official python batches (torchvision's ``CIFAR10`` format), read through a restricted unpickler."""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
import torch

from .checksums import _check_counts
from .common import CLASSES, DataIntegrityError, DataNotFoundError

try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct     # numpy >= 2
except ImportError:                  # pragma: no cover
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

OFFICIAL_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what the official batches hold: dicts, lists, str, bytes, ints, numpy arrays.

    Any other global (a function such as ``exec`` or ``os.system``, any class) is refused, so a
    crafted file in the data folder cannot run code during :func:`prepare`."""
    ALLOWED = {("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
               ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,     # batches pickled by numpy 1
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}                          # bytes in protocol-2 pickles

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def _unpickle_batch(path: Path) -> dict:
    """One official batch file, read with :class:`_BatchUnpickler`; anything else is an error naming it."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataIntegrityError(
            f"{path}: not an official CIFAR-10 batch ({e}); these files hold only dicts, lists, strings, "
            f"numbers and numpy arrays. Delete the folder {path.parent} and fetch the official batches with "
            f"`python -m pruning_lib.data prepare --download official`.") from None
    if not isinstance(entry, dict):
        raise DataIntegrityError(f"{path}: expected a dict, got {type(entry).__name__}; "
                                 "fetch the official batches with `--download official`")
    return entry


def _read_official(folder: Path) -> dict:
    """The python batches (torchvision's ``CIFAR10`` format), read with a restricted unpickler.

    Read the way torchvision reads them (``data``: uint8 rows of 3x32x32 channel planes, ``labels``),
    but without torchvision's md5 check, which refuses any copy whose bytes differ from the
    official files (re-pickled or test copies); each batch is checked for shape and labels instead.
    """
    meta = folder / "batches.meta"
    if meta.exists():
        names = _unpickle_batch(meta).get("label_names")
        if names is not None and tuple(names) != CLASSES:
            raise ValueError(f"{meta}: label_names {names} are not CIFAR-10's classes {CLASSES}")
    out = {}
    for part, files in OFFICIAL_BATCHES.items():
        xs, ys = [], []
        for name in files:
            path = folder / name
            if not path.exists():
                raise DataNotFoundError(f"{folder}: missing {name}; the official python batches are "
                                        f"{', '.join(OFFICIAL_BATCHES['train'])} and test_batch")
            entry = _unpickle_batch(path)
            x = np.asarray(entry["data"], dtype=np.uint8)
            y = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
                raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {x.shape} and {len(y)}")
            if len(y) and (y.min() < 0 or y.max() >= len(CLASSES)):
                raise ValueError(f"{path}: labels outside 0..{len(CLASSES) - 1}")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        out[f"{part}_x"] = torch.from_numpy(np.concatenate(xs)).contiguous()
        out[f"{part}_y"] = torch.from_numpy(np.concatenate(ys))
        per_class = torch.bincount(out[f"{part}_y"], minlength=len(CLASSES)).tolist()
        _check_counts({(part, c): n for c, n in zip(CLASSES, per_class)}, str(folder),
                      "`python -m pruning_lib.data prepare --download official`", parts=(part,))
    return out


__all__ = ["OFFICIAL_BATCHES"]

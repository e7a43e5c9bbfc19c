"""The cached tensors as the splits read them (prepared on first use, read once per file) and what copy they are."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cache import _find_cache, _read_cache
from .common import KNOWN_COPIES, DataNotFoundError, default_data_dir
from .locate import _missing_message, _sources, find_source
from .preparation import prepare


def _check_copy(copy: str | None) -> None:
    if copy is not None and copy not in KNOWN_COPIES:
        raise ValueError(f"unknown copy {copy!r}; choose one of {KNOWN_COPIES} (or None: the cache there is)")


def _no_copy_message(data_dir: Path, copy: str) -> str:
    present = [p.name for p in sorted((data_dir / "cache").glob("cifar10-*.pt"))]
    how = {"jpeg": "`python -m pruning_lib.data prepare --download jpeg` (the pinned JPEG copy), or "
                   "`--source path/to/cifar10-jpg.tar.gz`",
           "official": "`python -m pruning_lib.data prepare --download official`",
           "images": "`python -m pruning_lib.data prepare --source path/to/folder-or-archive`"}[copy]
    return (f"No {copy} copy of CIFAR-10 in {data_dir} (caches there: {', '.join(present) or 'none'}; "
            f"sources: {', '.join(f'{c} {p.name}' for c, p in _sources(data_dir)) or 'none'}). Make it with {how}.")


_MEMO: dict = {}


def _load_tensors(data_dir: Path | str | None, copy: str | None) -> dict:
    _check_copy(copy)
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    path = _find_cache(data_dir, copy)
    if path is None:
        if copy is None:
            if find_source(data_dir) is None:
                raise DataNotFoundError(_missing_message(data_dir))
            path = prepare(data_dir)
        else:
            source = next((p for c, p in _sources(data_dir) if c == copy), None)
            if source is None:
                raise DataNotFoundError(_no_copy_message(data_dir, copy))
            path = prepare(data_dir, source=source)
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    if key not in _MEMO:
        _MEMO.clear()
        _MEMO[key] = _read_cache(path)
    return _MEMO[key]


@dataclass(frozen=True)
class DatasetInfo:
    """Which CIFAR-10 copy is in use and where it came from (see :func:`dataset_info`)."""
    copy: str                      # "official", "jpeg" or "images"
    source: str                    # file or folder name it was decoded from
    cache: Path                    # the decoded tensor file
    train_images: int
    test_images: int
    train_labels: torch.Tensor = field(repr=False, compare=False)   # labels of all 50,000 training images


def dataset_info(data_dir: Path | str | None = None, copy: str | None = None) -> DatasetInfo:
    """Describe the cached CIFAR-10 that :func:`load_split` reads (decoding it first if needed)."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    t = _load_tensors(data_dir, copy)
    return DatasetInfo(copy=t["copy"], source=t.get("source", "?"), cache=_find_cache(data_dir, t["copy"]),
                       train_images=len(t["train_y"]), test_images=len(t["test_y"]), train_labels=t["train_y"])


__all__ = ["DatasetInfo", "dataset_info"]

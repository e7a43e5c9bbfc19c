"""Shared test set-up: a fixed torch thread count and seeds, and nbval's comparison settings.

Notebooks are checked by nbval (``make test``). Their stderr (tqdm bars, warnings) is never
compared: :func:`pytest_collection_modifyitems` adds ``stderr`` to every notebook's
``skip_compare``. That hook is session-wide, so it applies to ``notebooks/*.ipynb`` as long as this
file is loaded, i.e. when ``tests`` is among pytest's arguments (``make test``, or plain ``pytest``,
whose ``testpaths`` are ``tests`` and ``notebooks``).
"""
from __future__ import annotations

import os
import random

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch: no spin-wait collapse on a shared CPU

import numpy as np
import pytest
import torch

# One fixed thread count for the whole run (``PRUNING_COURSE_TEST_THREADS``, else ``OMP_NUM_THREADS``,
# else at most 4), so float reductions are ordered the same way from run to run on a machine. Set in
# the environment too, so notebook kernels started by nbval inherit it.
_THREADS = int(os.environ.get("PRUNING_COURSE_TEST_THREADS")
               or os.environ.get("OMP_NUM_THREADS")
               or min(4, os.cpu_count() or 1))
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
torch.set_num_threads(_THREADS)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:          # already set (torch allows it once, before any parallel work)
    pass
torch.backends.cudnn.benchmark = False
torch.backends.cudnn.deterministic = True


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global random state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(session, config, items):
    """Do not compare notebooks' stderr (tqdm and warnings write there); stdout and results still are."""
    try:
        from nbval.plugin import IPyNbFile
    except ImportError:       # nbval not installed: no notebook items to adjust
        return
    for parent in {id(i.parent): i.parent for i in items if isinstance(i.parent, IPyNbFile)}.values():
        if "stderr" not in parent.skip_compare:
            parent.skip_compare = tuple(parent.skip_compare) + ("stderr",)


# --------------------------------------------------------------------------- synthetic CIFAR-10

def make_images(n_per_class: int, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (10*n, 32, 32, 3), y int64) ordered by class, then index.

    ``random``: uniform noise (every image distinct, nothing to learn). ``colour``: each class a
    distinct mean colour plus noise, so a network can learn it in a few dozen steps.
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(10):
        if kind == "random":
            x = rng.integers(0, 256, (n_per_class, 32, 32, 3), dtype=np.uint8)
        elif kind == "colour":
            base = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 29 + 160) % 256], dtype=np.float64)
            x = np.clip(base + rng.normal(0, 24, (n_per_class, 32, 32, 3)), 0, 255).astype(np.uint8)
        else:
            raise ValueError(kind)
        xs.append(x)
        ys.append(np.full(n_per_class, c, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def write_image_folder(root, train: tuple, test: tuple, suffix: str = ".png") -> dict:
    """Write ``root/train|test/<class>/NNNN.png`` (lossless) and return the arrays, in the order
    pruning_lib.data caches them: x as uint8 (N, 3, 32, 32), y int64. ``suffix=".jpg"`` writes JPEG
    files instead (lossy: the returned arrays are then the images before compression)."""
    from PIL import Image
    from pruning_lib.course.data import CLASSES
    out = {}
    for part, (x, y) in (("train", train), ("test", test)):
        counts = {}
        for img, label in zip(x, y):
            folder = root / part / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            i = counts[label] = counts.get(label, -1) + 1
            Image.fromarray(img).save(folder / f"{i:04d}{suffix}")
        out[f"{part}_x"] = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        out[f"{part}_y"] = torch.from_numpy(y)
    return out


@pytest.fixture
def small_splits(monkeypatch):
    """Make load_split's train/dist/val carve 5 + 5 images per class (synthetic sets are small)."""
    import functools
    from pruning_lib.course.data import splits
    monkeypatch.setattr(splits, "split_indices",
                        functools.partial(splits.split_indices, dist_per_class=5, val_per_class=5))

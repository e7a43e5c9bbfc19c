"""CIFAR-10 as cached uint8 tensors, with the course's fixed, class-balanced splits.

Sources (looked for in the data folder, in this order):
  * a cache file already made by :func:`prepare` (``cache/cifar10-<copy>.pt``);
  * the official python batches (``cifar-10-batches-py/``, torchvision's ``CIFAR10`` format);
  * the image-folder layout ``[top/]train|test/<class>/*.jpg|png``, as a folder or as a ``.tar.gz``;
  * with none of these, ``python -m pruning_lib.data prepare`` downloads the pinned JPEG copy (the
    GitHub archive named in ``cifar10_jpeg.json``, which the shipped checkpoints were trained on).
Images are decoded once into one tensor file; every later pass costs only the model's time. Nothing
unchecked is cached: every class in both splits with balanced counts, the JPEG copy file for file
against the pinned checksums, the official batches through a restricted unpickler.

Splits of the 50,000 training images (deterministic, disjoint, class-balanced by count per class):
``train`` (for training the shipped networks), ``dist`` (labelled samples from the data distribution,
for TVSPrune's statistics) and ``val`` (for accuracy-gated pruning decisions). ``test`` is the 10,000
test images, used for every reported number.

One module per job, each importing only those above it in this list: :mod:`.common` (constants,
errors, the data folder), :mod:`.checksums` (class counts, content digests, the pinned JPEG copy),
:mod:`.official` (the python batches, restricted unpickler), :mod:`.images` (image folders and tars),
:mod:`.locate` (finding a source), :mod:`.cache` (the cache file, lock, atomic writes),
:mod:`.download`, :mod:`.preparation` (:func:`prepare`), :mod:`.loading` (the tensors the splits
read, :func:`dataset_info`), :mod:`.splits`, :mod:`.batching` (normalisation, augmentation),
:mod:`.export` (a split as an image folder) and :mod:`.cli` (``python -m pruning_lib.data``).
"""
from .batching import augment, batches, cutout, normalize
from .cache import cache_path
from .checksums import PINNED_JPEG_FILE, content_digests, pinned_jpeg
from .cli import main
from .common import (CLASSES, COPIES, DATA_ENV, DIST_PER_CLASS, IMAGE_SUFFIXES, KNOWN_COPIES, MEAN, PARTS, SPLIT_SEED,
                     SPLITS, STD, URL_ENV, VAL_PER_CLASS, DataIntegrityError, DataNotFoundError, default_data_dir)
from .export import export_image_folder
from .loading import DatasetInfo, dataset_info
from .locate import find_source
from .official import OFFICIAL_BATCHES
from .preparation import prepare
from .splits import CIFAR10Split, balanced_indices, load_split, split_indices

__all__ = ["CLASSES", "MEAN", "STD", "SPLITS", "COPIES", "KNOWN_COPIES", "DATA_ENV", "DIST_PER_CLASS", "VAL_PER_CLASS",
           "CIFAR10Split", "DataNotFoundError", "DataIntegrityError", "DatasetInfo", "default_data_dir", "load_split",
           "prepare", "export_image_folder", "find_source", "dataset_info", "cache_path", "content_digests", "pinned_jpeg", "balanced_indices",
           "split_indices", "normalize", "augment", "cutout", "batches", "main",
           "SPLIT_SEED", "IMAGE_SUFFIXES", "PARTS", "URL_ENV", "OFFICIAL_BATCHES", "PINNED_JPEG_FILE"]

"""Training sets for defect classifiers: class folders of images, and tables with a class column.

Images
------
``DIR/<class>/*.png|jpg`` (one folder per class, ``good`` among them), or an MVTec-layout set,
whose classes are ``test/<class>/`` (``train/good/`` is what an anomaly model is fitted on, see
below). A frame's features are the pooled patch features of the SKU's image anomaly model
(:meth:`~linewatch.detectors.patchcore.PatchCore.pooled_features`: the mean patch feature of the
whole frame and of its worst patches), exactly what the stream computes in its scoring pass, so
a classifier costs no second backbone and reads live frames as it read the folder. The worst
patches depend on the model's memory bank: the classifier must be trained with the model that
scores the SKU in the stream (the CLI takes the registry's champion when there is one). A file
that cannot be decoded is skipped, named in a warning and counted.

Why ``train/good/`` is not a class of an MVTec set: its frames are in the anomaly model's memory
bank, so their worst patches are nearer the bank than any new good part's; the classifier would
learn a "good" that live parts never look like. Good examples come from ``test/good/``.

Tables
------
A CSV or Parquet file with one row per confirmed part or window, a class column (``class`` or
``defect_class`` unless named) and numeric feature columns (SPC characteristics, signal window
features), read through :mod:`linewatch.loaders`. Class names are stripped and lower-cased, and
the loaders' spellings of "normal" (``none``, ``ok``, ``normal``, ``0``, empty, ...) mean
:data:`~linewatch.defects.classifier.GOOD`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.backtest.images import IMAGE_SUFFIXES, load_frame
from linewatch.defects.classifier import GOOD
from linewatch.errors import ConfigError, DataError
from linewatch.loaders import NORMAL_LABELS, load_csv, load_parquet

__all__ = ["CLASS_COLUMNS", "TrainingSet", "class_folders", "good_images", "good_training_folder", "image_features",
           "image_training_set", "pooled_feature_names", "table_training_set"]

#: Class columns looked for, in order, when none is named.
CLASS_COLUMNS = ("class", "defect_class")
#: Frames read and embedded per call: bounded memory, and a progress step.
FEATURE_BATCH = 16
#: Signal window features are named ``sensor.feature``; a table whose every feature is is a signals table.
SIGNAL_FEATURE_SEPARATOR = "."


@dataclass(frozen=True)
class TrainingSet:
    """Rows, their classes and feature names, with where they came from and what was skipped."""

    X: np.ndarray
    y: list[str]
    feature_names: list[str]
    modality: str
    source: str
    sku: str | None = None
    #: Files that could not be decoded, as ``path: reason``.
    skipped: list[str] = field(default_factory=list)
    #: The events behind the rows (label-store sets), in row order.
    event_ids: list[str] = field(default_factory=list)
    #: The image model version whose pooled features the rows are (frames): a classifier reads only its features.
    feature_model: str | None = None

    def counts(self) -> dict[str, int]:
        classes, n = np.unique(np.asarray(self.y, dtype=object), return_counts=True)
        return {str(c): int(k) for c, k in zip(classes, n, strict=True)}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(root: Path) -> list[tuple[Path, str]]:
    """``(file, class)`` of every image: ``root/test/<class>/`` for an MVTec-layout set, else ``root/<class>/``."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; give DIR/<class>/*.png or an MVTec-layout set with test/<class>/")
    base = root / "test" if (root / "test").is_dir() and (root / "train").is_dir() else root
    files = [(p, d.name.strip().lower()) for d in sorted(base.iterdir()) if d.is_dir() for p in _images(d)]
    if not files:
        raise DataError(f"no class folders with images ({', '.join(IMAGE_SUFFIXES)}) under {base}; "
                        f"lay the set out as {base}/<class>/*.png, with a {GOOD!r} folder among them")
    return files


def good_training_folder(root: Path) -> Path | None:
    """``train/good/`` of an MVTec-layout set: what to fit an anomaly model on when none exists."""
    folder = Path(root) / "train" / GOOD
    return folder if folder.is_dir() and _images(folder) else None


def good_images(folder: Path) -> list[Path]:
    """The good images to fit an anomaly model on: ``folder/train/good/`` of an MVTec-layout set, or ``folder``."""
    folder = Path(folder)
    folder = folder / "train" / GOOD if (folder / "train" / GOOD).is_dir() else folder
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; --fit-on takes a folder of good images")
    files = _images(folder)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder} to fit an image model on")
    return files


def pooled_feature_names(feature_dim: int) -> list[str]:
    """``pooled_0`` .. ``pooled_{2D-1}``: the whole frame's mean patch feature (first D), then the worst patches'.

    The label store names the stored pooled vectors the same way, so a classifier trained on a
    folder and one trained on confirmed dispositions read the same features under the same names.
    """
    return [f"pooled_{j}" for j in range(2 * feature_dim)]


def image_features(files: Sequence[Path], model: Any, *, progress: Callable[[int, int], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pooled patch features of the files ``model`` (a fitted PatchCore) reads; undecodable files are skipped.

    Returns ``(X, kept, skipped)``: the features of the decodable files, a boolean mask of which
    files they are, and ``path: reason`` for every file left out.
    """
    kept = np.zeros(len(files), dtype=bool)
    parts: list[np.ndarray] = []
    skipped: list[str] = []
    for start in range(0, len(files), FEATURE_BATCH):
        frames = []
        for i in range(start, min(start + FEATURE_BATCH, len(files))):
            try:
                frames.append(load_frame(files[i], model.model_size))
                kept[i] = True
            except DataError as e:
                skipped.append(f"{files[i]}: {e.__cause__ or e}")
        if frames:
            parts.append(model.pooled_features(frames))
        if progress is not None:
            progress(min(start + FEATURE_BATCH, len(files)), len(files))
    dim = 2 * int(model.feature_dim_)
    X = np.concatenate(parts).astype(np.float64) if parts else np.empty((0, dim))
    return X, kept, skipped


def image_training_set(root: Path, model: Any, *, sku: str | None = None,
                       progress: Callable[[int, int], None] | None = None) -> TrainingSet:
    """Every image under ``root``'s class folders, as pooled patch features of ``model``."""
    pairs = class_folders(root)
    X, kept, skipped = image_features([p for p, _ in pairs], model, progress=progress)
    y = [c for (_, c), k in zip(pairs, kept, strict=True) if k]
    if not y:
        raise DataError(f"none of the {len(pairs)} images under {root} could be decoded; see the skipped files")
    return TrainingSet(X, y, pooled_feature_names(int(model.feature_dim_)), "frames", str(root), sku, skipped)


def _class_column(path: Path, named: str | None) -> str:
    """The class column: ``named``, or the first of :data:`CLASS_COLUMNS` in the file's header."""
    if named is not None:
        return named
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq  # load_parquet already needs pyarrow

        header = list(pq.read_schema(path).names)
    else:
        with path.open(newline="") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
    for name in CLASS_COLUMNS:
        if name in header:
            return name
    raise ConfigError(f"{path} has no class column ({' or '.join(CLASS_COLUMNS)}); name it with --class-column "
                      f"(columns: {', '.join(header)})")


def table_training_set(path: Path, *, class_column: str | None = None, modality: str | None = None,
                       columns: list[str] | None = None, sku: str | None = None) -> TrainingSet:
    """A CSV or Parquet table as a training set; ``modality`` is inferred (signals if every feature is ``a.b``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a CSV or Parquet file, or a folder of class folders")
    column = _class_column(path, class_column)
    if path.suffix.lower() == ".parquet":
        data = load_parquet(path, columns=columns, label_column=column)
        import pandas as pd  # present: load_parquet needs it

        raw = pd.read_parquet(path, columns=[column])[column].astype(str).to_numpy(dtype=object)
    else:
        data = load_csv(path, columns=columns, label_column=column)
        raw = data.label_values
    assert raw is not None  # the class column is required, so the loader read it
    y = [GOOD if str(v).strip().lower() in NORMAL_LABELS else str(v).strip().lower() for v in raw]
    if modality is None:
        signals = all(SIGNAL_FEATURE_SEPARATOR in name for name in data.feature_names)
        modality = "signals" if signals else "spc"
    return TrainingSet(data.X, y, list(data.feature_names), modality, str(path), sku)

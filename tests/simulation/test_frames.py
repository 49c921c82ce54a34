"""Frame simulator: determinism, labelled defects with masks, the MVTec layout, the stream."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest
from PIL import Image

from linewatch.errors import ConfigError
from linewatch.simulation.frames import (
    DEFECT_TYPES,
    KNOWN_SKUS,
    render_batch,
    render_frame,
    sku_spec,
    stream_frames,
    write_dataset,
)

SIZE = 64


def test_frames_are_deterministic_per_seed_and_vary_between_parts() -> None:
    a, _ = render_batch("bracket-a", n=3, size=SIZE, seed=5)
    b, _ = render_batch("bracket-a", n=3, size=SIZE, seed=5)
    c, _ = render_batch("bracket-a", n=3, size=SIZE, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # realistic nuisance variation: good parts are not pixel copies of each other
    assert np.abs(a[0].astype(int) - a[1].astype(int)).mean() > 1.0


@pytest.mark.parametrize("sku", sorted(KNOWN_SKUS))
def test_every_defect_has_a_small_nonempty_mask_where_the_frame_changes(sku: str) -> None:
    _, good_masks = render_batch(sku, n=2, size=SIZE, seed=0, split="test")
    assert not good_masks.any()
    for defect in DEFECT_TYPES:
        for seed in range(3):
            # same rng, same part and light: the pair differs only by the defect
            good, no_mask = render_frame(sku, defect=None, size=SIZE, rng=np.random.default_rng(seed))
            bad, mask = render_frame(sku, defect=defect, size=SIZE, rng=np.random.default_rng(seed))
            assert bad.dtype == np.uint8 and bad.shape == good.shape
            assert bad.ndim == (2 if sku_spec(sku).grayscale else 3)
            assert not no_mask.any()
            assert 0 < mask.mean() < 0.15, (
                f"{sku}/{defect}: a defect is local, got {mask.mean():.0%} of the frame"
            )
            diff = np.abs(bad.astype(int) - good.astype(int))
            diff = diff.max(axis=-1) if diff.ndim == 3 else diff
            assert diff[mask].mean() >= 5, f"{sku}/{defect}: the masked pixels barely change"
            assert diff[~mask].mean() <= 0.5, f"{sku}/{defect}: the defect changes pixels outside its mask"


def test_unknown_skus_get_a_stable_variant_and_bad_arguments_are_refused() -> None:
    assert sku_spec("gizmo-x") == sku_spec("gizmo-x")
    assert sku_spec("gizmo-x").kind in {"plate", "washer", "fabric", "grain"}
    with pytest.raises(ConfigError, match="unknown defect"):
        render_batch("bracket-a", n=1, size=SIZE, defect="crack")
    with pytest.raises(ConfigError, match="too small"):
        render_batch("bracket-a", n=1, size=16)
    with pytest.raises(ConfigError, match="defect_rate"):
        next(stream_frames("bracket-a", defect_rate=1.5))


def test_stream_yields_labelled_frames_at_the_requested_rate() -> None:
    frames = list(stream_frames("washer-b", size=SIZE, seed=2, defect_rate=0.5, limit=40))
    assert [f.index for f in frames] == list(range(40))
    labels = [f.label for f in frames]
    assert set(labels) <= {"good", *DEFECT_TYPES}
    assert 8 <= sum(label != "good" for label in labels) <= 32
    assert all(f.mask.any() == (f.label != "good") for f in frames)
    again = list(islice(stream_frames("washer-b", size=SIZE, seed=2, defect_rate=0.5), 5))
    for x, y in zip(frames[:5], again, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
    assert all(f.label == "good" for f in stream_frames("washer-b", size=SIZE, defect_rate=0.0, limit=10))


def test_write_dataset_uses_the_mvtec_layout(tmp_path) -> None:
    summary = write_dataset(
        tmp_path,
        sku="grain-d",
        n_train=3,
        n_test_good=2,
        n_test_per_defect=2,
        size=SIZE,
        seed=1,
        defects=("scratch", "spot"),
    )
    assert summary["counts"] == {"train/good": 3, "test/good": 2, "test/scratch": 2, "test/spot": 2}
    assert sorted(p.name for p in (tmp_path / "train" / "good").iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
    ]
    for defect in ("scratch", "spot"):
        for i in range(2):
            img = Image.open(tmp_path / "test" / defect / f"{i:03d}.png")
            mask = np.asarray(Image.open(tmp_path / "ground_truth" / defect / f"{i:03d}_mask.png"))
            assert img.mode == "L" and img.size == (SIZE, SIZE)  # grain-d is a monochrome camera
            assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) == {0, 255}
    # the files are exactly what render_batch produces in memory
    images, _ = render_batch("grain-d", n=2, size=SIZE, seed=1, split="test", defect="spot")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "test" / "spot" / "001.png")), images[1])
    assert json.loads((tmp_path / "dataset.json").read_text())["sku"] == "grain-d"
    assert not (tmp_path / "ground_truth" / "good").exists()

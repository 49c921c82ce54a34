"""Folder backtest on a small generated MVTec-layout dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from linewatch.backtest.images import (
    check_calibration_budget,
    load_frame,
    run_images_backtest,
    scan_dataset,
)
from linewatch.detectors.bundle import ModelBundle
from linewatch.detectors.patchcore import PRESETS, PatchCore
from linewatch.errors import ConfigError, DataError
from linewatch.simulation.frames import write_dataset

SIZE = 128
DEFECTS = ("colour_patch", "missing_feature", "spot")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bracket")
    write_dataset(
        root,
        sku="bracket-a",
        n_train=50,
        n_test_good=10,
        n_test_per_defect=5,
        size=SIZE,
        seed=3,
        defects=DEFECTS,
    )
    return root


def test_backtest_reports_the_documented_metrics(dataset: Path, tmp_path: Path) -> None:
    stages: set[str] = set()
    result = run_images_backtest(
        dataset,
        target_far=0.5,  # 20 held-out frames resolve no finer false-alarm rate
        calibration_fraction=0.4,
        coreset_ratio=0.1,
        seed=0,
        image_size=SIZE,
        progress=lambda stage, done, total: stages.add(stage),
        model_out=tmp_path / "model",
    )
    json.dumps(result)  # the CLI writes it as JSON
    assert {"image_auroc", "pixel_auroc", "f1", "fps", "n_train", "n_test"} <= set(result)
    assert result["n_train"] == 30 and result["n_calibration"] == 20
    assert result["n_test"] == 25 and result["n_test_good"] == 10 and result["n_test_defect"] == 15
    assert result["image_auroc"] >= 0.8
    assert result["pixel_auroc"] >= 0.9
    assert result["f1"] is not None and result["f1"] > 0.6
    assert result["fps"] > 0 and result["fit_seconds"] > 0
    assert result["calibrator"] == "empirical" and result["target_far"] == 0.5
    assert set(result["per_defect"]) == set(DEFECTS)
    for defect in DEFECTS:
        entry = result["per_defect"][defect]
        assert entry["n"] == 5 and entry["pixel_auroc"] is not None and entry["image_auroc"] is not None
    assert stages == {"features", "coreset", "scoring"}
    # the saved model is the one that was evaluated: it reproduces the threshold and scores frames
    model = ModelBundle.load(tmp_path / "model")
    assert model.raw_threshold == pytest.approx(result["threshold"])
    from PIL import Image

    frame = np.asarray(Image.open(dataset / "test" / "spot" / "000.png"))
    assert model.score(frame[None]).raw.shape == (1,)


def test_backtest_is_reproducible_and_works_without_masks(dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "nomask"
    shutil.copytree(dataset, copy)
    shutil.rmtree(copy / "ground_truth")
    kwargs = {
        "target_far": 0.5,
        "calibration_fraction": 0.4,
        "coreset_ratio": 0.05,
        "seed": 1,
        "image_size": SIZE,
    }
    a = run_images_backtest(copy, **kwargs)
    b = run_images_backtest(copy, **kwargs)
    assert a["pixel_auroc"] is None
    assert all(entry["pixel_auroc"] is None for entry in a["per_defect"].values())
    assert a["image_auroc"] == b["image_auroc"] and a["threshold"] == b["threshold"]


def test_backtest_refuses_folders_that_are_not_mvtec_shaped(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MVTec AD layout"):
        run_images_backtest(tmp_path)
    (tmp_path / "train" / "good").mkdir(parents=True)
    (tmp_path / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        scan_dataset(tmp_path)
    (tmp_path / "train" / "good" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "train" / "good" / "also.png").write_bytes(b"not a png")
    (tmp_path / "test" / "good" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        load_frame(tmp_path / "train" / "good" / "broken.png", (32, 32))
    with pytest.raises(ConfigError, match="calibration_fraction"):
        run_images_backtest(tmp_path, calibration_fraction=1.0)


def test_defaults_calibrate_200_good_images_and_too_few_fail_before_any_feature_is_extracted(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cross-fitting (the default) scores all 200 good images: enough for POT at the default 5 %.
    assert check_calibration_budget(200, None, 0.05) == 200
    # The real set that failed: 204 images at 20 % hold out 41, one short of POT's 42.
    with pytest.raises(ConfigError, match=r"leave out --calibration-fraction") as err:
        check_calibration_budget(204, 0.2, 0.05)
    assert "41 held-out" in str(err.value) and "--target-far" in str(err.value)
    with pytest.raises(ConfigError, match="--calibration auto"):
        check_calibration_budget(204, 0.25, 0.05, "empirical")
    with pytest.raises(ConfigError) as few:  # 30 in all: no option can help, only more images
        check_calibration_budget(30, None, 0.05)
    assert "--calibration-fraction" not in str(few.value) and "at least 42" in str(few.value)

    def no_features(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were extracted before the calibration budget was checked")

    monkeypatch.setattr(PatchCore, "_patch_features", no_features)
    with pytest.raises(ConfigError, match="--calibration-fraction"):
        run_images_backtest(dataset, target_far=0.05, calibration_fraction=0.2, image_size=SIZE)
    with pytest.raises(ConfigError, match="preset"):
        run_images_backtest(dataset, preset="slow")


def test_backtest_takes_a_preset_and_records_it(dataset: Path) -> None:
    result = run_images_backtest(dataset, preset="accurate", target_far=0.5, calibration_fraction=0.4,
                                 image_size=SIZE, coreset_ratio=0.05, max_bank_size=2048)
    assert result["preset"] == "accurate"
    params = result["detector_params"]
    # explicit options win over the preset, the rest is the preset's
    assert params["image_size"] == SIZE and params["coreset_ratio"] == 0.05 and params["max_bank_size"] == 2048
    assert params["reweight_k"] == PRESETS["accurate"]["reweight_k"]
    assert result["image_auroc"] >= 0.8

"""Every image detector in the table keeps the contract through the shared bundle, like the tabular ones.

Fitted, calibrated (by :mod:`linewatch.detectors.calibration`, nothing of the detector's own),
saved and loaded as one :class:`ModelBundle`, seeded: the same data and seed give the same model,
and a loaded bundle answers exactly as the one that was saved.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from linewatch.detectors import table
from linewatch.detectors.bundle import BUNDLE_FILE, ModelBundle, Scope
from linewatch.detectors.calibration import EmpiricalCalibrator, PotCalibrator, make_calibrator
from linewatch.simulation.frames import render_batch

SIZE = 64


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    good, _ = render_batch("washer", n=48, size=SIZE, seed=0)
    bad, masks = render_batch("washer", n=6, size=SIZE, seed=5, defect="scratch")
    return {"good": good, "bad": bad, "masks": masks}


@pytest.mark.parametrize("name", sorted(table.names("image")))
def test_image_detector_through_the_shared_bundle(tmp_path, frames, name) -> None:
    cls = table.get_detector(name)

    def fit(seed: int) -> ModelBundle:
        return ModelBundle.fit(name, frames["good"], modality="frames", scope=Scope(sku="washer", camera="cam-1"),
                               target_far=0.5, calibration_fraction=0.5, seed=seed,
                               detector_params={"image_size": SIZE, "provider": "cpu"})

    bundle = fit(0)
    assert isinstance(bundle.detector, cls) and bundle.inputs.kind == "image"
    assert bundle.inputs.image_size == (SIZE, SIZE) and bundle.meta["n_calibration"] == 24
    # Calibrated by the shared module on the 24 held-out good frames, exactly as it would be by hand.
    assert isinstance(bundle.calibrator, EmpiricalCalibrator | PotCalibrator)
    expected = make_calibrator("auto", 0.5, n_normal=24)
    assert type(bundle.calibrator) is type(expected)
    assert bundle.threshold == pytest.approx(-np.log10(0.5))

    out = bundle.score(np.concatenate([frames["good"][:6], frames["bad"]]))
    assert out.raw.shape == (12,) and out.contributions is None
    assert out.raw[6:].mean() > out.raw[:6].mean()
    np.testing.assert_array_equal(out.is_anomaly, out.raw > bundle.raw_threshold)

    again = fit(0)  # seeded: same data, same seed, same model
    np.testing.assert_array_equal(again.score(frames["bad"]).raw, bundle.score(frames["bad"]).raw)

    bundle.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / BUNDLE_FILE).read_text())
    assert doc["modality"] == "frames" and doc["scope"] == {"asset": "*", "sku": "washer", "camera": "cam-1"}
    assert doc["input"]["kind"] == "image" and doc["input"]["image_size"] == [SIZE, SIZE]
    back = ModelBundle.load(tmp_path / "m")
    assert back.scope == bundle.scope and back.modality == "frames" and back.version == bundle.version
    a, b = bundle.score(frames["bad"]), back.score(frames["bad"])
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.tail_probability, b.tail_probability)
    np.testing.assert_array_equal(a.is_anomaly, b.is_anomaly)
    np.testing.assert_array_equal(bundle.detector.heatmap(frames["bad"]), back.detector.heatmap(frames["bad"]))


def test_image_models_of_the_first_release_still_load(tmp_path, frames) -> None:
    # The first release saved PatchCore's own files with its calibrator inside, next to image_model.json.
    bundle = ModelBundle.fit("patchcore", frames["good"], modality="frames", target_far=0.5, calibration_fraction=0.5,
                             detector_params={"image_size": SIZE, "provider": "cpu"})
    bundle.detector.save(tmp_path)
    meta_file = tmp_path / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["params"]["fitted"]["calibrator"] = bundle.calibrator.to_dict()
    meta_file.write_text(json.dumps(meta))
    (tmp_path / "image_model.json").write_text(json.dumps({"sku": "washer", "camera": "cam-2", "meta": bundle.meta}))
    old = ModelBundle.load(tmp_path)
    assert old.modality == "frames" and old.scope == Scope(sku="washer", camera="cam-2")
    np.testing.assert_array_equal(old.score(frames["bad"]).tail_probability,
                                  bundle.score(frames["bad"]).tail_probability)

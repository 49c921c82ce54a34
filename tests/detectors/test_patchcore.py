"""PatchCore: the image-detector contract, the coreset, search and heat-map helpers, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from linewatch.backtest.metrics import auroc
from linewatch.detectors import base, coreset, heatmap, table
from linewatch.detectors import patchcore as pc
from linewatch.detectors.calibration import make_calibrator
from linewatch.detectors.image_base import ImageDetector
from linewatch.detectors.patchcore import PatchCore
from linewatch.errors import ConfigError, DataError, NotFittedError
from linewatch.simulation.frames import render_batch

SIZE = 128  # 16x16 patches: small enough to be quick, large enough for the simulator's defects
VISIBLE = ("colour_patch", "missing_feature")  # spots at 128 px are a few pixels wide: too noisy here


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    train, _ = render_batch("bracket-a", n=24, size=SIZE, seed=0)
    good, _ = render_batch("bracket-a", n=8, size=SIZE, seed=0, split="test")
    bad = [render_batch("bracket-a", n=8, size=SIZE, seed=0, split="test", defect=d) for d in VISIBLE]
    return {
        "train": train,
        "good": good,
        "bad": np.concatenate([b[0] for b in bad]),
        "bad_masks": np.concatenate([b[1] for b in bad]),
    }


@pytest.fixture(scope="module")
def fitted(data) -> PatchCore:
    return PatchCore(image_size=SIZE, coreset_ratio=0.1, seed=0, provider="cpu").fit(data["train"])


def test_patchcore_is_an_image_detector_not_a_tabular_one() -> None:
    assert table.get_detector("patchcore") is PatchCore
    assert "patchcore" in table.names("image")
    assert "patchcore" not in table.names("table")  # the tabular conformance test feeds (n, d) tables
    assert isinstance(PatchCore(), ImageDetector)


def test_scoring_before_fit_fails_clearly(data) -> None:
    det = PatchCore(image_size=SIZE)
    for call in (det.score, det.heatmap, det.patch_scores):
        with pytest.raises(NotFittedError, match="fit"):
            call(data["good"])
    with pytest.raises(NotFittedError):
        det.save("unused")


def test_defective_frames_score_higher_and_heat_maps_point_at_the_defect(data, fitted) -> None:
    s_good = fitted.score(data["good"])
    s_bad, maps = fitted.score_with_heatmap(data["bad"])
    assert s_good.shape == (8,) and s_bad.shape == (len(data["bad"]),)
    labels = np.r_[np.zeros(len(s_good), bool), np.ones(len(s_bad), bool)]
    assert auroc(labels, np.r_[s_good, s_bad]) >= 0.85
    assert maps.shape == (len(data["bad"]), SIZE, SIZE) and maps.dtype == np.float32
    peaks = [data["bad_masks"][i].ravel()[np.argmax(maps[i])] for i in range(len(maps))]
    assert np.mean(peaks) >= 0.6
    good_maps = fitted.heatmap(data["good"])
    pixel_truth = np.concatenate([np.zeros_like(data["bad_masks"][:8]), data["bad_masks"]])
    assert auroc(pixel_truth.ravel(), np.concatenate([good_maps, maps]).ravel()) >= 0.9
    # the image score follows from the patch distances (the fast preset: the worst patch)
    assert fitted.image_score == pc.PRESETS["fast"]["image_score"]
    patches = fitted.patch_scores(data["bad"])
    np.testing.assert_allclose(s_bad, fitted.image_scores_from_patch_scores(patches), rtol=1e-6)


def test_input_is_not_mutated(data, fitted) -> None:
    frames = data["bad"].copy()
    fitted.score_with_heatmap(frames)
    np.testing.assert_array_equal(frames, data["bad"])


def test_grayscale_colour_and_any_size_frames_work(data, fitted) -> None:
    gray = data["good"][:3].mean(axis=-1).astype(np.uint8)
    s_gray = fitted.score(gray)
    np.testing.assert_allclose(fitted.score(gray[..., None]), s_gray, rtol=1e-6)
    np.testing.assert_allclose(fitted.score(np.repeat(gray[..., None], 3, axis=-1)), s_gray, rtol=1e-6)
    # a list of frames of different sizes: resized to the model size; heat maps need one size
    mixed = [data["good"][0], np.ascontiguousarray(data["good"][1][:100, :120]), gray[2]]
    assert fitted.score(mixed).shape == (3,)
    with pytest.raises(DataError, match="different sizes"):
        fitted.heatmap(mixed)
    assert fitted.heatmap(mixed, size=(50, 60)).shape == (3, 50, 60)
    # heat maps come back at the frames' own size by default
    big = np.stack([np.asarray(np.kron(f, np.ones((2, 2, 1))), dtype=np.uint8) for f in data["bad"][:2]])
    assert fitted.heatmap(big).shape == (2, 2 * SIZE, 2 * SIZE)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 64, 64, 3), dtype=np.float32), "uint8"),
        (np.zeros((64, 64, 3), dtype=np.uint8), "ambiguous"),
        (np.zeros((2, 64, 64, 4), dtype=np.uint8), "expected"),
        (np.zeros((0, 64, 64, 3), dtype=np.uint8), "no frames"),
        ([], "no frames"),
        (np.zeros((2, 4, 64), dtype=np.uint8), "at least"),
        ("frame.png", "expected a uint8 array"),
    ],
)
def test_bad_frames_are_refused_with_a_clear_error(fitted, frames, message) -> None:
    with pytest.raises(DataError, match=message):
        fitted.score(frames)


def test_bad_parameters_are_refused(data) -> None:
    with pytest.raises(ConfigError, match="multiple of 16"):
        PatchCore(image_size=100).fit(data["train"][:2])
    with pytest.raises(ConfigError, match="coreset_ratio"):
        PatchCore(image_size=SIZE, coreset_ratio=0.0).fit(data["train"][:2])
    with pytest.raises(ConfigError, match="provider"):
        PatchCore(image_size=SIZE, provider="tpu").fit(data["train"][:2])


def test_same_seed_same_model_and_progress_is_reported(data, fitted) -> None:
    seen: list[tuple[str, int, int]] = []
    again = PatchCore(image_size=SIZE, coreset_ratio=0.1, seed=0, provider="cpu").fit(
        data["train"], progress=lambda stage, done, total: seen.append((stage, done, total))
    )
    np.testing.assert_array_equal(again.memory_bank_, fitted.memory_bank_)
    np.testing.assert_array_equal(again.score(data["bad"]), fitted.score(data["bad"]))
    stages = {s for s, _, _ in seen}
    assert stages == {"features", "coreset"}
    last = {s: (d, t) for s, d, t in seen}
    assert last["features"] == (24, 24) and last["coreset"][0] == last["coreset"][1] == len(
        fitted.memory_bank_
    )
    other = PatchCore(image_size=SIZE, coreset_ratio=0.1, seed=1, provider="cpu").fit(data["train"])
    assert not np.array_equal(other.memory_bank_, fitted.memory_bank_)


def test_bank_size_follows_ratio_floor_and_cap(data) -> None:
    n_patches = 24 * (SIZE // 8) ** 2  # 6144
    det = PatchCore(image_size=SIZE, coreset_ratio=0.5, max_bank_size=None, seed=0).fit(data["train"])
    assert det.memory_bank_.shape == (n_patches // 2, 152) and det.n_train_patches_ == n_patches
    capped = PatchCore(image_size=SIZE, coreset_ratio=0.5, max_bank_size=300, seed=0).fit(data["train"])
    assert capped.memory_bank_.shape[0] == 300
    floored = PatchCore(image_size=SIZE, coreset_ratio=0.001, seed=0).fit(data["train"])
    assert floored.memory_bank_.shape[0] == pc.MIN_BANK_SIZE


def test_save_load_round_trip_without_pickle(tmp_path, data, fitted) -> None:
    det = PatchCore(image_size=SIZE, coreset_ratio=0.1, projection_dim=48, seed=0).fit(data["train"])
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / base.METADATA_FILE).read_text())
    assert meta["kind"] == "patchcore" and meta["params"]["projection_dim"] == 48
    with np.load(tmp_path / "m" / base.ARRAYS_FILE, allow_pickle=False) as npz:
        assert set(npz.files) == {"memory_bank", "projection"}
    back = PatchCore.load(tmp_path / "m")
    assert back.feature_dim_ == 48 and back.memory_bank_.shape[1] == 48
    s1, m1 = det.score_with_heatmap(data["bad"])
    s2, m2 = back.score_with_heatmap(data["bad"])
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(m1, m2)


def test_load_refuses_a_model_built_on_another_backbone(tmp_path, fitted) -> None:
    fitted.save(tmp_path / "m")
    meta_file = tmp_path / "m" / base.METADATA_FILE
    meta = json.loads(meta_file.read_text())
    meta["params"]["fitted"]["backbone_sha256"] = "0" * 64
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="refit"):
        PatchCore.load(tmp_path / "m")


def test_small_held_out_sets_get_the_shared_calibrator_with_a_widened_tail() -> None:
    # Image models hold out tens of good frames; the shared calibration module handles that for
    # every detector (PatchCore has no calibration of its own any more).
    rng = np.random.default_rng(0)
    held_out = rng.gamma(4.0, 1.0, size=60)
    cal = make_calibrator("auto", 0.2, n_normal=60).fit(held_out)  # 60 >= 10 / 0.2: empirical
    assert cal.kind == "empirical" and np.mean(cal.is_alarm(held_out)) <= 0.2
    pot = make_calibrator("auto", 0.01, n_normal=60).fit(held_out)  # too few for empirical: POT, tail widened
    assert pot.kind == "pot" and pot.tail_fraction_ > 0.05
    assert pot.threshold_ > np.quantile(held_out, 0.9)
    with pytest.raises(ConfigError, match="train on more known-good data"):
        make_calibrator("auto", 0.01, n_normal=20).fit(held_out[:20])
    assert not hasattr(PatchCore(), "calibrate")


def test_greedy_coreset_covers_better_than_a_random_subset() -> None:
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 1, (2000, 8)), rng.normal(6, 0.5, (20, 8))]).astype(np.float32)
    idx = coreset.greedy_coreset(pts, 50, seed=0, selection_dim=None)
    assert len(set(idx.tolist())) == 50
    np.testing.assert_array_equal(idx, coreset.greedy_coreset(pts, 50, seed=0, selection_dim=None))

    def radius(sub: np.ndarray) -> float:
        return float(np.sqrt(coreset.nearest_sq_distances(pts, coreset.augment_bank(pts[sub])).max()))

    random_sub = rng.choice(len(pts), 50, replace=False)
    assert radius(idx) < 0.8 * radius(random_sub)
    assert (idx >= 2000).any()  # the small far cluster is covered
    np.testing.assert_array_equal(coreset.greedy_coreset(pts, 5000), np.arange(len(pts)))


def test_nearest_search_matches_brute_force_across_chunks(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(300, 20)).astype(np.float32)
    queries = rng.normal(size=(1000, 20)).astype(np.float32)
    brute = ((queries[:, None, :] - bank[None, :, :]) ** 2).sum(-1).min(axis=1)
    monkeypatch.setattr(coreset, "QUERY_CHUNK_BYTES", 4 * 300 * 70)  # forces 15 chunks
    got = coreset.nearest_sq_distances(queries, coreset.augment_bank(bank))
    np.testing.assert_allclose(got, brute, rtol=1e-4, atol=1e-4)
    with pytest.raises(DataError, match="do not match"):
        coreset.nearest_sq_distances(queries[:, :5], coreset.augment_bank(bank))


def test_resize_maps_is_bilinear_and_exact_on_constants() -> None:
    maps = np.full((2, 4, 6), 3.0, dtype=np.float32)
    np.testing.assert_allclose(heatmap.resize_maps(maps, (17, 9)), 3.0, rtol=1e-6)
    ramp = np.arange(4, dtype=np.float32)[None, :, None] * np.ones((1, 1, 3), np.float32)
    up = heatmap.resize_maps(ramp, (8, 3))[0, :, 0]
    assert np.all(np.diff(up) >= 0) and up[0] == 0.0 and up[-1] == 3.0


def test_heatmap_summary_locates_the_defect_for_the_score_message(data, fitted) -> None:
    threshold = float(fitted.heatmap(data["good"]).max()) * 1.01  # above every good pixel
    for heat in fitted.heatmap(data["good"][:2]):
        summary = heatmap.summarize_heatmap(heat, threshold=threshold)
        assert summary["box"] is None and summary["area_fraction"] == 0.0
        assert summary["thumbnail"].dtype == np.uint8 and summary["thumbnail"].max() < 128
    maps = fitted.heatmap(data["bad"])
    hits = 0
    for heat, mask in zip(maps, data["bad_masks"], strict=True):
        summary = heatmap.summarize_heatmap(heat, threshold=threshold, thumbnail_size=16)
        assert summary["thumbnail"].shape == (16, 16)
        if summary["box"] is not None:
            top, left, bottom, right = summary["box"]
            assert top <= summary["peak"][0] < bottom and left <= summary["peak"][1] < right
            hits += bool(mask[top:bottom, left:right].any())
    assert hits >= len(maps) // 2
    with pytest.raises(ConfigError, match="threshold"):
        heatmap.summarize_heatmap(maps[0], threshold=0.0)


def test_heat_maps_can_be_drawn_later_from_patch_scores(data, fitted) -> None:
    patches = fitted.patch_scores(data["bad"][:3])
    scores, maps = fitted.score_with_heatmap(data["bad"][:3])
    np.testing.assert_allclose(fitted.image_scores_from_patch_scores(patches), scores, rtol=1e-6)
    np.testing.assert_allclose(fitted.heatmap_from_patch_scores(patches, (SIZE, SIZE)), maps, rtol=1e-6)
    assert fitted.heatmap_from_patch_scores(patches[:1], (40, 30)).shape == (1, 40, 30)


# ---------------------------------------------------------------- presets, aspect, scoring options


def test_presets_fill_what_is_not_given_and_explicit_values_win() -> None:
    fast = PatchCore()
    assert fast.preset == "fast" and pc.DEFAULT_PRESET == "fast"
    for key, value in pc.PRESETS["fast"].items():
        assert getattr(fast, key) == (tuple(value) if isinstance(value, list) else value)
    accurate = PatchCore(preset="accurate", image_size=SIZE)
    assert accurate.image_size == SIZE  # explicit wins
    assert accurate.reweight_k == pc.PRESETS["accurate"]["reweight_k"]
    assert accurate.coreset_ratio == pc.PRESETS["accurate"]["coreset_ratio"]
    # a model records its preset and every value the preset resolved to
    params = accurate.get_params()
    assert params["preset"] == "accurate" and None not in (params["image_size"], params["resize"], params["layers"])
    with pytest.raises(ConfigError, match="preset"):
        PatchCore(preset="best")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resize": "crop"}, "resize"),
        ({"layers": ("s4",)}, "layers"),
        ({"image_score": "mean"}, "image_score"),
        ({"reweight_k": 1}, "reweight_k"),
        ({"max_bank_size": -1}, "max_bank_size"),
    ],
)
def test_bad_scoring_options_are_refused(data, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        PatchCore(image_size=SIZE, **kwargs).fit(data["train"][:2])


def test_aspect_ratio_is_kept_for_non_square_frames(data) -> None:
    wide = np.ascontiguousarray(np.concatenate([data["train"][:6], data["train"][6:12]], axis=2)[:, ::2])  # 64x256
    kept = PatchCore(image_size=SIZE, resize="aspect", coreset_ratio=0.2, seed=0)
    stretched = PatchCore(image_size=SIZE, resize="stretch", coreset_ratio=0.2, seed=0)
    assert kept.model_size((64, 256)) == pc.aspect_size((64, 256), (SIZE, SIZE)) == (64, 256)
    assert stretched.model_size((64, 256)) == (SIZE, SIZE)
    assert kept.model_size((SIZE, SIZE)) == (SIZE, SIZE)  # square frames: both modes agree
    kept.fit(wide)
    stretched.fit(wide)
    assert kept.patch_scores(wide[:2]).shape == (2, 8, 32)
    assert stretched.patch_scores(wide[:2]).shape == (2, SIZE // 8, SIZE // 8)
    assert kept.n_train_patches_ == 6 * 8 * 32
    # frames of several sizes still score (one backbone batch per model size); patch maps need one size
    mixed = [wide[0], data["good"][0], wide[1]]
    scores = kept.score(mixed)
    np.testing.assert_allclose(scores[[0, 2]], kept.score(wide[:2]), rtol=1e-5)
    np.testing.assert_allclose(scores[1], kept.score(data["good"][:1])[0], rtol=1e-5)
    with pytest.raises(DataError, match="model sizes"):
        kept.patch_scores(mixed)
    assert kept.heatmap(mixed, size=(40, 50)).shape == (3, 40, 50)


def test_image_score_options_and_reweighting(data, fitted) -> None:
    frames = np.concatenate([data["good"][:4], data["bad"][:4]])
    raw = fitted.patch_scores(frames).max(axis=(1, 2))
    scores = {}
    for option in pc.IMAGE_SCORES:
        det = PatchCore(image_size=SIZE, coreset_ratio=0.1, seed=0, image_score=option).fit(data["train"])
        scores[option] = det.score(frames)
        patches = det.patch_scores(frames)
        np.testing.assert_allclose(det.image_scores_from_patch_scores(patches), scores[option], rtol=1e-5)
    np.testing.assert_allclose(scores["max"], raw, rtol=1e-6)
    # smoothing never raises the peak, and the top 1 % average is at most the peak
    assert np.all(scores["smoothed_max"] <= raw * (1 + 1e-5))
    assert np.all(scores["topk"] <= scores["smoothed_max"] * (1 + 1e-5))
    rw = PatchCore(image_size=SIZE, coreset_ratio=0.1, seed=0, reweight_k=3).fit(data["train"])
    weighted, patches = rw.score_patches(frames)
    weights = weighted / patches.max(axis=(1, 2))
    assert np.all((weights > 0) & (weights < 1))  # eq. 7: 1 - softmax(...)[0] of 3 neighbours
    with pytest.raises(ConfigError, match="score_patches"):
        rw.image_scores_from_patch_scores(patches)


def _folds(n: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    blocks = np.array_split(np.arange(n), k)
    return [(np.concatenate([b for j, b in enumerate(blocks) if j != i]), held) for i, held in enumerate(blocks)]


def test_out_of_fold_scores_match_a_plain_refit_and_never_see_their_own_block(data) -> None:
    frames = data["train"][:12]
    params = {"image_size": SIZE, "coreset_ratio": 0.2, "max_bank_size": 0, "seed": 0}
    folds = _folds(12, 3)
    det = PatchCore(**params)
    oof = det.out_of_fold_scores(frames, folds[:2])  # the last block is held out by no fold
    assert oof.shape == (12,) and oof.dtype == np.float64
    assert np.isnan(oof[8:]).all() and np.isfinite(oof[:8]).all()
    for fit_idx, held_idx in folds[:2]:
        plain = PatchCore(**params).fit(frames[fit_idx]).score(frames[held_idx])
        np.testing.assert_allclose(oof[held_idx], plain, rtol=1e-4, atol=1e-5)
    # every patch of the fit blocks is in the bank (ratio 1): a frame scores ~0 exactly when a copy
    # of it was in the other blocks, so the held-out frames' positive scores prove they were not
    exact = {**params, "coreset_ratio": 1.0}
    distinct = PatchCore(**exact).out_of_fold_scores(frames[:8], _folds(8, 2))
    in_sample = PatchCore(**exact).fit(frames[:8]).score(frames[:8])
    assert in_sample.max() < 0.01 * distinct.min()  # ~0 up to the squared-norm trick's rounding
    twins = np.concatenate([frames[:4], frames[:4]])
    assert PatchCore(**exact).out_of_fold_scores(twins, _folds(8, 2)).max() < 0.01 * distinct.min()
    with pytest.raises(DataError, match="overlap"):
        PatchCore(**params).out_of_fold_scores(frames, [(np.arange(6), np.arange(4, 12))])


def test_fit_after_out_of_fold_scores_does_not_extract_again(data, monkeypatch) -> None:
    frames = data["train"][:12]
    params = {"image_size": SIZE, "coreset_ratio": 0.2, "seed": 0}
    det = PatchCore(**params)
    det.out_of_fold_scores(frames, _folds(12, 3))
    calls: list[int] = []
    original = PatchCore._patch_features

    def counting(self, prepared, progress=None):
        calls.append(len(prepared))
        return original(self, prepared, progress)

    monkeypatch.setattr(PatchCore, "_patch_features", counting)
    det.fit(frames)
    assert calls == []  # the bundle's refit reuses the embeddings
    plain = PatchCore(**params).fit(frames)
    assert calls == [12]
    np.testing.assert_array_equal(det.memory_bank_, plain.memory_bank_)
    assert det.training_sha256_ == plain.training_sha256_
    det.fit(frames[:6])  # other frames: the cache does not apply (and was consumed anyway)
    assert calls == [12, 6]


def test_models_saved_before_presets_load_with_their_old_scoring(tmp_path, data) -> None:
    old = PatchCore(image_size=SIZE, resize="stretch", coreset_ratio=0.1, seed=0).fit(data["train"])
    old.save(tmp_path / "m")
    meta_file = tmp_path / "m" / base.METADATA_FILE
    meta = json.loads(meta_file.read_text())
    for key in ("preset", "resize", "layers", "reweight_k", "image_score"):
        meta["params"].pop(key)
    meta["params"]["max_bank_size"] = None  # the first release's "no bound"
    meta_file.write_text(json.dumps(meta))
    back = PatchCore.load(tmp_path / "m")
    assert back.resize == "stretch" and back.image_score == "max" and back.reweight_k == 0
    assert back.max_bank_size == 0
    wide = np.ascontiguousarray(np.concatenate([data["bad"][:2], data["bad"][2:4]], axis=2))
    np.testing.assert_array_equal(back.score(wide), old.score(wide))
    # a model saved now records its preset and loads as it was
    new = PatchCore(preset="accurate", image_size=SIZE, coreset_ratio=0.1, seed=0).fit(data["train"])
    new.save(tmp_path / "n")
    again = PatchCore.load(tmp_path / "n")
    assert again.get_params() == new.get_params()
    np.testing.assert_array_equal(again.score(data["bad"]), new.score(data["bad"]))

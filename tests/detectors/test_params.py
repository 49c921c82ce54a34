"""ParamsMixin: parameters come from ``__init__`` alone, and the saved layout does not drift.

The saved layout matters because the mixin derives file keys from attribute names: renaming
``mean_`` would silently rename the saved array and break every model already in the registry.
The pinned table below is the layout models were saved with before the mixin existed.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from linewatch.detectors import table
from linewatch.detectors.base import ARRAYS_FILE, METADATA_FILE, ParamsMixin
from linewatch.errors import NotFittedError

FAST_PARAMS: dict[str, dict] = {"isolation_forest": {"n_estimators": 10}, "half_space_trees": {"window_size": 50}}
#: name -> (params keys, {nested params key: its keys}, arrays.npz keys, extra files/directories).
SAVED_LAYOUT: dict[str, tuple[list[str], dict[str, list[str]], list[str], list[str]]] = {
    "autoencoder": (
        ["activation", "alpha", "bottleneck", "groups", "hidden", "learning_rate", "max_iter", "n_threads", "seed"],
        {},
        ["center", "scale"],
        ["model.onnx"],
    ),
    "cusum": (
        ["after_alarm", "h", "headstart", "k", "phase1_max_iter"], {}, ["center", "mr_bar", "sigma", "state"], []),
    "dynamic_pca": (
        ["explained_variance", "lags", "limit_quantile", "n_components", "n_features_in", "seed", "statistic"],
        {},
        [],
        ["pca"],
    ),
    "ecod": (["max_reference", "seed"], {}, ["reference", "skew_sign"], []),
    "ewma": (["L", "after_alarm", "lam", "phase1_max_iter"], {}, ["center", "mr_bar", "sigma", "state"], []),
    "half_space_trees": (
        ["height", "learn_quantile", "n_trees", "padding", "range_margin", "seed", "window_size"],
        {},
        ["counters", "feature", "hi", "l_mass", "learn_cutoff", "lo", "r_mass", "threshold"],
        [],
    ),
    "hotelling": (["alpha", "phase1_max_iter", "ridge"], {}, ["covariance", "mean", "n_fit"], []),
    "isolation_forest": (
        ["exporter", "max_features", "max_samples", "n_estimators", "n_threads", "seed"],
        {},
        ["n_features"],
        ["model.onnx"],
    ),
    "mewma": (["after_alarm", "alpha", "lam", "phase1_max_iter", "ridge"], {}, ["covariance", "mean", "state"], []),
    "online_residual": (
        ["guard_z", "half_life", "seed", "state", "warmup"],
        {"state": ["n_seen", "n_skipped", "threshold"]},
        ["mean", "var", "var_floor"],
        [],
    ),
    "pca_monitor": (
        ["alpha", "explained_variance", "fitted", "n_components", "standardize"],
        {"fitted": ["n_components", "n_fit", "spe_ucl", "t2_ucl"]},
        ["components", "eigenvalues", "explained_variance_ratio", "mean", "scale"],
        [],
    ),
    "robust_mahalanobis": (
        ["ridge", "seed", "support_fraction"],
        {},
        ["center", "covariance", "location", "scale", "whitener"],
        [],
    ),
    "shewhart_imr": (["L", "phase1_max_iter"], {}, ["center", "mr_bar", "sigma", "state"], []),
}
NAMES = list(table.names("table"))


def _fitted(name: str):
    X = np.random.default_rng(5).normal(size=(300, 3))
    return table.get_detector(name)(**FAST_PARAMS.get(name, {})).fit(X)


def test_every_tabular_detector_is_pinned() -> None:
    assert sorted(SAVED_LAYOUT) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_params_are_the_keyword_only_init_arguments(name: str) -> None:
    cls = table.get_detector(name)
    assert issubclass(cls, ParamsMixin)
    init = inspect.signature(cls.__init__).parameters.values()
    keyword_only = [p.name for p in init if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in init if p.name != "self"] == keyword_only  # nothing positional
    det = cls()
    assert list(det.get_params()) == keyword_only
    assert det.get_params() == {p.name: p.default for p in init if p.name != "self"}
    assert cls(**det.get_params()).get_params() == det.get_params()


@pytest.mark.parametrize("name", NAMES)
def test_saved_layout_is_the_one_older_models_have(name: str, tmp_path) -> None:
    params_keys, nested, array_keys, extra = SAVED_LAYOUT[name]
    _fitted(name).save(tmp_path)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    assert meta["kind"] == name
    assert sorted(meta["params"]) == params_keys
    assert {k: sorted(v) for k, v in meta["params"].items() if isinstance(v, dict)} == nested
    with np.load(tmp_path / ARRAYS_FILE) as npz:
        assert sorted(npz.files) == array_keys
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ARRAYS_FILE, METADATA_FILE, *extra])


@pytest.mark.parametrize("name", NAMES)
def test_non_default_params_survive_save_and_load(name: str, tmp_path) -> None:
    det = _fitted(name)
    det.save(tmp_path)
    back = type(det).load(tmp_path)
    assert back.get_params() == det.get_params()
    assert all(type(v) is type(getattr(det, k)) for k, v in back.get_params().items())  # tuples stay tuples


@pytest.mark.parametrize("name", NAMES)
def test_save_before_fit_raises(name: str, tmp_path) -> None:
    with pytest.raises(NotFittedError):
        table.get_detector(name)().save(tmp_path)


def test_restore_hook_rebuilds_derived_state(tmp_path) -> None:
    det = _fitted("hotelling")
    det.save(tmp_path)
    back = type(det).load(tmp_path)
    assert isinstance(back.n_fit_, int) and back.ucl_ == det.ucl_
    np.testing.assert_array_equal(back.whitener_, det.whitener_)

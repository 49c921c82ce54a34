"""CSV loading rules and the tabular backtest on small files written by the tests."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.backtest.tabular import choose_detector, run_tabular_backtest
from linewatch.errors import ConfigError, DataError
from linewatch.loaders import load_csv


def _write(path, header, rows, sep=","):
    path.write_text("\n".join([sep.join(header), *(sep.join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_numeric_columns_in_file_order_text_columns_skipped(tmp_path) -> None:
    p = _write(
        tmp_path / "a.csv",
        ["ts", "asset", "b", "a", "fault"],
        [["2026-01-01T00:00:02Z", "p1", 2, 20, "none"], ["2026-01-01T00:00:01Z", "p2", 1, 10, "mean_shift"]],
    )
    d = load_csv(p, label_column="fault", time_column="ts")
    assert d.feature_names == ["b", "a"] and d.ignored_columns == ["asset"]
    np.testing.assert_array_equal(d.X, [[1.0, 10.0], [2.0, 20.0]])  # sorted by time
    assert d.labels.tolist() == [True, False]
    assert d.label_values.tolist() == ["mean_shift", "none"]
    assert d.timestamps.dtype == np.dtype("datetime64[us]")


def test_numeric_label_is_never_a_feature(tmp_path) -> None:
    p = _write(tmp_path / "t.csv", ["x", "y", "label"], [[1, 2, 0], [3, 4, 1], [5, 6, 0]])
    d = load_csv(p, label_column="label", label_optional=True)
    assert d.feature_names == ["x", "y"] and d.labels.tolist() == [False, True, False]
    plain = _write(tmp_path / "u.csv", ["x", "y"], [[1, 2]])
    without = load_csv(plain, label_column="label", label_optional=True)
    assert without.labels is None


def test_columns_option_separator_and_time_offsets(tmp_path) -> None:
    p = _write(
        tmp_path / "s.csv",
        ["t", "a", "b", "ok"],
        [["2026-01-01T01:00:00+01:00", 1, 2, "yes"], ["2026-01-01T00:30:00", 3, 4, "no"]],
        sep=";",
    )
    d = load_csv(p, sep=";", columns=["b", "a"], label_column="ok", time_column="t")
    assert d.feature_names == ["b", "a"]
    np.testing.assert_array_equal(d.X, [[2.0, 1.0], [4.0, 3.0]])  # 00:00 UTC sorts before 00:30
    assert d.labels.tolist() == [True, False]


@pytest.mark.parametrize(
    ("header", "rows", "kwargs", "error", "match"),
    [
        (["a", "b"], [[1, 2]], {"columns": ["c"]}, ConfigError, "not in"),
        (["a", "b"], [[1, 2]], {"label_column": "y"}, ConfigError, "label column 'y'"),
        (["a", "b"], [[1, "x"]], {"columns": ["a", "b"]}, DataError, "'x' is not a number"),
        (["a", "b"], [[1, 2, 3]], {}, DataError, "fields"),
        (["a;b"], [["1;2"]], {}, ConfigError, "--sep"),
        (["t", "a"], [["yesterday", 1]], {"time_column": "t"}, DataError, "ISO 8601"),
        (["a", "b"], [["nan", 1]], {"columns": ["a", "b"]}, DataError, "NaN or infinite"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, header, rows, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        load_csv(_write(tmp_path / "bad.csv", header, rows), **kwargs)


def test_missing_and_empty_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_csv(tmp_path / "empty.csv")


def test_choose_detector_rules() -> None:
    rng = np.random.default_rng(0)
    assert choose_detector(rng.normal(size=(300, 1)))[0] == "ewma"
    assert choose_detector(rng.normal(size=(100, 20)))[0] == "pca_monitor"
    assert choose_detector(rng.exponential(size=(500, 3)))[0] == "isolation_forest"
    assert choose_detector(rng.normal(size=(500, 3)))[0] == "robust_mahalanobis"


def test_backtest_end_to_end_on_a_planted_shift() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(2000, 3))
    test = rng.normal(size=(600, 3))
    test[400:500, 2] += 4.0
    labels = np.zeros(600, bool)
    labels[400:500] = True
    kinds = np.where(labels, "shift", "none").astype(object)
    r = run_tabular_backtest(
        train, test, labels, ["a", "b", "c"], detector="auto", target_far=0.01, label_values=kinds
    )
    assert r["detector"] == "robust_mahalanobis" and "auto_reason" in r
    # 4σ in one of three features at a 1 % false-alarm rate: about 80 % of rows by the χ²₃ tail.
    assert r["recall"] > 0.7 and r["far"] < 0.03 and r["auroc"] > 0.95
    assert r["recall_by_label"] == {"shift": r["recall"]}
    assert max(r["blamed_features"], key=r["blamed_features"].get) == "c"
    assert r["episodes"] == 1 and r["episodes_detected"] == 1
    keys = {"precision", "recall", "f1", "far", "mar", "auroc", "tp", "fp", "tn", "fn", "n_train", "n_test"}
    assert keys <= set(r)


def test_online_detector_is_replayed_prequentially() -> None:
    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(1000, 2)), rng.normal(size=(300, 2))
    labels = np.zeros(300, bool)
    r = run_tabular_backtest(train, test, labels, ["a", "b"], detector="half_space_trees", target_far=0.05)
    assert r["recall"] is None and r["tp"] == 0 and r["far"] < 0.2


def test_unknown_detector_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known detectors"):
        run_tabular_backtest(
            np.zeros((10, 2)), np.zeros((5, 2)), np.zeros(5, bool), ["a", "b"], detector="nope"
        )


def test_groups_are_replayed_as_separate_series(tmp_path) -> None:
    from linewatch.backtest.tabular import replay
    from linewatch.detectors.spc_charts import CUSUMChart

    rng = np.random.default_rng(3)
    det = CUSUMChart().fit(rng.normal(size=(500, 1)))
    X = rng.normal(size=(200, 1))
    groups = np.tile(["a", "b"], 100).astype(object)
    X[groups == "a"] += 1.5  # only asset a drifts
    raw, contrib = replay(det, X, groups)
    assert raw[groups == "b"].max() < 1.0 < raw[groups == "a"].max()  # b's chart never sees a's drift
    np.testing.assert_allclose(raw[groups == "a"], det.score(X[groups == "a"]))
    assert contrib.shape == X.shape
    mixed, _ = replay(det, X)  # one interleaved series: a's drift leaks into b's rows
    assert mixed[groups == "b"].max() > 1.0
    p = _write(tmp_path / "g.csv", ["asset", "x"], [["a", 1], ["b", 2]])
    assert load_csv(p, group_column="asset").groups.tolist() == ["a", "b"]

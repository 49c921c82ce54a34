"""Bad cells in a numeric column: an error that says where and what to do, or an explicit, counted skip."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.errors import ConfigError, DataError
from linewatch.loaders import load_csv, load_table


def _write(path, text):
    path.write_text(text)
    return path


def test_one_bad_cell_is_an_error_naming_file_column_row_value_and_the_fix(tmp_path) -> None:
    p = _write(tmp_path / "good.csv", "part,bore,runout\nP-1,1.0,2.0\nP-2,n/a,2.1\nP-3,1.2,2.2\n")
    with pytest.raises(DataError) as err:
        load_csv(p)
    msg = str(err.value)
    assert str(p) in msg and "column 'bore', data row 2: 'n/a' is not a number" in msg
    assert "--on-bad-rows skip" in msg and "--columns" in msg


@pytest.mark.parametrize(("cell", "what"), [("", "is empty"), ("inf", "is NaN or infinite")])
def test_empty_and_infinite_cells_are_bad_cells_too(tmp_path, cell, what) -> None:
    p = _write(tmp_path / "e.csv", f"a,b\n1,2\n{cell},3\n4,5\n")
    with pytest.raises(DataError, match=f"column 'a', data row 2: '{cell}' {what}"):
        load_csv(p)


def test_skip_drops_and_counts_bad_rows_and_text_columns_stay_ignored(tmp_path) -> None:
    p = _write(tmp_path / "s.csv",
               "ts,asset,bore,runout\n3,a,1.3,x\n1,a,1.1,2.1\n2,b,bad,2.2\n4,b,1.4,2.4\n5,a,1.5,\n")
    d = load_csv(p, time_column="ts", on_bad_rows="skip")
    assert d.skipped_rows == 3 and d.feature_names == ["bore", "runout"] and d.ignored_columns == ["asset"]
    np.testing.assert_array_equal(d.X, [[1.1, 2.1], [1.4, 2.4]])
    assert d.timestamps.tolist() == [1.0, 4.0]  # the time column is cut with the rows
    clean = load_csv(p, time_column="ts", columns=["bore"], on_bad_rows="skip")
    assert clean.skipped_rows == 1  # only the chosen feature columns count
    with pytest.raises(ConfigError, match="--on-bad-rows 'drop'"):
        load_csv(p, on_bad_rows="drop")


def test_a_mostly_text_column_is_not_a_feature(tmp_path) -> None:
    p = _write(tmp_path / "ids.csv", "part,x\nA1,1\n2,2\nB3,3\n")  # one id happens to be a number
    d = load_csv(p)
    assert d.feature_names == ["x"] and d.ignored_columns == ["part"]


def test_the_training_loader_takes_the_same_rule(tmp_path) -> None:
    p = _write(tmp_path / "train.csv", "x,y,fault\n1,2,none\n?,3,none\n4,5,none\n")
    with pytest.raises(DataError, match="'\\?' is not a number"):
        load_table(p, label_column="fault")
    d = load_table(p, label_column="fault", on_bad_rows="skip")
    assert d.skipped_rows == 1 and d.feature_names == ["x", "y"] and d.labels.tolist() == [False, False]
    only_bad = _write(tmp_path / "bad.csv", "x,y\nq,1\n1,r\n")
    with pytest.raises(DataError, match="every row has a bad cell"):
        load_csv(only_bad, columns=["x", "y"], on_bad_rows="skip")
    with pytest.raises(DataError, match=r"\(text columns: x, y\); name the features with --columns"):
        load_csv(_write(tmp_path / "text.csv", "x,y\nq,a\n1,r\n"))

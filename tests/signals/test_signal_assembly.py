"""Frame assembly: alignment, warm-up, gaps, duplicates, out-of-order windows, restarts."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from linewatch.errors import ConfigError, DataError
from linewatch.signals.assembly import Frame, FrameAssembler, SensorWindow

T0 = 1_767_225_600.0  # a whole second, so frames start at T0 + k


def _asm(**kw: object) -> FrameAssembler:
    params = {"sensors": ("vib", "temp"), "frame_seconds": 1.0, "sample_rate_hz": 100.0}
    params.update(kw)
    return FrameAssembler(**params)  # type: ignore[arg-type]


def _vib(k: int, asset: str = "m1") -> SensorWindow:
    """1 s of a 400 Hz ramp whose value is the sample time since T0 (easy to check after averaging)."""
    t = k + np.arange(400) / 400.0
    return SensorWindow(asset, "vib", T0 + k, 400.0, t.astype(np.float32))


def _temp(k: int, asset: str = "m1") -> SensorWindow:
    """One 1 Hz sample per second whose value is 40 + k."""
    return SensorWindow(asset, "temp", T0 + k, 1.0, np.array([40.0 + k], dtype=np.float32))


def _stream(n: int) -> list[SensorWindow]:
    out = []
    for k in range(n):
        out += [_vib(k), _temp(k)]
    return out


def test_fast_sensor_is_averaged_and_slow_sensor_held() -> None:
    asm = _asm()
    frames = asm.add_many(_stream(4))
    assert [f.start - T0 for f in frames] == [0.0, 1.0, 2.0, 3.0]
    f = frames[1]
    assert f.data.shape == (2, 100) and f.data.dtype == np.float32
    assert f.ready and f.complete
    # 400 Hz -> 100 Hz boxcar: the mean of 4 ramp samples = cell start + 1.5 / 400.
    np.testing.assert_allclose(f.data[0], 1.0 + np.arange(100) / 100.0 + 1.5 / 400.0, atol=1e-5)
    # 1 Hz temperature: the t=1 sample (41) holds for one sample period.
    np.testing.assert_array_equal(f.data[1], np.full(100, 41.0, dtype=np.float32))


def test_slow_sensor_is_held_across_a_gap_only_up_to_max_gap() -> None:
    asm = _asm(max_gap_s=2.5)
    frames = asm.add_many([_vib(0), _temp(0), _vib(1), _vib(2), _vib(3), _temp(3)])
    frames += asm.advance(T0 + 10.0)  # frame 2 stays incomplete: only the clock releases it
    by_start = {f.start - T0: f for f in frames}
    assert by_start[1.0].present[1].all() and (by_start[1.0].data[1] == 40.0).all()
    held = by_start[2.0].present[1]
    assert held[:50].all() and not held[50:].any()  # held until 2.5 s after the t=0 sample


def test_warm_up_until_every_sensor_has_spoken() -> None:
    asm = _asm(lateness_s=0.5)
    frames = asm.add_many([_vib(0), _vib(1), _vib(2)])
    assert frames and all(not f.ready for f in frames)
    assert not frames[0].present[1].any() and np.isnan(frames[0].data[1]).all()
    later = asm.add_many([_temp(3), _vib(3), _vib(4)])
    assert later and all(f.ready for f in later)


def test_out_of_order_and_duplicates_give_the_same_frames() -> None:
    in_order = _asm().add_many(_stream(6))
    shuffled = _stream(6)
    rng = np.random.default_rng(0)
    # Swap neighbours (late by at most one window, within the default one-frame lateness) and repeat some.
    # The first pair stays first: the first window to arrive fixes the asset's first frame.
    for i in range(2, len(shuffled) - 3, 4):
        shuffled[i], shuffled[i + 2] = shuffled[i + 2], shuffled[i]
    shuffled += [shuffled[int(j)] for j in rng.integers(0, 6, 3)]
    asm = _asm()
    out = asm.add_many(shuffled)
    assert len(out) == len(in_order)
    for a, b in zip(in_order, out, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    counters = asm.assets["m1"].counters
    assert counters["duplicate"] + counters["late"] == 3  # repeats of emitted windows are late
    fresh = _asm()
    fresh.add(_vib(0))
    assert fresh.add(_vib(0)) == [] and fresh.assets["m1"].counters["duplicate"] == 1


def test_late_window_is_dropped_and_counted() -> None:
    asm = _asm()
    asm.add_many(_stream(5))
    assert asm.add(_vib(1)) == []
    assert asm.assets["m1"].counters["late"] == 1


def test_gap_is_missing_and_clock_flushes_it() -> None:
    asm = _asm(max_gap_s=0.0)
    frames = asm.add_many(_stream(2))
    # vib goes silent; temperature keeps coming, but 'all sensors in' never holds for frame 2.
    frames += asm.add(_temp(2))
    assert [f.start - T0 for f in frames] == [0.0, 1.0]
    assert asm.advance(T0 + 3.5) == []  # not yet past the frame end + one frame of lateness
    flushed = asm.advance(T0 + 10.0)
    assert [f.start - T0 for f in flushed] == [2.0]  # frame 3 has no data at all: skipped
    f2 = flushed[0]
    assert not f2.present[0].any() and f2.present[1].all()
    assert f2.coverage.tolist() == [0.0, 1.0] and not f2.complete


def test_silent_stretch_is_skipped_in_one_step() -> None:
    asm = _asm()
    asm.add_many(_stream(2))
    out = asm.add_many([_vib(5000), _temp(5000), _vib(5001), _temp(5001)])
    starts = [f.start - T0 for f in out]
    assert 2.0 not in starts[2:] and 5000.0 in starts
    assert asm.assets["m1"].counters["skipped_frames"] >= 1
    assert len(out) <= 4


def test_assets_are_independent() -> None:
    asm = _asm()
    a = asm.add_many(_stream(3))
    b = asm.add_many([_vib(0, "m2"), _temp(0, "m2")])
    assert {f.asset_id for f in a} == {"m1"}
    assert all(f.asset_id == "m2" for f in b)


def test_save_and_load_continue_identically(tmp_path) -> None:
    ref_asm = _asm()
    ref = ref_asm.add_many(_stream(8))
    asm = _asm()
    first = asm.add_many(_stream(8)[:7])
    asm.save(tmp_path / "asm")
    restored = FrameAssembler.load(tmp_path / "asm")
    rest = restored.add_many(_stream(8)[7:])
    got = first + rest
    assert len(got) == len(ref)
    for a, b in zip(ref, got, strict=True):
        assert isinstance(b, Frame) and a.start == b.start and a.ready == b.ready
        np.testing.assert_array_equal(a.data, b.data)
    assert restored.assets["m1"].counters == ref_asm.assets["m1"].counters


def test_rate_change_replaces_the_buffer() -> None:
    asm = _asm()
    asm.add_many(_stream(2))
    asm.add(SensorWindow("m1", "vib", T0 + 2, 200.0, np.zeros(200, dtype=np.float32)))
    assert asm.assets["m1"].counters["rate_change"] == 1


def test_bad_input_and_config() -> None:
    with pytest.raises(DataError, match="not one of"):
        _asm().add(SensorWindow("m1", "pressure", T0, 10.0, np.zeros(10, dtype=np.float32)))
    with pytest.raises(DataError):
        SensorWindow("m1", "vib", T0, 0.0, np.zeros(3, dtype=np.float32))
    with pytest.raises(DataError):
        SensorWindow("m1", "vib", T0, 10.0, np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ConfigError, match="whole number"):
        FrameAssembler(sensors=("a",), frame_seconds=1.0, sample_rate_hz=10.5)
    with pytest.raises(ConfigError):
        FrameAssembler(sensors=("a", "a"), frame_seconds=1.0, sample_rate_hz=10.0)


def test_from_signal_meta() -> None:
    from linewatch.schemas.messages import SignalMeta

    meta = SignalMeta(
        asset_id="m1", sensor="vib", kind="vibration", unit="g",
        start=datetime(2026, 1, 1, tzinfo=UTC), sample_rate_hz=400.0, n_samples=400,
    )
    w = SensorWindow.from_meta(meta, np.zeros(400, dtype=np.float32))
    assert w.start == T0 and w.end == T0 + 1.0
    with pytest.raises(DataError, match="announces"):
        SensorWindow.from_meta(meta, np.zeros(10, dtype=np.float32))

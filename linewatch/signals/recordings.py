"""Waveform recordings -> ``signals`` messages -> the live agent's model rows (training and backtests).

Why: maintenance engineers hold raw recordings (a WAV from a data collector, an ``.npy`` export,
a CSV of samples), not a ``signals`` topic. ``linewatch backtest signals`` and ``linewatch train
signals --data`` read them through this module, in the image backtest's (MVTec AD's) layout::

    DIR/train/good/*.wav|npy|csv     known-good recordings (the only training data)
    DIR/test/good/*                  good recordings the model never saw (realized false-alarm rate)
    DIR/test/<condition>/*           recordings of one fault condition per folder

Each file is one recording of every sensor at ``sample_rate`` Hz: WAV (one channel per sensor;
integer PCM is scaled to [-1, 1); the file's own rate must equal ``sample_rate``), NPY (``(n,)``
or ``(n, sensors)``) or CSV (a header of sensor names, one column per sensor). WAV and NPY
channels are named ``ch1``, ``ch2``, ...; a sensor whose name is a ``SignalMeta`` kind
(``vibration``, ``current``, ...) has that kind, every other one gets ``kind``. Every problem
names the file and the option to change.

Nothing here computes a feature: a recording is cut into consecutive windows of ``window_s``
seconds, each sensor's window becomes a ``(SignalMeta, samples)`` message exactly as a data
logger would publish it (``speed_hz`` set when the shaft speed is known, which adds the bearing
envelope features), and :func:`~linewatch.signals.framing.training_frames` turns them into
model rows through the live agent's own ``featurize_windows`` and ``FrameBuilder``, with the
agent's time slots (:data:`~linewatch.signals.framing.DEFAULT_SLOT_S`): windows shorter than a
slot give one row per slot (the first window in it: the frame is scored as soon as it is
complete), exactly the rows the agent would score. Each recording is its own asset there
(``rec-00000``, ...), so frames never mix two recordings and rows stay in file order, then time
order (the order the calibration's time-blocked cross-fitting cuts).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from linewatch.errors import ConfigError, DataError
from linewatch.schemas.messages import SignalMeta
from linewatch.signals.framing import DEFAULT_SLOT_S, TrainingFrames, training_frames
from linewatch.signals.windows import DEFAULT_UNITS, KINDS

RECORDING_SUFFIXES = (".wav", ".npy", ".csv")
GOOD = "good"
DEFAULT_WINDOW_S = 1.0
#: Kind of a sensor whose name is not a ``SignalMeta`` kind: recordings are usually vibration.
DEFAULT_KIND = "vibration"
#: Recording files carry no time: every recording starts here (2026-01-01T00:00:00Z), as its own asset.
RECORDING_EPOCH = 1_767_225_600.0
#: Relative difference between a WAV file's rate and ``--sample-rate`` that still counts as equal.
RATE_TOLERANCE = 1e-6



def _header_limit(field: str) -> float:
    """The upper bound ``SignalMeta`` puts on ``field``: checked here so the error names the option."""
    return next(m.le for m in SignalMeta.model_fields[field].metadata if hasattr(m, "le"))


MAX_SAMPLE_RATE = _header_limit("sample_rate_hz")
MAX_WINDOW_SAMPLES = int(_header_limit("n_samples"))
MAX_SPEED_HZ = _header_limit("speed_hz")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Recording:
    """One file's samples ``(n, sensors)`` at ``sample_rate`` Hz and the condition folder it came from."""

    path: Path
    condition: str
    sensors: tuple[str, ...]
    samples: np.ndarray
    sample_rate: float


# ---------------------------------------------------------------------------------------------- reading
def _read_wav(path: Path, sample_rate: float) -> tuple[tuple[str, ...], np.ndarray]:
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    if abs(rate - sample_rate) > RATE_TOLERANCE * max(rate, sample_rate):
        raise ConfigError(
            f"{path} is recorded at {rate} Hz but --sample-rate is {sample_rate:g}; "
            f"pass --sample-rate {rate} (or resample the recordings)"
        )
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2.0  # 0 for signed PCM, 128 for 8-bit unsigned
        data = (data.astype(np.float64) - mid) / (int(info.max) - mid + 1)
    arr = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    return tuple(f"ch{i + 1}" for i in range(arr.shape[1])), arr


def _read_npy(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    data = np.load(path, allow_pickle=False)
    if data.ndim not in (1, 2) or not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{path} holds a {data.dtype} array of shape {data.shape}; expected numbers (n,) or "
                        "(n, sensors)")
    arr = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    return tuple(f"ch{i + 1}" for i in range(arr.shape[1])), arr


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    with path.open(newline="") as f:
        header = next(csv.reader(f), None)
    if not header or not all(h.strip() for h in header) or all(_is_number(h) for h in header):
        raise DataError(f"{path} needs a header row naming every sensor column (e.g. 'de,fe'), then one row "
                        "of samples per line")
    arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    if arr.shape[1] != len(header):
        raise DataError(f"{path} has {arr.shape[1]} columns of samples but {len(header)} names in its header")
    return tuple(h.strip() for h in header), arr


def read_recording(path: str | Path, *, sample_rate: float, condition: str = GOOD) -> Recording:
    """One recording file as ``(samples, sensors)``; every problem names the file and what to do."""
    p = Path(path)
    if not 0 < sample_rate <= MAX_SAMPLE_RATE:
        raise ConfigError(f"--sample-rate {sample_rate!r} must be in (0, {MAX_SAMPLE_RATE:g}] samples per second")
    suffix = p.suffix.lower()
    try:
        if suffix == ".wav":
            sensors, arr = _read_wav(p, sample_rate)
        elif suffix == ".npy":
            sensors, arr = _read_npy(p)
        elif suffix == ".csv":
            sensors, arr = _read_csv(p)
        else:
            raise DataError(f"{p}: unknown recording type {suffix!r}; use one of {', '.join(RECORDING_SUFFIXES)}")
    except (ConfigError, DataError):
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read recording {p}: {e}") from e
    if arr.size == 0:
        raise DataError(f"recording {p} holds no samples")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"recording {p}: {int(bad.sum())} NaN or infinite samples (first: sensor {sensors[col]!r}, "
                        f"sample {row}); repair or remove the file")
    return Recording(p, condition, sensors, arr.astype(np.float32), float(sample_rate))


def _list_recordings(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RECORDING_SUFFIXES)


def scan_recordings(data_dir: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(train files, [(test file, condition)])`` of a folder in the layout of the module docstring."""
    root = Path(data_dir)
    train_dir, test_dir = root / "train" / GOOD, root / "test"
    if not train_dir.is_dir():
        raise ConfigError(f"{root} has no train/good/ folder; --data needs train/good/ and test/<condition>/ "
                          "folders of recordings (the images' layout)")
    train = _list_recordings(train_dir)
    if not train:
        raise DataError(f"no recordings ({', '.join(RECORDING_SUFFIXES)}) in {train_dir}")
    test: list[tuple[Path, str]] = []
    if test_dir.is_dir():
        for cond_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            test += [(f, cond_dir.name) for f in _list_recordings(cond_dir)]
    return train, test


def load_recordings(files: Sequence[tuple[Path, str]], *, sample_rate: float, progress: Progress | None = None,
                    stage: str = "read", sensors: tuple[str, ...] | None = None) -> list[Recording]:
    """Read every file; all must have the same sensors (``sensors``, else the first file's) in the same order."""
    out: list[Recording] = []
    for i, (path, condition) in enumerate(files):
        rec = read_recording(path, sample_rate=sample_rate, condition=condition)
        sensors = sensors or rec.sensors
        if rec.sensors != sensors:
            first = out[0].path if out else "the training recordings"
            raise DataError(
                f"{path} has {len(rec.sensors)} sensor(s) {list(rec.sensors)} but {first} has {len(sensors)} "
                f"{list(sensors)}; every recording must hold the same sensors in the same order"
            )
        out.append(rec)
        if progress is not None:
            progress(stage, i + 1, len(files))
    return out


# ---------------------------------------------------------------------------------------------- framing
def window_samples(window_s: float, sample_rate: float) -> int:
    """Samples per window; a window of less than one sample is a configuration error."""
    m = round(window_s * sample_rate)
    if not window_s > 0 or m < 1:
        raise ConfigError(f"--window-s {window_s!r} at --sample-rate {sample_rate:g} Hz gives {m} samples per "
                          "window; use a longer --window-s")
    if m > MAX_WINDOW_SAMPLES:
        raise ConfigError(f"--window-s {window_s:g} at --sample-rate {sample_rate:g} Hz gives {m} samples per window, "
                          f"more than a signals message carries ({MAX_WINDOW_SAMPLES}); use a shorter --window-s")
    return int(m)


def recording_messages(rec: Recording, *, asset_id: str, window_s: float, kind: str = DEFAULT_KIND,
                       speed_hz: float | None = None) -> list[tuple[SignalMeta, np.ndarray]]:
    """The recording as ``signals`` messages: consecutive ``window_s`` windows of every sensor.

    Samples after the last whole window are dropped; a recording shorter than one window is an error.
    """
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r}; use one of {', '.join(KINDS)}")
    if speed_hz is not None and not 0 < speed_hz <= MAX_SPEED_HZ:
        raise ConfigError(f"--speed-hz {speed_hz!r} must be a shaft speed in (0, {MAX_SPEED_HZ:g}] Hz")
    m = window_samples(window_s, rec.sample_rate)
    n_win = rec.samples.shape[0] // m
    if n_win == 0:
        raise DataError(f"recording {rec.path} has {rec.samples.shape[0]} samples, fewer than one window of "
                        f"{m} (--window-s {window_s:g} at {rec.sample_rate:g} Hz); use a shorter --window-s")
    out = []
    for w in range(n_win):
        start = datetime.fromtimestamp(RECORDING_EPOCH + w * m / rec.sample_rate, UTC)
        for j, sensor in enumerate(rec.sensors):
            k = sensor if sensor in KINDS else kind
            meta = SignalMeta(asset_id=asset_id, sensor=sensor, kind=k, unit=DEFAULT_UNITS.get(k, "1"), start=start,
                              sample_rate_hz=rec.sample_rate, n_samples=m, speed_hz=speed_hz)
            out.append((meta, np.ascontiguousarray(rec.samples[w * m : (w + 1) * m, j])))
    return out


def recording_asset(i: int) -> str:
    """Asset id of the ``i``-th recording: zero-padded, so sorting assets keeps file order."""
    return f"rec-{i:05d}"


def recording_frames(recs: Sequence[Recording], *, window_s: float, kind: str = DEFAULT_KIND,
                     speed_hz: float | None = None, features: Sequence[str] | None = None,
                     include_flagged: bool = False, first: int = 0) -> tuple[TrainingFrames, np.ndarray]:
    """Model rows of the recordings through the live framing, and the recording index of every row.

    ``features=None`` picks the default model features (training); scoring passes the model's.
    """
    messages = []
    for i, rec in enumerate(recs):
        messages += recording_messages(rec, asset_id=recording_asset(first + i), window_s=window_s, kind=kind,
                                       speed_hz=speed_hz)
    # The live agent's slots, so these are the rows it would score (module docstring).
    frames = training_frames(messages, features=features, slot_s=DEFAULT_SLOT_S, include_flagged=include_flagged)
    index = np.array([int(a.rsplit("-", 1)[1]) for a in frames.assets], dtype=np.int64)
    return frames, index

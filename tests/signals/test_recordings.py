"""Recording files (WAV, NPY, CSV) read alike and become exactly the windows and rows of the live framing."""

from __future__ import annotations

import numpy as np
from scipy.io import wavfile

from linewatch.signals.framing import featurize_windows
from linewatch.signals.recordings import read_recording, recording_frames, recording_messages

RATE = 10_000.0


def test_wav_csv_and_npy_recordings_read_alike(tmp_path):
    x = np.random.default_rng(1).normal(size=(4000, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    wavfile.write(tmp_path / "a.wav", 4000, x)
    (tmp_path / "a.csv").write_text("de,fe\n" + "\n".join(f"{a:.9g},{b:.9g}" for a, b in x) + "\n")
    npy, wav, csv = (read_recording(tmp_path / f"a.{s}", sample_rate=4000) for s in ("npy", "wav", "csv"))
    assert np.array_equal(npy.samples, wav.samples) and np.array_equal(npy.samples, csv.samples)
    assert npy.sensors == ("ch1", "ch2") and csv.sensors == ("de", "fe")
    one = tmp_path / "one.npy"
    np.save(one, x[:, 0])
    assert read_recording(one, sample_rate=4000).samples.shape == (4000, 1)


def test_recordings_become_the_same_windows_the_live_agent_featurizes(tmp_path):
    np.save(tmp_path / "r.npy", np.random.default_rng(0).normal(size=80_000).astype(np.float32))
    rec = read_recording(tmp_path / "r.npy", sample_rate=RATE)
    msgs = recording_messages(rec, asset_id="a", window_s=1.0)
    assert len(msgs) == 8 and msgs[1][0].start.timestamp() - msgs[0][0].start.timestamp() == 1.0
    assert msgs[0][0].kind == "vibration" and msgs[0][0].sensor == "ch1" and msgs[0][0].n_samples == 10_000
    tf, index = recording_frames([rec], window_s=1.0)
    live = featurize_windows(msgs)
    cols = [live[0].names.index(n.split(".", 1)[1]) for n in tf.feature_names]
    assert np.allclose(tf.X, np.vstack([w.values[cols] for w in live])) and index.tolist() == [0] * 8
    # Windows shorter than the agent's 1 s slot: one row per slot, the first window in it (the frame
    # completes and is scored as soon as it arrives; the second one is late), as live.
    half = recording_messages(rec, asset_id="a", window_s=0.5)
    tf_half, _ = recording_frames([rec], window_s=0.5)
    assert len(half) == 16 and tf_half.X.shape[0] == 8
    assert np.allclose(tf_half.X[0], featurize_windows(half[0:1])[0].values[cols])

"""The signals runtime in its scoring child: batches are stored from there and its state is saved there."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

from linewatch.config import Settings
from linewatch.lifecycle import DIE_WITH_PARENT_ENV
from linewatch.schemas.codec import encode_signal
from linewatch.schemas.messages import SignalMeta
from linewatch.streams.messages import RawMessage
from linewatch.streams.signals_agent import STATE_DIR, IsolatedSignalsRuntime
from linewatch.streams.signals_pipeline import SignalsState

pytestmark = pytest.mark.integration


def _windows(asset: str, n: int) -> list[RawMessage]:
    """``n`` one-second 1 kHz vibration windows of ``asset``, a second apart, ending a minute ago."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60 + n)
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        meta = SignalMeta(asset_id=asset, sensor="vib", kind="vibration", unit="g", start=t0 + timedelta(seconds=i),
                          sample_rate_hz=1000.0, n_samples=1000)
        out.append(RawMessage("signals", 0, i, asset.encode(), encode_signal(meta, rng.normal(size=1000))))
    return out


def test_isolated_runtime_stores_windows_from_its_child_and_saves_the_state_there(
        settings: Settings, bootstrap: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DIE_WITH_PARENT_ENV, "")  # IsolatedRuntime sets it for its child; undone after the test
    own = settings.model_copy(update={"data_dir": tmp_path})
    rt = IsolatedSignalsRuntime(settings=own, bootstrap=bootstrap, database_url=database_url)
    asset = f"iso-{uuid.uuid4().hex[:6]}"
    # The agent's long-lived batch thread: the child's parent-death signal follows the thread that spawned it.
    agent_thread = ThreadPoolExecutor(max_workers=1)
    try:
        windows = _windows(asset, 5)
        counts = agent_thread.submit(rt.process, windows).result(120)
        assert counts["windows"] == 5 and counts["samples"] == 5000
        with psycopg.connect(database_url) as conn:
            stored = conn.execute("SELECT count(*) FROM signal_features WHERE asset_id = %s", (asset,)).fetchone()[0]
        assert stored == 5  # committed by the child before process() returned
        assert not (tmp_path / STATE_DIR).exists()
        agent_thread.submit(rt.save_state).result(60)
        state = SignalsState.load(tmp_path / STATE_DIR)
        assert [len(w) for w in state.frames.assets[asset].windows.values()] == [5]
        # The child keeps its state after saving: a redelivered window is a duplicate, not a new row.
        again = agent_thread.submit(rt.process, windows[:1]).result(60)
        assert again.get("windows", 0) == 1
        agent_thread.submit(rt.save_state).result(60)
        assert SignalsState.load(tmp_path / STATE_DIR).frames.counters()["duplicate"] == 1
    finally:
        rt.shutdown()
        agent_thread.shutdown()

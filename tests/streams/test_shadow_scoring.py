"""Shadow verdicts and the machine-state context on the scoring path, without Kafka or a database."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from linewatch.detectors.bundle import ModelBundle
from linewatch.schemas.codec import decode, encode
from linewatch.schemas.messages import Score
from linewatch.schemas.rows import ScoreRow, ShadowScoreRow
from linewatch.schemas.score_encoder import EventRef, encode_scores
from linewatch.simulation.spc import simulate_spc
from linewatch.storage.model_registry import is_shadow
from linewatch.streams.messages import RawMessage
from linewatch.streams.signals_pipeline import SignalsState, score_signals_batch
from linewatch.streams.spc_pipeline import StreamStates, score_spc_batch
from tests.streams.test_signals_pipeline import T0, Models, temp, vib
from tests.streams.test_signals_pipeline import raw as signal_messages

SCORE = {name: i for i, name in enumerate(ScoreRow.model_fields)}


def as_shadow(bundle: ModelBundle, version: str = "v-shadow") -> ModelBundle:
    """``bundle`` as the cache serves a shadow version of it (the detector object shared, the role its own)."""
    return dataclasses.replace(bundle, meta={**bundle.meta, "version": version, "shadow": True})


@pytest.fixture(scope="module")
def chart() -> ModelBundle:
    sim = simulate_spc(n_parts=1500, seed=0, fault_fraction=0.0, assets=("m1",))
    bundle = ModelBundle.fit("ewma", sim.X, feature_names=sim.feature_names, target_far=0.01)
    bundle.meta["version"] = "v-champion"
    return bundle


def _verdicts(n: int) -> dict:
    return {"raw": np.arange(n, dtype=float), "tail": np.full(n, 0.5), "calibrated": np.full(n, 0.3),
            "is_anomaly": np.zeros(n, dtype=bool), "ready": True, "explanations": None,
            "scored_at": datetime(2026, 1, 1, tzinfo=UTC)}


def test_the_encoder_marks_shadow_messages_and_carries_the_machine_state():
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    events = [EventRef(uuid.UUID(int=1), "m1", "s", "p1", ts, "idle"), EventRef(uuid.UUID(int=2), "m1", "s", None, ts)]
    common = {"modality": "spc", "detector": "ewma", "model_version": "v1", "threshold": 2.0, "events": events}
    plain_msgs, plain_rows = encode_scores(**common, **_verdicts(2))
    shadow_msgs, shadow_rows = encode_scores(**common, shadow=True, **_verdicts(2))
    plain = [decode(v, Score) for _, v, _ in plain_msgs]
    shadow = [decode(v, Score) for _, v, _ in shadow_msgs]
    assert [s.machine_state for s in plain] == ["idle", None] == [s.machine_state for s in shadow]
    assert [s.shadow for s in plain] == [False, False] and [s.shadow for s in shadow] == [True, True]
    assert b'"machine_state"' not in plain_msgs[1][1] and b'"shadow"' not in plain_msgs[0][1]
    # The rows are the same shape and values for both: the table they go to says the role.
    assert shadow_rows == plain_rows and len(plain_rows[0]) == len(ShadowScoreRow.model_fields)


def test_a_shadow_bundles_verdicts_go_to_shadow_scores_only_and_charts_stay_apart(chart):
    recs = [r.model_copy(update={"machine_state": "running"})
            for r in simulate_spc(n_parts=60, seed=3, fault_fraction=0.5, assets=("m1",), episode_length=10).records()]
    msgs = [RawMessage("spc", 0, i, b"m1", encode(r)) for i, r in enumerate(recs)]
    shadow = as_shadow(chart)
    assert is_shadow(shadow) and not is_shadow(chart)
    alone = score_spc_batch(msgs, Models(chart), StreamStates())
    states = StreamStates()
    halves = [score_spc_batch(part, Models(chart, shadow), states) for part in (msgs[:25], msgs[25:])]
    champion_rows = [r for h in halves for r in h.scores]
    shadow_rows = [r for h in halves for r in h.shadow_scores]
    scored_at = SCORE["scored_at"]  # the batch's wall clock: the only field that may differ
    # The same chart twice, kept apart: each copy sees every part once, so both give the champion's values.
    assert [r[:scored_at] for r in champion_rows] == [r[:scored_at] for r in alone.scores]
    assert [r[SCORE["raw_score"]] for r in shadow_rows] == [r[SCORE["raw_score"]] for r in alone.scores]
    assert {r[SCORE["model_version"]] for r in shadow_rows} == {"v-shadow"}
    assert len(states) == 2  # one chart per (asset, detector, role)
    messages = [decode(v, Score) for h in halves for _, v, _ in h.shadow_messages]
    assert len(messages) == 60 and all(m.shadow and m.machine_state == "running" for m in messages)
    assert all(not decode(v, Score).shadow for h in halves for _, v, _ in h.score_messages)
    assert sum(h.counts["shadow_anomalies"] for h in halves) == alone.counts["anomalies"] > 0
    assert sum(h.counts["anomalies"] for h in halves) == alone.counts["anomalies"]


@pytest.fixture(scope="module")
def signals_bundle() -> ModelBundle:
    rng = np.random.default_rng(0)
    X = np.column_stack([0.7071 + 0.01 * rng.normal(size=2000), 40.0 + 0.5 * rng.normal(size=2000)])
    return ModelBundle.fit("hotelling", X, feature_names=["vib.rms", "temp.mean"], target_far=0.01)


def _with_state(window, state):
    meta, samples = window
    return meta.model_copy(update={"machine_state": state}), samples


def test_a_signal_frame_carries_the_first_machine_state_of_its_sensors(signals_bundle, tmp_path):
    state = SignalsState()
    t1 = T0 + timedelta(seconds=10)
    # Under the champion's own version string: the frame builder's progress and detector state are
    # per role, so the shadow still gets every frame.
    shadow = as_shadow(signals_bundle, version=signals_bundle.version)
    windows = [_with_state(vib(T0), None), _with_state(temp(T0), "idle"),  # temp reported it, vib did not
               _with_state(vib(t1), "changeover"), _with_state(temp(t1), "running")]  # temp < vib by name
    out = score_signals_batch(signal_messages(windows[:3]), Models(signals_bundle, shadow), state)
    state.save(tmp_path / "state")
    restored = SignalsState.load(tmp_path / "state")  # the held t1 vib window keeps its state over a restart
    later = score_signals_batch(signal_messages(windows[3:], 3), Models(signals_bundle, shadow), restored)
    champion = [decode(v, Score) for r in (out, later) for _, v, _ in r.score_messages]
    challenger = [decode(v, Score) for r in (out, later) for _, v, _ in r.shadow_messages]
    assert [s.machine_state for s in champion] == ["idle", "running"]
    assert [s.machine_state for s in challenger] == ["idle", "running"]
    assert all(s.shadow for s in challenger) and not any(s.shadow for s in champion)
    assert len(out.scores) == len(out.shadow_scores) == 1


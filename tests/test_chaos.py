"""``linewatch chaos`` end to end: real broker, real workers under a supervisor, real PostgreSQL, real faults.

The integration tests share one run of the bounded (``--quick``) form of three scenarios on one
stack of its own: poison messages of every modality, three SIGKILLs of the worker, and a
PostgreSQL restart. One run, not three, because a stack, its trained models and the final count
of the ``scores`` topic cost about 20 s each time; each scenario still has its own worker, assets
and result, so each test judges only its own. Each must store every valid event exactly once and
dead-letter exactly the poison. The other tests check the pieces that need no services.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from linewatch.chaos import (
    SCENARIOS,
    ChaosReport,
    Outgoing,
    Params,
    ScenarioResult,
    interleave,
    poison_messages,
    resolve_scenarios,
    run_chaos,
)
from linewatch.config import Settings
from linewatch.embedded.process import tail
from linewatch.errors import ConfigError
from linewatch.schemas.codec import MAX_JSON_BYTES


def test_scenario_names_resolve_in_order_once() -> None:
    assert resolve_scenarios(["all"]) == list(SCENARIOS)
    assert resolve_scenarios(["poison", "worker-kill", "poison"]) == ["poison", "worker-kill"]
    with pytest.raises(ConfigError, match="unknown chaos scenario 'nope'"):
        resolve_scenarios(["nope"])


def test_an_unknown_scenario_is_a_usage_error() -> None:
    from linewatch.cli import app

    result = CliRunner().invoke(app, ["chaos", "--scenario", "nope"])
    assert result.exit_code == 2 or isinstance(result.exception, ConfigError)


def test_interleaving_keeps_each_stream_in_order() -> None:
    a = [Outgoing("spc", b"a", str(i).encode()) for i in range(20)]
    b = [Outgoing("frames", b"b", str(i).encode()) for i in range(5)]
    mixed = interleave([a, b], seed=3)
    assert sorted(mixed, key=id) == sorted(a + b, key=id)
    assert [m for m in mixed if m.key == b"a"] == a and [m for m in mixed if m.key == b"b"] == b


def test_poison_set_covers_every_modality_and_the_size_limits() -> None:
    poison, valid = poison_messages("r1", spc_asset="p", signal_asset="m", frame_asset="c")
    topics = {m.topic for m in poison}
    assert topics == {"spc", "signals", "frames"}
    assert len({m.value for m in poison}) == len(poison)  # distinct bytes: no two share a dead-letter key
    sizes = {m.poison: len(m.value) for m in poison}
    near = next(n for n in sizes if "just under" in n)
    assert MAX_JSON_BYTES - 64 < sizes[near] < MAX_JSON_BYTES
    assert sizes["spc: over the limit (~900 KB)"] > 850_000
    assert all(m.modality and m.event_id for m in valid)
    assert any(MAX_JSON_BYTES - 64 < len(m.value) < MAX_JSON_BYTES for m in valid)  # a valid near-limit record
    again, _ = poison_messages("r2", spc_asset="p", signal_asset="m", frame_asset="c")
    assert not {m.value for m in poison} & {m.value for m in again}  # another run's poison is different


def _explain(r: ScenarioResult) -> str:
    logs = "\n".join(f"--- {path}\n{tail(Path(path), 25)}" for path in r.logs[-2:])
    return json.dumps({k: v for k, v in r.__dict__.items() if k not in ("poison", "logs")}, indent=1,
                      default=str) + "\n" + logs


#: The scenarios the integration tests run, in this order, on one stack.
INTEGRATION_SCENARIOS = ("poison", "worker-kill", "db-restart")
#: ``--quick`` with SPC parts at 20/s instead of 50/s: the same kills land mid-batch, but the backlog a
#: restarted worker inherits (and replays one message at a time after a mid-batch kill) is 2.5x smaller.
#: A (re)started worker streams 1 s, not 2, before the next fault: it must still have stored new rows.
#: The SPC model is Hotelling's (fitted in milliseconds, not the MCD's ~12 s): the scenarios count rows,
#: and any detector's rows count the same.
#: Two SIGKILLs, not three: the second kill already lands on a worker that inherited the first one's
#: batch in flight, which is what repeated kills test (`linewatch chaos` itself kills three times).
TEST_PARAMS = replace(Params.for_run(quick=True), spc_rate=20.0, settle_s=1.0, spc_detector="hotelling", kills=2)


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ChaosReport, Path]:
    data_dir = tmp_path_factory.mktemp("chaos")
    return run_chaos(Settings(data_dir=data_dir), INTEGRATION_SCENARIOS, quick=True, params=TEST_PARAMS), data_dir


def _quick(chaos_run: tuple[ChaosReport, Path], scenario: str) -> ScenarioResult:
    report, data_dir = chaos_run
    assert [r.scenario for r in report.scenarios] == list(INTEGRATION_SCENARIOS)
    result = next(r for r in report.scenarios if r.scenario == scenario)
    assert result.ok, _explain(result)
    assert result.produced > 0 and result.stored == result.produced, _explain(result)
    assert result.lost == 0 and result.duplicate_rows == 0, _explain(result)
    assert result.checks["no process left behind"], _explain(result)
    assert (data_dir / "chaos" / report.run_id / "postgres.log").stat().st_size > 0  # the logs are kept
    return result


@pytest.mark.integration
def test_poison_of_every_modality_is_dead_lettered_once_and_valid_events_are_stored(chaos_run) -> None:
    r = _quick(chaos_run, "poison")
    assert r.expected_deadletters == r.deadletters == len(r.poison) >= 15
    assert all(p["deadletters"] == 1 and p["payload_kept"] for p in r.poison), r.poison
    assert set(r.by_modality) == {"spc", "signals", "frames"}
    assert r.worker_exits == 0, _explain(r)


@pytest.mark.integration
def test_repeated_sigkills_of_the_worker_lose_and_double_nothing(chaos_run) -> None:
    r = _quick(chaos_run, "worker-kill")
    assert r.worker_exits == TEST_PARAMS.kills == 2 and r.exit_codes == [-9] * TEST_PARAMS.kills, _explain(r)
    assert r.deadletters == 0 and r.recovery_s is not None, _explain(r)


@pytest.mark.integration
def test_a_database_restart_loses_and_doubles_nothing(chaos_run) -> None:
    r = _quick(chaos_run, "db-restart")
    assert r.faults and r.faults[0]["duration_s"] >= 3.5, _explain(r)
    assert r.deadletters == 0 and r.recovery_s is not None, _explain(r)

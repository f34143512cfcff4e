"""farm.store against SQLite and PostgreSQL (the `store_url` fixture runs each test on both)."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from farm.errors import InvalidInput
from farm.store import SchemaError, Store, make_engine, schema_state, upgrade
from farm.store.db import _alembic_config, normalize_url
from farm.store.models import (
    U64_NONE,
    ResultRow,
    RunRow,
    pack_f32,
    pack_u64,
    unpack_f32,
    unpack_u64,
)
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import PowerTrace
from farm_contract.runspec import sweep_id
from tests import factories
from tests.factories import T0


@pytest.fixture
def sweep_in(store: Store):
    """The small sweep recorded with its runs: (sweep id, runs)."""
    spec, toml, runs = factories.sweep()
    sid = store.record_sweep(spec, toml)
    assert store.add_runs(sid, runs) == runs
    return sid, runs


def child_counts(store: Store) -> dict[str, int]:
    counts = store.counts()
    return {k: counts[k] for k in ("results", "load_points", "energy_windows", "requests",
                                   "power_traces")}


# ---------------------------------------------------------------- schema


def test_upgrade_produces_exactly_the_models(store_url: str) -> None:
    assert schema_state(store_url) == "missing"
    upgrade(store_url)
    upgrade(store_url)  # a second upgrade is a no-op
    assert schema_state(store_url) == "current"
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
    finally:
        engine.dispose()


def test_concurrent_upgrades_do_not_collide(store_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(store_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert schema_state(store_url) == "current"


def test_open_refuses_a_missing_or_outdated_schema(store_url: str) -> None:
    with pytest.raises(SchemaError, match="farmctl db upgrade"):
        Store.open(store_url)
    upgrade(store_url)
    engine = make_engine(store_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    assert schema_state(store_url) == "outdated"
    with pytest.raises(SchemaError, match="farmctl db upgrade"):
        Store.open(store_url)


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert make_engine("postgresql://u@h/db").dialect.driver == "psycopg"


def test_sqlite_pragmas_and_no_new_folder(tmp_path) -> None:
    # A folder that does not exist is a typo, never made (issue 22; tests/unit/farm/test_door.py).
    with pytest.raises(InvalidInput, match="does not exist"):
        make_engine(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'farm.db'}")
    assert not (tmp_path / "deep").exists()
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("busy_timeout") == 30000
            assert pragma("foreign_keys") == 1
    finally:
        engine.dispose()
    assert (tmp_path / "farm.db").exists()


# ---------------------------------------------------------- sweeps, runs


def test_record_sweep_upserts_by_name(store: Store) -> None:
    spec, toml, _ = factories.sweep()
    sid = store.record_sweep(spec, toml)
    assert sid == sweep_id(spec.name)
    assert store.record_sweep(spec, toml + "\n# edited\n") == sid
    found = store.find_sweep(spec.name)
    assert found is not None and found.id == sid and found.simulated
    assert found.spec_toml.endswith("# edited\n")
    assert found.created_at.tzinfo is not None and found.updated_at >= found.created_at
    assert store.find_sweep(sid).name == spec.name
    assert store.find_sweep("nope") is None
    assert [s.name for s in store.list_sweeps()] == [spec.name]


def test_add_runs_inserts_only_new_runs(store: Store) -> None:
    spec, toml, runs = factories.sweep()
    sid = store.record_sweep(spec, toml)
    assert len(runs) == 8
    assert store.add_runs(sid, runs[:3]) == runs[:3]
    store.mark_started(factories.event(runs[0].run_id))
    assert store.add_runs(sid, runs) == runs[3:]
    assert store.add_runs(sid, runs) == []
    statuses = store.run_statuses([r.run_id for r in runs])
    assert statuses[runs[0].run_id] == "running"  # left untouched
    assert list(statuses.values()).count("queued") == 7


def test_add_runs_at_scale(store: Store) -> None:
    spec = parse_sweep(factories.big_sweep_toml())
    runs = expand(spec)
    assert len(runs) == 10_000
    sid = store.record_sweep(spec, "...")
    assert len(store.add_runs(sid, runs)) == 10_000
    assert store.add_runs(sid, runs) == []
    statuses = store.run_statuses([r.run_id for r in runs] + ["missing"])
    assert len(statuses) == 10_000 and set(statuses.values()) == {"queued"}
    assert store.status_counts(sid) == [("big-sim", "queued", 10_000)]


def test_status_and_queue_counts(store: Store, sweep_in) -> None:
    sid, runs = sweep_in
    store.mark_started(factories.event(runs[0].run_id))
    store.record_result(factories.result(runs[1]))
    store.record_result(factories.result(runs[2], status="failed"))
    assert store.status_counts(sid) == [
        ("small-sim", "queued", 5), ("small-sim", "running", 1),
        ("small-sim", "succeeded", 1), ("small-sim", "failed", 1),
    ]
    assert store.status_counts(None) == store.status_counts(sid)
    queues = {(q, status): n for q, status, n in store.queue_counts(sid)}
    expected: dict[tuple[str, str], int] = {}
    for run, status in zip(runs, ["running", "succeeded", "failed"] + ["queued"] * 5):
        key = (run.hardware.queue, status)
        expected[key] = expected.get(key, 0) + 1
    assert queues == expected
    assert store.queue_counts(None) == store.queue_counts(sid)


def test_cancel_and_retry(store: Store, sweep_in) -> None:
    sid, runs = sweep_in
    store.record_result(factories.result(runs[0]))
    store.record_result(factories.result(runs[1], status="failed"))
    store.mark_started(factories.event(runs[2].run_id))
    cancelled = store.cancel_queued(sid)
    assert sorted(cancelled) == sorted(r.run_id for r in runs[3:])
    assert store.cancel_queued(sid) == []
    retried = store.runs_to_retry(sid)
    assert sorted(r.run_id for r in retried) == sorted(r.run_id for r in [runs[1], *runs[3:]])
    assert {r.run_id: r for r in retried}[runs[1].run_id] == runs[1]
    statuses = store.run_statuses([r.run_id for r in runs])
    assert statuses[runs[0].run_id] == "succeeded" and statuses[runs[2].run_id] == "running"
    assert list(statuses.values()).count("queued") == 6
    row = next(r for r in store.result_rows(sid) if r["run_id"] == runs[1].run_id)
    assert row["error"] is None
    assert store.runs_to_retry(sid) == []
    assert len(store.runs_to_retry(sid, include_queued=True)) == 6


# ---------------------------------------------------------------- results


def test_record_result_stored_duplicate_unknown(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    run = runs[0]  # server scenario: 2 load points
    first = factories.result(run)
    assert store.record_result(first) == "stored"
    after_first = child_counts(store)
    assert after_first == {"results": 1, "load_points": 2, "energy_windows": 3, "requests": 6,
                           "power_traces": 1}
    # A redelivered run measured again: the first measurement stays, nothing doubles.
    again = factories.result(run, attempt=2, started_at=T0 + timedelta(hours=1))
    assert store.record_result(again) == "duplicate"
    assert store.record_result(factories.result(run, status="failed", attempt=3)) == "duplicate"
    assert child_counts(store) == after_first
    assert store.run_statuses([run.run_id]) == {run.run_id: "succeeded"}
    assert store.record_result(factories.result("0" * 24)) == "unknown_run"
    assert child_counts(store) == after_first


def test_concurrent_deliveries_store_one_result(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    outcomes: list[str] = []
    copies = [factories.result(runs[0], attempt=a) for a in (1, 1, 2, 3)]

    def deliver(result) -> None:
        outcomes.append(store.record_result(result))

    threads = [threading.Thread(target=deliver, args=(c,)) for c in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["duplicate"] * 3 + ["stored"]
    assert child_counts(store)["results"] == 1 and child_counts(store)["requests"] == 6


def test_failed_result_is_replaced_by_a_later_attempt(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    run = runs[0]
    assert store.record_result(factories.result(run, status="failed", attempt=1)) == "stored"
    assert child_counts(store) == {"results": 1, "load_points": 0, "energy_windows": 1,
                                   "requests": 0, "power_traces": 1}
    assert store.run_statuses([run.run_id])[run.run_id] == "failed"
    # An older failure arriving late changes nothing.
    late = factories.result(run, status="failed", attempt=0, started_at=T0 - timedelta(hours=1))
    assert store.record_result(late) == "duplicate"
    retry = factories.result(run, status="failed", attempt=2, started_at=T0 + timedelta(hours=1))
    assert store.record_result(retry) == "replaced"
    success = factories.result(run, attempt=3, started_at=T0 + timedelta(hours=2))
    assert store.record_result(success) == "replaced"
    assert child_counts(store) == {"results": 1, "load_points": 2, "energy_windows": 3,
                                   "requests": 6, "power_traces": 1}
    rows = [r for r in store.result_rows() if r["run_id"] == run.run_id]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert {r["attempts"] for r in rows} == {3} and {r["error"] for r in rows} == {None}


def test_failed_retry_counting_attempts_from_one_again_replaces(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    run = runs[0]
    store.record_result(factories.result(run, status="failed", attempt=3))
    later = factories.result(run, status="failed", attempt=1, started_at=T0 + timedelta(hours=1))
    assert store.record_result(later) == "replaced"


def test_cancelled_run_that_still_delivers_a_result(store: Store, sweep_in) -> None:
    sid, runs = sweep_in
    store.cancel_queued(sid)
    assert store.record_result(factories.result(runs[0])) == "stored"
    assert store.run_statuses([runs[0].run_id])[runs[0].run_id] == "succeeded"
    assert store.counts()["requests"] == 6


def test_run_level_energy_is_null_propagating(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    store.record_result(factories.result(runs[0], steady_energy_j=[100.0, 300.0]))
    store.record_result(factories.result(runs[1], steady_energy_j=[100.0, None]))
    engine = store.engine
    with engine.connect() as connection:
        figures = dict(connection.execute(text(
            "SELECT run_id, energy_j FROM results")).all())
        per_token = dict(connection.execute(text(
            "SELECT run_id, energy_per_output_token_j FROM results")).all())
    assert figures[runs[0].run_id] == pytest.approx(400.0)
    # Steady energy over the tokens emitted in the steady windows (2 × 50), not all 2 × 60.
    assert per_token[runs[0].run_id] == pytest.approx(400.0 / 100)
    assert figures[runs[1].run_id] is None and per_token[runs[1].run_id] is None


# ------------------------------------------------------------ mark_started


def test_mark_started_moves_queued_and_retried_runs(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    run_id = runs[0].run_id
    start = factories.event(run_id, attempt=1)
    assert store.mark_started(start)
    assert not store.mark_started(start)  # the same event again changes nothing
    assert store.run_statuses([run_id])[run_id] == "running"
    store.record_result(factories.result(runs[0], status="failed", attempt=1))
    assert not store.mark_started(start)  # late: the attempt that already failed
    retry = factories.event(run_id, attempt=2, at=T0 + timedelta(minutes=5),
                            worker_name="farm-gpu@node2")
    assert store.mark_started(retry)
    assert store.run_statuses([run_id])[run_id] == "running"
    row = next(r for r in store.result_rows() if r["run_id"] == run_id)
    assert row["attempts"] == 2
    assert not store.mark_started(factories.event("f" * 24))


def test_mark_started_never_resurrects_a_succeeded_run(store: Store, sweep_in) -> None:
    sid, runs = sweep_in
    done = runs[0].run_id
    store.record_result(factories.result(runs[0]))
    for attempt in (1, 2, 5):
        late = factories.event(done, attempt=attempt, at=T0 + timedelta(days=attempt))
        assert not store.mark_started(late)
    store.cancel_queued(sid)
    assert not store.mark_started(factories.event(runs[1].run_id, at=T0 + timedelta(days=9)))
    statuses = store.run_statuses([done, runs[1].run_id])
    assert statuses == {done: "succeeded", runs[1].run_id: "cancelled"}


def test_late_failure_does_not_stop_a_later_running_attempt(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    run_id = runs[0].run_id
    store.mark_started(factories.event(run_id, attempt=2, at=T0 + timedelta(hours=1)))
    # Attempt 1 (lost by its worker, redelivered as attempt 2) reports its failure late.
    assert store.record_result(factories.result(runs[0], status="failed", attempt=1)) == "stored"
    assert store.run_statuses([run_id])[run_id] == "running"


# ---------------------------------------------------------------- reading


def test_result_rows_shape_and_nulls(store: Store, sweep_in) -> None:
    sid, runs = sweep_in
    server_run = next(r for r in runs if r.scenario.kind == "server")
    store.record_result(factories.result(server_run, n_gpus=2))
    store.mark_started(factories.event(runs[-1].run_id))
    rows = store.result_rows(sid)
    measured = [r for r in rows if r["run_id"] == server_run.run_id]
    others = [r for r in rows if r["run_id"] != server_run.run_id]
    assert len(measured) == 2 and len(others) == len(runs) - 1
    assert [r["load_point"] for r in measured] == [0, 1]
    first = measured[0]
    assert first["load_kind"] == "concurrency" and first["load_value"] == 1.0
    assert first["energy_j"] == 100.0 and first["ttft_p50_ms"] == 50.0
    assert first["gpu_names"] == ["Simulated NVIDIA H100 80GB"] * 2
    assert first["gpu_uuids"] == ["GPU-sim-0000", "GPU-sim-0001"]
    assert first["simulated"] is True and first["status"] == "succeeded"
    assert first["energy_sensor"] == "sim.energy_counter"
    assert first["model"] == "tiny-llama-1B" and first["sweep"] == "small-sim"
    figures = ("load_point", "num_requests", "num_ok", "request_throughput_rps",
               "output_throughput_tps", "ttft_p50_ms", "tpot_p90_ms", "e2e_p90_ms", "energy_j",
               "energy_per_output_token_j", "energy_per_request_j", "avg_power_w",
               "energy_sensor", "gpu_names")
    for row in others:
        assert set(row) == set(first)
        for key in figures:
            assert row[key] is None, key  # null, never 0
    running = next(r for r in others if r["run_id"] == runs[-1].run_id)
    assert running["status"] == "running" and running["gpu_uuids"] == ["GPU-sim-0000"]
    assert running["worker"] == "farm-gpu@node1"


def test_result_rows_carry_the_gpu_tuning_asked_for_and_applied(store: Store) -> None:
    spec, toml, runs = factories.sweep()
    capped = factories.tuned(runs[0], 300.0, 1200)
    sid = store.record_sweep(spec, toml)
    store.add_runs(sid, [capped, runs[1]])
    # Two GPUs: the second read back a lower cap and no clock.
    store.record_result(factories.with_tuning(factories.result(capped, n_gpus=2), capped,
                                              [300.0, 299.0], [1215.0, None]))
    store.record_result(factories.result(runs[1]))
    rows = {r["run_id"]: r for r in store.result_rows(sid)}
    mine = rows[capped.run_id]
    assert (mine["power_limit_w"], mine["sm_clock_mhz"]) == (300.0, 1200)
    assert mine["applied_power_limit_w"] == 299.0      # the lowest GPU: the cap that binds
    assert mine["applied_sm_clock_mhz"] == 1215.0      # a GPU without a read-back not counted
    assert mine["tuning_refused"] is None
    plain = rows[runs[1].run_id]
    for key in ("power_limit_w", "sm_clock_mhz", "applied_power_limit_w",
                "applied_sm_clock_mhz", "tuning_refused"):
        assert plain[key] is None, key                  # null, never 0
    assert set(plain) == set(mine)


def test_a_refused_tuning_keeps_the_drivers_words_per_gpu() -> None:
    from farm.store.mapping import tuning_columns

    preflight = {"tuning": [{"uuid": "GPU-a", "requested_power_limit_w": 300.0,
                             "refused": "Insufficient Permissions"},
                            {"uuid": "GPU-b", "requested_power_limit_w": 300.0,
                             "refused": "Not Supported"}]}
    assert tuning_columns(preflight) == {
        "applied_power_limit_w": None, "applied_sm_clock_mhz": None,
        "tuning_refused": "GPU-a: Insufficient Permissions; GPU-b: Not Supported"}
    assert tuning_columns(None) == tuning_columns({"tuning": []}) == {
        "applied_power_limit_w": None, "applied_sm_clock_mhz": None, "tuning_refused": None}


def test_requests_and_traces_round_trip(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    sent = factories.result(runs[0], per_point=5, n_gpus=2)
    store.record_result(sent)
    got = store.requests_for(runs[0].run_id)
    assert len(got) == len(sent.requests) == 10
    for mine, theirs in zip(got, sent.requests):
        assert mine.model_dump(exclude={"itl_s"}) == theirs.model_dump(exclude={"itl_s"})
        assert mine.itl_s == pytest.approx(theirs.itl_s, rel=1e-6)
    assert got[0].itl_s == []  # empty ITL stored as NULL, read back as []
    assert len(store.requests_for(runs[0].run_id, load_point=1)) == 5
    trace = store.trace_for(runs[0].run_id)
    assert trace is not None and sent.trace is not None
    assert trace.gpu_uuids == sent.trace.gpu_uuids and trace.t_s == sent.trace.t_s
    assert trace.sensor == "sim.power" and trace.sample_period_s == 0.1
    for mine_w, theirs_w in zip(trace.power_w, sent.trace.power_w):
        assert mine_w[3] is None  # a missing sample stays missing
        assert [w for w in mine_w if w is not None] == pytest.approx(
            [w for w in theirs_w if w is not None])
    assert store.trace_for(runs[1].run_id) is None
    assert store.requests_for(runs[1].run_id) == []


def test_packing_is_little_endian_float32() -> None:
    blob = pack_f32([1.0, None])
    assert blob is not None and blob[:4] == b"\x00\x00\x80\x3f"
    assert math.isnan(unpack_f32(blob)[1]) and unpack_f32(blob, nan_as_none=True)[1] is None
    assert pack_f32([]) is None and unpack_f32(None) == []


def test_packing_throttle_reasons_as_uint64() -> None:
    blob = pack_u64([4, None, 2**63])
    assert blob is not None and len(blob) == 24
    assert blob[:8] == b"\x04" + b"\x00" * 7 and blob[8:16] == b"\xff" * 8  # the sentinel
    assert unpack_u64(blob) == [4, None, 2**63]
    assert pack_u64([]) is None and unpack_u64(None) == [] and unpack_u64(b"") == []
    for bad in ([U64_NONE], [1, None, U64_NONE], [-1], [2**64]):
        with pytest.raises(ValueError):
            pack_u64(bad)


# ------------------------------------------- validity, preflight, host energy


LOAD_POINT_FIGURES = ("output_tokens_per_j", "peak_power_w", "energy_net_j",
                      "energy_per_output_token_net_j", "energy_per_request_net_j",
                      "gco2e_per_1k_tokens")


def test_every_new_field_round_trips(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    server_run = next(r for r in runs if r.scenario.kind == "server")
    sent = factories.result(server_run, n_gpus=2, failing_check="agreement")
    assert store.record_result(sent) == "stored"
    # The trace: every series, None samples and uint64 bitmasks included (all the
    # factory's values are exact in float32).
    trace = store.trace_for(server_run.run_id)
    assert sent.trace is not None and trace == sent.trace
    assert trace.throttle_reasons is not None and trace.throttle_reasons[0][7] is None
    assert trace.throttle_reasons[0][9] == 2**63 | 0x4
    assert trace.sm_clock_mhz is not None and trace.sm_clock_mhz[1][0] is None
    # Result-level records come back as the records sent.
    got = store.result_for(server_run.run_id)
    assert got is not None
    assert got["validity"] == sent.validity and got["validity"].valid is False
    assert got["valid"] is False and got["invalid_reasons"] == "agreement"
    assert got["preflight"] == sent.preflight and got["cooled"] is True
    assert got["preflight"].gpus[1].foreign_pids == [999]
    assert got["idle"] == sent.idle and got["idle_ctx_power_w"] == 150.0
    assert got["host_energy"] == sent.host_energy
    assert got["cpu_energy_j"] == 900.0 and got["host_gpu_energy_j"] is None
    assert got["windows"] == sent.windows
    assert [w.disagrees for w in got["windows"]] == [False, True, True]
    assert got["windows"][1].agreement == 1.3 and got["windows"][0].agreement is None
    assert got["gpus"] == sent.gpus and got["error"] is None
    assert got["status"] == "succeeded" and got["started_at"] == sent.started_at
    assert store.result_for(runs[1].run_id) is None
    # Load points: the six new figures.
    rows = [r for r in store.result_rows() if r["run_id"] == server_run.run_id]
    assert len(rows) == len(sent.load_points) == 2
    for row, lp in zip(rows, sent.load_points):
        for figure in LOAD_POINT_FIGURES:
            assert row[figure] == pytest.approx(getattr(lp, figure)), figure
            assert row[figure] is not None


def test_load_points_round_trip_with_goodput_and_loadgen_figures(store: Store,
                                                                 sweep_in) -> None:
    sid, runs = sweep_in
    server_run = next(r for r in runs if r.scenario.kind == "server")
    batch_run = next(r for r in runs if r.scenario.kind == "batch")
    sent = factories.result(server_run)
    # An open-loop point too: lateness and unsent arrivals (the store does not check kinds).
    sent = sent.model_copy(update={"load_points": [
        *sent.load_points, factories.load_point(2, "request_rate", 4.0)]})
    store.record_result(sent)
    store.record_result(batch := factories.result(batch_run))
    got = store.load_points_for(server_run.run_id)
    assert got == sent.load_points                       # every field, exactly
    assert got[0].slo_p99_met is True and got[1].slo_p99_met is False
    assert got[2].lateness.p99_ms == 4.75 and got[2].unsent_requests == 5
    assert got[0].lateness.p99_ms is None and got[0].max_in_flight == 2
    assert got[1].notes == ["note 1", "1 of 3 request(s) failed (timeout ×1)"]
    # A batch point: no SLO, no load generator: null columns, read back as None / [].
    (batch_lp,) = store.load_points_for(batch_run.run_id)
    assert batch_lp == batch.load_points[0]
    assert (batch_lp.slo_ttft_ms, batch_lp.good_requests, batch_lp.slo_p99_met,
            batch_lp.unsent_requests, batch_lp.notes) == (None, None, None, None, [])
    assert store.load_points_for(runs[-1].run_id) == []
    with store.engine.connect() as connection:
        stored = connection.execute(text(
            "SELECT good_requests, slo_attainment, goodput_rps, slo_p99_met, "
            "lateness_p99_ms, unsent_requests, notes FROM load_points "
            f"WHERE run_id = '{batch_run.run_id}'")).one()
    assert all(value is None for value in stored)      # null, never 0 or '[]'
    # result_rows carries them for `farmctl results` / CSV / JSON.
    rows = {(r["run_id"], r["load_point"]): r for r in store.result_rows(sid)}
    first = rows[(server_run.run_id, 0)]
    assert (first["slo_ttft_ms"], first["slo_tpot_ms"], first["good_requests"]) == (
        2000.0, 200.0, 2)
    assert first["slo_attainment"] == pytest.approx(2 / 3) and first["goodput_rps"] == 2.0
    assert first["slo_p99_met"] is True and first["notes"] == sent.load_points[0].notes
    assert rows[(server_run.run_id, 2)]["lateness_p99_ms"] == 4.75
    batch_row = rows[(batch_run.run_id, 0)]
    assert (batch_row["goodput_rps"], batch_row["slo_attainment"], batch_row["notes"]) == (
        None, None, None)


def test_migration_0004_keeps_older_load_points(store_url: str) -> None:
    """Down to 0003 and up again: load points stay, their goodput columns come back null."""
    from alembic import command

    spec, toml, runs = factories.sweep()
    server_run = next(r for r in runs if r.scenario.kind == "server")
    with Store.open(store_url, upgrade=True) as store:
        store.add_runs(store.record_sweep(spec, toml), runs)
        store.record_result(sent := factories.result(server_run))
        before = child_counts(store)
    engine = make_engine(store_url)
    try:
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "0003")
    finally:
        engine.dispose()
    assert schema_state(store_url) == "outdated"
    with Store.open(store_url, upgrade=True) as store:
        assert child_counts(store) == before
        got = store.load_points_for(server_run.run_id)
    assert len(got) == 2
    for mine, theirs in zip(got, sent.load_points):
        assert (mine.good_requests, mine.goodput_rps, mine.slo_ttft_ms, mine.max_in_flight,
                mine.notes) == (None, None, None, None, [])
        assert mine.model_dump(exclude=GOODPUT_FIELDS) == theirs.model_dump(
            exclude=GOODPUT_FIELDS)


GOODPUT_FIELDS = {"slo_ttft_ms", "slo_tpot_ms", "good_requests", "slo_attainment",
                  "goodput_rps", "slo_p99_met", "lateness", "unsent_requests", "max_in_flight",
                  "notes"}


def test_runs_keep_their_slo_in_the_store(store: Store) -> None:
    """The SLO is not in the run id but travels with the run: a retry sends it again."""
    toml = factories.SMALL_SWEEP.replace("warmup_s = 0.1",
                                         "warmup_s = 0.1\nslo_ttft_ms = 450\nslo_tpot_ms = 40")
    spec, _, runs = factories.sweep(toml)
    sid = store.record_sweep(spec, toml)
    store.add_runs(sid, runs)
    default_ids = {r.run_id for r in factories.sweep()[2]}
    assert {r.run_id for r in runs} == default_ids
    back = store.runs_to_retry(sid, include_queued=True)
    server = [r for r in back if r.scenario.kind == "server"]
    assert server and all((r.scenario.slo_ttft_ms, r.scenario.slo_tpot_ms) == (450.0, 40.0)
                          for r in server)


def test_missing_trace_series_and_samples_round_trip(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    bare = factories.result(runs[0], n_gpus=2, extra_series=False)
    store.record_result(bare)
    trace = store.trace_for(runs[0].run_id)
    assert trace is not None and trace == bare.trace
    assert (trace.memory_power_w, trace.temperature_c, trace.sm_clock_mhz,
            trace.throttle_reasons) == (None, None, None, None)
    with store.engine.connect() as connection:
        blobs = connection.execute(text(
            "SELECT memory_power_w, temperature_c, sm_clock_mhz, throttle_reasons "
            "FROM power_traces")).all()
    assert blobs and all(value is None for row in blobs for value in row)
    # A series without samples stays apart from no series; all-None samples stay None.
    sparse = factories.result(runs[1]).model_copy(update={"trace": PowerTrace(
        sensor="nvml.field.power_instant", sample_period_s=0.05, gpu_uuids=["GPU-a", "GPU-b"],
        t_s=[], power_w=[[], []], memory_power_w=[[], []], temperature_c=None,
        sm_clock_mhz=None, throttle_reasons=[[], []])})
    store.record_result(sparse)
    assert store.trace_for(runs[1].run_id) == sparse.trace
    nones = factories.result(runs[2]).model_copy(update={"trace": PowerTrace(
        sensor="sim.power", sample_period_s=0.1, gpu_uuids=["GPU-a"], t_s=[0.0, 0.1],
        power_w=[[None, None]], memory_power_w=[[None, None]], temperature_c=None,
        sm_clock_mhz=[[None, 1410.0]], throttle_reasons=[[None, None]])})
    store.record_result(nones)
    assert store.trace_for(runs[2].run_id) == nones.trace
    wrong = factories.result(runs[3]).model_copy(update={"trace": PowerTrace(
        sensor="sim.power", sample_period_s=0.1, gpu_uuids=["GPU-a"], t_s=[0.0],
        power_w=[[1.0]], temperature_c=[[40.0], [41.0]])})
    with pytest.raises(ValueError, match="temperature_c"):
        store.record_result(wrong)


def test_result_rows_carry_validity(store: Store, sweep_in) -> None:
    sid, runs = sweep_in
    valid, invalid, failed = runs[0], runs[1], runs[2]
    store.record_result(factories.result(valid))
    store.record_result(factories.result(invalid, failing_check="power_range"))
    store.record_result(factories.result(failed, status="failed"))
    by_run: dict[str, list[dict]] = {}
    for row in store.result_rows(sid):
        by_run.setdefault(row["run_id"], []).append(row)
    assert {(r["valid"], r["invalid_reasons"]) for r in by_run[valid.run_id]} == {(True, None)}
    assert {(r["valid"], r["invalid_reasons"])
            for r in by_run[invalid.run_id]} == {(False, "power_range")}
    # No validity computed: null, not false.
    assert [(r["valid"], r["invalid_reasons"]) for r in by_run[failed.run_id]] == [(None, None)]
    assert [r["valid"] for r in by_run[runs[3].run_id]] == [None]  # no result yet
    first = by_run[valid.run_id][0]
    assert first["cooled"] is True and first["idle_power_w"] == 60.0
    assert first["idle_ctx_power_w"] == 75.0
    assert (first["cpu_energy_j"], first["ram_energy_j"]) == (900.0, 150.0)
    assert (first["cpu_method"], first["ram_method"]) == ("measured", "estimated")
    assert first["emissions_g"] == pytest.approx(0.12)
    assert first["output_tokens_per_j"] == pytest.approx(0.5)
    with store.engine.connect() as connection:
        flagged = connection.execute(text(
            "SELECT run_id, invalid_reasons FROM results WHERE invalid_reasons IS NOT NULL"
        )).all()
    assert [tuple(row) for row in flagged] == [(invalid.run_id, "power_range")]
    failed_result = store.result_for(failed.run_id)
    assert failed_result is not None and failed_result["validity"] is None
    assert failed_result["error"] is not None and failed_result["error"].log_tail == ["boom"]
    assert failed_result["preflight"] is not None  # the preflight ran before the failure


def test_new_figures_are_null_propagating(store: Store, sweep_in) -> None:
    sid, runs = sweep_in
    bare = factories.result(runs[0], with_host_energy=False, steady_energy_j=[None, 200.0])
    bare = bare.model_copy(update={"idle": None, "preflight": None})
    store.record_result(bare)
    host_columns = ("cpu_energy_j", "ram_energy_j", "cpu_method", "ram_method", "emissions_g")
    rows = [r for r in store.result_rows(sid) if r["run_id"] == runs[0].run_id]
    for row in rows:
        for key in (*host_columns, "cooled", "idle_power_w", "idle_ctx_power_w"):
            assert row[key] is None, key  # null, never 0
    # The first point's energy went unmeasured: every figure drawn from it is null
    # (its peak power comes from the power timeline and stays).
    assert [f for f in LOAD_POINT_FIGURES if rows[0][f] is not None] == ["peak_power_w"]
    assert all(rows[1][figure] is not None for figure in LOAD_POINT_FIGURES)
    with store.engine.connect() as connection:
        stored = connection.execute(text(
            "SELECT host_tracker, host_duration_s, cpu_energy_j, ram_energy_j, "
            "host_gpu_energy_j, emissions_g, carbon_intensity_g_per_kwh, region, host_note, "
            "preflight_json, cooled, idle_power_w, idle_ctx_power_w FROM results")).one()
    assert all(value is None for value in stored)
    got = store.result_for(runs[0].run_id)
    assert got is not None
    assert (got["host_energy"], got["idle"], got["preflight"]) == (None, None, None)
    assert got["validity"] == bare.validity and got["valid"] is True
    # A partly measured host: the missing figure stays None.
    partial = factories.host_energy().model_copy(update={"cpu_energy_j": None,
                                                        "cpu_method": None})
    store.record_result(factories.result(runs[1]).model_copy(update={"host_energy": partial}))
    row = next(r for r in store.result_rows(sid) if r["run_id"] == runs[1].run_id)
    assert row["cpu_energy_j"] is None and row["cpu_method"] is None
    assert row["ram_energy_j"] == 150.0
    got = store.result_for(runs[1].run_id)
    assert got is not None and got["host_energy"] == partial


def test_migration_0003_keeps_older_rows(store_url: str) -> None:
    """Down to 0002 and up again with a result stored: the rows stay, new columns
    come back null (disagrees false)."""
    from alembic import command

    spec, toml, runs = factories.sweep()
    with Store.open(store_url, upgrade=True) as store:
        store.record_sweep(spec, toml)
        store.add_runs(store.record_sweep(spec, toml), runs)
        store.record_result(factories.result(runs[0]))
        before = child_counts(store)
    engine = make_engine(store_url)
    try:
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "0002")
    finally:
        engine.dispose()
    assert schema_state(store_url) == "outdated"
    with Store.open(store_url, upgrade=True) as store:
        assert child_counts(store) == before
        got = store.result_for(runs[0].run_id)
        assert got is not None
        assert (got["valid"], got["validity"], got["preflight"], got["host_energy"],
                got["idle"]) == (None, None, None, None, None)
        assert all(w.disagrees is False and w.agreement is None for w in got["windows"])
        trace = store.trace_for(runs[0].run_id)
        assert trace is not None and trace.temperature_c is None and trace.power_w


def test_datetimes_round_trip_as_aware_utc(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    plus_two = timezone(timedelta(hours=2))
    started = datetime(2026, 6, 1, 14, 0, 0, 250000, tzinfo=plus_two)
    store.record_result(factories.result(runs[0], started_at=started))
    with Session(store.engine) as session:
        stored = session.scalars(select(ResultRow)).one()
        run = session.get(RunRow, runs[0].run_id)
    assert stored.started_at == started and stored.started_at.tzinfo is UTC
    assert stored.started_at.hour == 12
    assert run is not None and run.finished_at == started + timedelta(seconds=30)
    assert run.finished_at.tzinfo is UTC and run.queued_at.tzinfo is UTC
    sweep = store.find_sweep(runs[0].sweep)
    assert sweep is not None and sweep.created_at.tzinfo is UTC


def test_requeued_event_returns_a_running_run_to_the_queue(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    run_id = runs[0].run_id
    start = factories.event(run_id, attempt=1)
    store.mark_started(start)
    other = start.model_copy(update={"kind": "requeued", "attempt": 2})
    assert not store.mark_requeued(other)                 # not the attempt that runs
    back = start.model_copy(update={"kind": "requeued", "detail": "worker stopping"})
    assert store.mark_requeued(back)
    assert store.run_statuses([run_id])[run_id] == "queued"
    with pytest.raises(ValueError):
        store.mark_requeued(start)


def test_retry_of_a_lost_broker_includes_running_runs_of_chosen_queues(store: Store,
                                                                       sweep_in) -> None:
    sid, runs = sweep_in
    store.mark_started(factories.event(runs[0].run_id, attempt=1))
    queue = runs[0].hardware.queue
    assert store.runs_to_retry(sid, include_queued=True, queues={"no.such.queue"}) == []
    again = store.runs_to_retry(sid, include_queued=True, include_running=True,
                                queues={queue})
    assert runs[0].run_id in {r.run_id for r in again}
    assert set(store.run_statuses([r.run_id for r in runs]).values()) == {"queued"}


def test_fast_status_path_knows_the_newest_migration() -> None:
    from farm.store import counts, db

    assert db.head_revision() == counts.HEAD_REVISION


def test_status_reads_the_store_without_sqlalchemy(tmp_path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'farm.db'}"
    Store.open(url, upgrade=True).close()
    code = ("import sys\nfrom farm.cli import main\n"
            "try:\n    main(['status'])\nexcept SystemExit:\n    pass\n"
            # pydantic is loaded: status checks every FARM_* setting (pydantic-settings).
            "heavy = [m for m in ('sqlalchemy', 'alembic', 'sqlmodel', 'celery')"
            " if m in sys.modules]\nassert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"FARM_DB_URL": url, "PATH": ""}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no runs in the store yet" in proc.stdout


def test_rows_keep_repetitions_of_a_configuration_together_numbers_by_value(
        store: Store) -> None:
    # The engine's arguments live in spec_json, out of SQL's ORDER BY: a results
    # table interleaved batch sizes rep by rep, and sorted "1" < "64" < "8".
    spec, toml, runs = factories.sweep("""
name = "ordering"
repetitions = 2
[[model]]
id = "tiny-llama-1B"
source = "local/tiny"
[hardware]
gpu = "sim:H100"
[engine]
kind = "sim"
max_num_seqs = [64, 8, 1]
[[scenario]]
kind = "batch"
num_prompts = 4
[workload]
input_tokens = [8]
output_tokens = [4]
""")
    sid = store.record_sweep(spec, toml)
    store.add_runs(sid, runs)
    for run in runs:
        store.record_result(factories.result(run))
    expected = [(seqs, rep) for seqs in (1, 8, 64) for rep in (0, 1)]
    rows = store.result_rows(sid)
    assert [(r["engine_args"]["max_num_seqs"], r["repetition"]) for r in rows] == expected
    stored = store.runs_of(sid)
    assert [(json.loads(r["spec_json"])["engine"]["args"]["max_num_seqs"], r["repetition"])
            for r in stored] == expected


def test_engine_startup_and_random_weights_round_trip(store: Store, sweep_in) -> None:
    from farm_contract.records import EngineStartup

    _, runs = sweep_in
    startup = EngineStartup(engine_start_s=61.5, model_load_s=5.1, graph_capture_s=1.0,
                            kv_cache_tokens=428_432, kv_cache_blocks=26_777,
                            kv_block_size_tokens=16, kv_cache_bytes=56_156_545_433)
    sent = factories.result(runs[0])
    sent = sent.model_copy(update={"engine": sent.engine.model_copy(
        update={"model_weights": "random", "startup": startup})})
    assert store.record_result(sent) == "stored"
    got = store.result_for(runs[0].run_id)
    assert got is not None and got["engine_startup"] == startup
    assert got["model_weights"] == "random"
    assert got["engine_startup"].compile_s is None          # not reported: null, never 0
    assert store.run_result(runs[0].run_id).engine == sent.engine
    assert {r["model_weights"] for r in store.result_rows() if r["run_id"] == runs[0].run_id} \
        == {"random"}


def test_where_a_run_was_measured_round_trips(store: Store, sweep_in) -> None:
    _, runs = sweep_in
    sent = factories.result(runs[0])
    sent = sent.model_copy(update={"measurement": sent.measurement.model_copy(
        update={"measured_in": "run process"})})
    assert store.record_result(sent) == "stored"
    assert store.run_result(runs[0].run_id).measurement.measured_in == "run process"
    older = factories.result(runs[1])                    # a result that does not say
    assert store.record_result(older) == "stored"
    assert store.run_result(runs[1].run_id).measurement.measured_in is None

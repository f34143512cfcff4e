"""Extra energy sources in the store: each window's per-source energy and the sources'
descriptions are recorded and read back; migration 0005 leaves older rows without them."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from farm.store import Store, make_engine, schema_state
from farm.store.db import _alembic_config
from farm_contract.records import EnergySourceInfo, SourceEnergy
from tests import factories

SOURCES = [
    EnergySourceInfo(name="host_rapl", kind="rapl", sensor="rapl.package+dram", scope="host",
                     update_s=0.001, detail="/sys/class/powercap (package-0, dram)"),
    EnergySourceInfo(name="pdu", kind="http", sensor="http.energy_counter", scope="outlet",
                     update_s=1.0, detail="GET http://pdu/api → outlets.3.energy_wh"),
]


def with_sources(run):
    """A result whose windows carry both sources; the pdu failed in the last window."""
    result = factories.result(run)
    windows = []
    for i, window in enumerate(result.windows):
        last = i == len(result.windows) - 1
        windows.append(window.model_copy(update={"sources": {
            "host_rapl": SourceEnergy(energy_j=10.0 + i),
            "pdu": (SourceEnergy(energy_j=None, null_reason="meter pdu: HTTP 500 from http://pdu/api")
                    if last else SourceEnergy(energy_j=100.0 + i)),
        }}))
    measurement = result.measurement.model_copy(update={"energy_sources": SOURCES})
    return result.model_copy(update={"windows": windows, "measurement": measurement})


def test_window_sources_and_descriptions_round_trip(store: Store):
    spec, toml, runs = factories.sweep()
    store.add_runs(store.record_sweep(spec, toml), runs)
    sent = with_sources(runs[0])
    store.record_result(sent)
    plain = factories.result(runs[1])
    store.record_result(plain)
    got = store.result_for(sent.run_id)
    assert got["energy_sources"] == SOURCES
    assert [w.sources for w in got["windows"]] == [w.sources for w in sent.windows]
    failed = got["windows"][-1].sources["pdu"]
    assert failed.energy_j is None and "HTTP 500" in failed.null_reason    # null, not 0
    rebuilt = store.run_result(sent.run_id)
    assert rebuilt.measurement.energy_sources == SOURCES
    assert rebuilt.windows == sent.windows
    # A run without extra sources stores NULL, and reads back as none.
    with store.engine.connect() as connection:
        stored = connection.execute(text(
            "SELECT r.energy_sources_json, w.sources FROM results r JOIN energy_windows w "
            f"ON w.run_id = r.run_id WHERE r.run_id = '{plain.run_id}'")).all()
    assert stored and all(row == (None, None) for row in stored)
    again = store.run_result(plain.run_id)
    assert again.measurement.energy_sources == [] and all(w.sources == {} for w in again.windows)


def test_migration_0005_keeps_older_rows(store_url: str):
    """Down to 0004 and up again: windows stay, their sources come back as none."""
    spec, toml, runs = factories.sweep()
    with Store.open(store_url, upgrade=True) as store:
        store.add_runs(store.record_sweep(spec, toml), runs)
        sent = with_sources(runs[0])
        store.record_result(sent)
    engine = make_engine(store_url)
    try:
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "0004")
    finally:
        engine.dispose()
    assert schema_state(store_url) == "outdated"
    with Store.open(store_url, upgrade=True) as store:
        got = store.run_result(sent.run_id)
    assert got.measurement.energy_sources == []
    assert [w.model_dump(exclude={"sources"}) for w in got.windows] == [
        w.model_dump(exclude={"sources"}) for w in sent.windows]
    assert all(w.sources == {} for w in got.windows)

"""The energy-source seam: host RAPL and an external HTTP meter read beside the GPUs.

The HTTP meter is exercised against a fake meter served by aiohttp.web on
127.0.0.1 (a real socket, real HTTP): counter and power modes, credentials
from the environment, and the meter failing mid-run, which must give null
figures with a reason, never 0.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from farm_contract.records import GpuInfo
from tests.fake_nvml import patched
from tests.unit.workers.gpu.test_cpu_device import RANGE_UJ, Powercap
from tests.unit.workers.test_nvml_measurement import LIVE, RUN, WORKER, LiveNvml, WattsEngine
from tests.unit.workers.test_power_and_metrics import ScriptedGpu
from workers.energy import (
    EnergySource,
    SourceReading,
    SourceSpecError,
    configure_sources,
    configured_sources,
    parse_source_specs,
    source_kinds,
)
from workers.energy.http_meter import HttpMeter, field_value
from workers.energy.rapl import HostRapl
from workers.gpu.nvml import NvmlInventory
from workers.power import Meter, PowerSampler, source_energy
from workers.preflight import IdleTemperatures
from workers.runner import _sources_for, run_one


class FakeMeter:
    """A PDU-like JSON endpoint: an outlet's cumulative Wh and its power, both scripted."""

    def __init__(self) -> None:
        self.base_wh = 1000.0
        self.rate_w = 0.0               # the counter also grows at this power, in real time
        self.origin_s = time.monotonic()
        self.power_w = 250.0
        self.status = 200               # set 500 to make the meter fail
        self.seen_auth: list[str | None] = []
        self.hits = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def energy_wh(self) -> float:
        return self.base_wh + self.rate_w * (time.monotonic() - self.origin_s) / 3600.0

    @energy_wh.setter
    def energy_wh(self, value: float) -> None:
        self.base_wh = value - self.rate_w * (time.monotonic() - self.origin_s) / 3600.0

    async def _answer(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.seen_auth.append(request.headers.get("Authorization"))
        if self.status != 200:
            return web.Response(status=self.status, text="meter fault")
        return web.json_response({"outlets": [
            {"id": "A1", "energy_wh": 5.0, "power_w": 1.0},
            {"id": "A2", "energy_wh": self.energy_wh, "power_w": self.power_w}]})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/outlets", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> None:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)

    def stop(self) -> None:
        """Close the socket and the loop; a second call does nothing."""
        if self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/outlets"


@pytest.fixture
def fake_meter() -> Iterator[FakeMeter]:
    meter = FakeMeter()
    meter.start()
    yield meter
    meter.stop()


def gpu_meter(sources: list[EnergySource], watts: float = 200.0) -> tuple[Meter, PowerSampler]:
    gpu = ScriptedGpu(watts)
    sampler = PowerSampler([gpu], 0.02)
    return Meter([gpu], sampler, sources=sources), sampler


# ----------------------------------------------------------------- specs


def test_the_shipped_kinds_register_themselves():
    assert {"rapl", "http"} <= set(source_kinds())


def test_specs_build_sources_with_their_options(monkeypatch):
    monkeypatch.setenv("PDU_TOKEN", "s3cret")
    rapl, pdu = parse_source_specs(
        "rapl:name=host_rapl http:name=pdu;url=http://10.0.0.5/api?x=1&y=2;"
        "field=outlets.1.power_w;quantity=power_w;update_s=0.5;token_env=PDU_TOKEN")
    assert isinstance(rapl, HostRapl) and rapl.name == "host_rapl"
    assert isinstance(pdu, HttpMeter) and pdu.url == "http://10.0.0.5/api?x=1&y=2"
    assert pdu.update_s == 0.5 and pdu.sensor == "http.power_integral"
    info = pdu.info()
    assert info.name == "pdu" and info.kind == "http" and info.scope == "outlet"
    assert "s3cret" not in info.model_dump_json()


@pytest.mark.parametrize("spec,message", [
    ("ipmi", "unknown energy source kind 'ipmi'"),
    ("http:url=http://pdu/x", "field= is required"),
    ("http:url=http://admin:pw@pdu/x;field=e", "credentials in the URL"),
    ("http:url=http://pdu/x;field=e;token_env=NO_SUCH_VAR_FARM", r"\$NO_SUCH_VAR_FARM is not set"),
    ("http:url=http://pdu/x;field=e;quantity=volts", "quantity 'volts'"),
    ("http:url=http://pdu/x;field=e;update_s=0", "update_s must be > 0"),
    ("http:url=http://pdu/x;field=e;colour=red", "unknown option"),
    ("rapl rapl", "two energy sources named rapl"),
    ("rapl:oops", "expected key=value"),
])
def test_bad_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(SourceSpecError, match=message):
        parse_source_specs(spec)


def test_the_worker_reads_its_sources_from_the_environment_once():
    configure_sources([])
    try:
        assert configured_sources() == []
        import workers.energy as energy
        energy._configured = None
        got = configured_sources({"FARM_ENERGY_SOURCES": "rapl:name=r1"})
        assert [s.name for s in got] == ["r1"]
        assert [s.name for s in configured_sources({})] == ["r1"]   # parsed once
    finally:
        configure_sources([])


def test_field_paths_reach_into_objects_and_lists():
    doc = {"PowerControl": [{"PowerConsumedWatts": 412.5}], "s": "7.5", "b": True}
    assert field_value(doc, "PowerControl.0.PowerConsumedWatts") == 412.5
    assert field_value(doc, "s") == 7.5
    for path in ("PowerControl.3.x", "missing", "b", "PowerControl"):
        with pytest.raises(Exception, match="field"):
            field_value(doc, path)


# ------------------------------------------------------------------ RAPL


def test_host_rapl_is_the_cpu_devices_counter(tmp_path):
    powercap = Powercap(tmp_path / "powercap")
    powercap.domain("intel-rapl:0", "package-0", 1_000_000)
    powercap.domain("intel-rapl:0:0", "dram", 200_000)
    source = HostRapl("host_rapl", tmp_path / "powercap")
    assert source.sensor == "rapl.package+dram" and source.wraps_at_j == RANGE_UJ / 1e6
    meter, _ = gpu_meter([source])
    meter.begin("steady", 0)
    meter.settle()
    powercap.set("intel-rapl:0", 1_000_000 + 30_000_000)     # +30 J package
    powercap.set("intel-rapl:0:0", 200_000 + 5_000_000)      # +5 J DRAM
    time.sleep(0.05)
    window = meter.end("steady", 0)
    assert window.sources["host_rapl"].energy_j == pytest.approx(35.0)
    assert window.energy_j is not None and window.null_reason is None


def test_host_rapl_wrap_is_corrected_and_unreadable_rapl_is_null(tmp_path):
    powercap = Powercap(tmp_path / "powercap")
    powercap.domain("intel-rapl:0", "package-0", RANGE_UJ - 1_000_000)
    source = HostRapl("r", tmp_path / "powercap")
    before = source.read()
    powercap.set("intel-rapl:0", 2_000_000)                  # wrapped once: +3 J
    assert source_energy(source, before, source.read(), 1.0).energy_j == pytest.approx(3.0)
    absent = HostRapl("r", tmp_path / "nowhere")
    meter, _ = gpu_meter([absent])
    meter.begin("idle")
    time.sleep(0.01)
    window = meter.end("idle")
    assert window.sources["r"].energy_j is None
    assert "no RAPL powercap tree" in window.sources["r"].null_reason
    assert window.energy_j is not None          # the GPUs' figure is untouched


def test_rapl_is_not_read_twice_for_a_cpu_run_nor_any_source_for_a_simulated_one(tmp_path):
    source = HostRapl("r", tmp_path)
    cpu = ScriptedGpu()
    cpu.info = GpuInfo(index=0, uuid="CPU-x", name="cpu", model="cpu", backend="cpu")
    real = ScriptedGpu()
    real.info = GpuInfo(index=0, uuid="GPU-x", name="H100", model="h100-80gb", backend="gpu")

    class _Run:
        simulated = False

    assert _sources_for(_Run(), [cpu], [source]) == []
    assert _sources_for(_Run(), [real], [source]) == [source]
    assert _sources_for(_Run(), [ScriptedGpu()], [source]) == []      # a "sim" device
    _Run.simulated = True
    assert _sources_for(_Run(), [real], [source]) == []


# ------------------------------------------------------------ HTTP meter


def test_http_counter_gives_each_window_its_energy(fake_meter, monkeypatch):
    monkeypatch.setenv("PDU_USER", "farm")
    monkeypatch.setenv("PDU_PASSWORD", "pw")
    [pdu] = parse_source_specs([f"http:name=pdu;url={fake_meter.url};field=outlets.1.energy_wh;"
                                "update_s=0.01;user_env=PDU_USER;password_env=PDU_PASSWORD"])
    meter, _ = gpu_meter([pdu])
    meter.begin("steady", 0)
    meter.settle()
    fake_meter.energy_wh += 0.5                                # 1800 J
    time.sleep(0.05)
    window = meter.end("steady", 0)
    assert set(window.sources) == {"pdu"}
    assert window.sources["pdu"].energy_j == pytest.approx(1800.0)
    assert window.sources["pdu"].null_reason is None
    expected = "Basic " + base64.b64encode(b"farm:pw").decode()
    assert fake_meter.seen_auth == [expected, expected]
    assert window.energy_j is not None and window.energy_j < 100   # never added in


def test_http_meter_failing_mid_run_is_null_with_reason_never_zero(fake_meter):
    pdu = HttpMeter("pdu", fake_meter.url, "outlets.1.energy_wh", update_s=0.01)
    meter, _ = gpu_meter([pdu])
    meter.begin("run")
    meter.settle()
    meter.begin("steady", 0)
    meter.settle()
    fake_meter.energy_wh += 0.1
    time.sleep(0.03)
    first = meter.end("steady", 0)
    fake_meter.status = 500                          # the meter fails mid-run
    meter.begin("steady", 1)
    meter.settle()
    time.sleep(0.03)
    second = meter.end("steady", 1)
    fake_meter.status = 200
    run = meter.end("run")                           # began fine, ends fine: measured
    assert first.sources["pdu"].energy_j == pytest.approx(360.0)
    failed = second.sources["pdu"]
    assert failed.energy_j is None and "HTTP 500" in failed.null_reason
    assert second.energy_j is not None and second.name == "steady"     # window kept
    assert run.sources["pdu"].energy_j == pytest.approx(360.0)
    fake_meter.stop()                                # gone altogether
    meter.begin("idle")
    time.sleep(0.03)
    gone = meter.end("idle").sources["pdu"]
    assert gone.energy_j is None and "cannot read" in gone.null_reason


def test_http_power_is_integrated_and_a_missed_poll_breaks_the_window(fake_meter):
    pdu = HttpMeter("pdu", fake_meter.url, "outlets.1.power_w", quantity="power_w",
                    update_s=0.02)
    try:
        meter, _ = gpu_meter([pdu])
        meter.begin("steady", 0)
        time.sleep(0.3)
        window = meter.end("steady", 0)
        assert window.sources["pdu"].energy_j == pytest.approx(250.0 * window.duration_s,
                                                              rel=0.1)
        assert fake_meter.hits > 5                   # polled between the edges
        meter.begin("steady", 1)
        meter.settle()
        fake_meter.status = 503
        time.sleep(0.1)                              # polls fail inside the window
        fake_meter.status = 200
        time.sleep(0.1)
        broken = meter.end("steady", 1).sources["pdu"]
        assert broken.energy_j is None and "interrupted" in broken.null_reason
        meter.begin("steady", 2)                     # recovered: measured again
        time.sleep(0.1)
        assert meter.end("steady", 2).sources["pdu"].energy_j > 0
    finally:
        pdu.close()


def test_a_window_shorter_than_twice_the_update_period_is_null():
    class Counter(EnergySource):
        kind = "test"
        name = "c"
        sensor = "test.counter"
        update_s = 1.0

        def read(self) -> SourceReading:
            return SourceReading(10.0)

        @classmethod
        def from_options(cls, name: str, options: Any) -> Counter:
            return cls()

    source = Counter()
    short = source_energy(source, SourceReading(10.0), SourceReading(12.0), 1.5)
    assert short.energy_j is None and "shorter than twice" in short.null_reason
    backwards = source_energy(source, SourceReading(10.0), SourceReading(2.0), 5.0)
    assert backwards.energy_j is None and "backwards" in backwards.null_reason
    assert source_energy(source, SourceReading(10.0), SourceReading(12.0), 5.0).energy_j == 2.0


def test_a_source_that_raises_is_null_with_the_reason():
    class Broken(EnergySource):
        kind = "broken"
        name = "b"
        sensor = "test.broken"

        def read(self) -> SourceReading:
            raise RuntimeError("wire cut")

        @classmethod
        def from_options(cls, name: str, options: Any) -> Broken:
            return cls()

    meter, _ = gpu_meter([Broken()])
    meter.begin("idle")
    window = meter.end("idle")
    assert window.sources["b"].energy_j is None
    assert window.sources["b"].null_reason == "RuntimeError: wire cut"


@pytest.fixture
def live_h100() -> Iterator[tuple[LiveNvml, list]]:
    """One faked NVML H100 whose counter follows the test engine's power level."""
    fake = LiveNvml()
    LIVE[:] = [fake]
    WattsEngine.during_steady = None
    with patched(fake):
        inventory = NvmlInventory()
        yield fake, inventory.devices()[:1]
        inventory.shutdown()
    WattsEngine.during_steady = None


def test_run_one_records_the_sources_and_keeps_the_run_when_the_meter_fails(live_h100,
                                                                               fake_meter,
                                                                               tmp_path):
    """The whole path on (faked) NVML: sources described with the run, every window
    carries them, the meter failing during the second load point nulls only its figures."""
    fake_meter.rate_w = 900.0                       # the outlet: GPU + rest of the host
    pdu = HttpMeter("pdu", fake_meter.url, "outlets.1.energy_wh", update_s=0.05)
    rapl = HostRapl("host_rapl", tmp_path / "no-powercap")
    calls = []

    def fail_second_steady(nvml):
        calls.append(1)
        if len(calls) == 2:
            fake_meter.status = 500

    WattsEngine.during_steady = fail_second_steady
    _, gpus = live_h100
    result = run_one(RUN, gpus, threading.Event(), worker=WORKER, attempt=1,
                     engine_factory=WattsEngine, idle_temperatures=IdleTemperatures(),
                     energy_sources=[pdu, rapl])
    assert result.status == "succeeded", result.error
    assert [s.name for s in result.measurement.energy_sources] == ["pdu", "host_rapl"]
    assert result.measurement.energy_sources[0].detail.startswith("GET http://127.0.0.1")
    assert all(set(w.sources) == {"pdu", "host_rapl"}
               for w in result.windows if w.duration_s > 0)
    first, second = result.window("steady", 0), result.window("steady", 1)
    assert first.sources["pdu"].energy_j == pytest.approx(900.0 * first.duration_s, rel=0.1)
    assert first.energy_j == pytest.approx(500.0 * first.duration_s, rel=0.03)  # GPUs alone
    assert second.sources["pdu"].energy_j is None
    assert "HTTP 500" in second.sources["pdu"].null_reason
    assert second.energy_j == pytest.approx(500.0 * second.duration_s, rel=0.03)
    assert all(w.sources["host_rapl"].energy_j is None for w in result.windows
               if w.duration_s > 0)
    assert result.load_points[1].energy_j == second.energy_j      # figures unchanged
    assert result.validity.valid, result.validity

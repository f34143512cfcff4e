"""Results signed by their worker host (tasks/signing.py): what the worker sends is
signed with its key, the recorder stores only what the named host's key signed,
and parks the rest with the reason."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import farm.recorder as recording
from farm_contract.records import RunResult
from farm_contract.settings import SettingsError
from tasks import signing
from tests.factories import result as make_result

KEY_A = "a" * 64            # host node1's key (the factories' worker host)
KEY_B = "b" * 64            # another host's


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    """The recorder's task body with a keyring for node1 and gpu-b; returns what it
    stored and what it parked."""
    keys = tmp_path / "signing-keys"
    keys.write_text(f"# host key\nnode1 {KEY_A}\n\ngpu-b {KEY_B}   # rotated 2026-12\n")
    monkeypatch.setenv("FARM_SIGNING_KEYS", str(keys))
    stored, parked = [], []
    monkeypatch.setattr(recording, "park", lambda payload, error: parked.append((payload, error)))
    monkeypatch.setattr(recording, "forget_done",
                        lambda run_id, refused: parked.append(("done", run_id)))

    def apply(payload: str, signature) -> str:
        return recording.apply(RunResult, payload, lambda r: stored.append(r) or "stored",
                             signature)
    return apply, stored, parked


def test_a_result_signed_by_its_host_is_stored(recorder):
    apply, stored, parked = recorder
    payload = make_result("run-1").model_dump_json()
    assert apply(payload, signing.sign(payload, host="node1", settings=_key(KEY_A))) == "stored"
    assert [r.run_id for r in stored] == ["run-1"] and parked == []


@pytest.mark.parametrize(("case", "reason"), [
    ("another host's key", "signature does not match host 'node1'"),
    ("tampered energy", "signature does not match host 'node1'"),
    ("claims another host", "signed by host 'gpu-b' but the record names host 'node1'"),
    ("unsigned", "unsigned: this recorder stores only results signed by their host"),
    ("unknown host", "host 'gpu-x' has no key in FARM_SIGNING_KEYS"),
    ("malformed", "malformed signature"),
])
def test_a_forged_or_unsigned_result_is_parked_never_stored(recorder, case, reason):
    apply, stored, parked = recorder
    payload = make_result("run-1").model_dump_json()
    signature = signing.sign(payload, host="node1", settings=_key(KEY_A))
    if case == "another host's key":
        signature = signing.sign(payload, host="node1", settings=_key(KEY_B))
    elif case == "tampered energy":
        forged = make_result("run-1", steady_energy_j=[1.0, 2.0])
        assert forged.load_points[0].energy_j != RunResult.model_validate_json(
            payload).load_points[0].energy_j
        payload = forged.model_dump_json()
    elif case == "claims another host":           # gpu-b's own key, node1's name in the record
        signature = signing.sign(payload, host="gpu-b", settings=_key(KEY_B))
    elif case == "unsigned":
        signature = None
    elif case == "unknown host":
        result = make_result("run-1")
        payload = result.model_copy(update={"worker": result.worker.model_copy(
            update={"host": "gpu-x"})}).model_dump_json()
        signature = signing.sign(payload, host="gpu-x", settings=_key(KEY_A))
    elif case == "malformed":
        signature = {"mac": "00"}
    assert apply(payload, signature) == "parked"
    assert stored == []
    (parked_payload, error), forgotten = parked
    assert parked_payload == payload and error.startswith("RunResult refused: ")
    assert reason in error
    # Measured but not stored: the done marker goes, so `farmctl retry` measures it again.
    assert forgotten == ("done", "run-1")


def test_without_a_keyring_unsigned_results_are_stored(monkeypatch):
    monkeypatch.delenv("FARM_SIGNING_KEYS", raising=False)
    payload = make_result("run-1").model_dump_json()
    assert recording.apply(RunResult, payload, lambda r: "stored", None) == "stored"


def test_a_rotated_host_verifies_with_either_key_and_the_file_is_read_again(recorder, tmp_path):
    apply, stored, parked = recorder
    keys = tmp_path / "signing-keys"
    keys.write_text(f"node1 {KEY_A}\nnode1 {'c' * 64}\n")      # rotation: old and new
    for key in (KEY_A, "c" * 64):
        payload = make_result(f"run-{key[0]}").model_dump_json()
        assert apply(payload, signing.sign(payload, host="node1", settings=_key(key))) == "stored"
    keys.write_text(f"node1 {'c' * 64}\n")                      # the old key retired
    payload = make_result("run-old").model_dump_json()
    assert apply(payload, signing.sign(payload, host="node1", settings=_key(KEY_A))) == "parked"
    assert len(stored) == 2 and len(parked) == 2


def test_the_worker_signs_what_it_sends_as_its_host(monkeypatch):
    import socket

    import tasks.measure as measure

    sent = []
    monkeypatch.setattr(measure.app, "send_task", lambda *a, **kw: sent.append((a, kw)))
    monkeypatch.setenv("FARM_SIGNING_KEY", KEY_A)
    measure._send("farm.record", '{"run_id": "r"}', "record-r-1")
    (_args, kwargs), = sent
    signature = kwargs["kwargs"]["host_signature"]
    assert signature["host"] == socket.gethostname()
    ring = signing.Keyring({socket.gethostname(): [KEY_A]})
    assert ring.refusal(socket.gethostname(), '{"run_id": "r"}', signature) is None
    monkeypatch.delenv("FARM_SIGNING_KEY")
    measure._send("farm.record", '{"run_id": "r"}', "record-r-1")
    assert sent[1][1]["kwargs"] == {}          # unsigned: an older recorder reads it as before


@pytest.mark.parametrize(("text", "message"), [
    ("node1\n", "line 1: expected `HOST KEY` (two fields), found 1"),
    (f"# keys\nnode1 {KEY_A} extra\n", "line 2: expected `HOST KEY` (two fields), found 3"),
    ("node1 short\n", "line 1: the key of node1 is too short (at least 32 characters"),
    ("# nothing yet\n", "holds no `HOST KEY` line"),
])
def test_a_keyring_farm_cannot_use_is_named_with_its_line(tmp_path, text, message):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(SettingsError, match="FARM_SIGNING_KEYS=") as caught:
        signing.Keyring.read(str(path))
    assert message in str(caught.value)


def test_the_recorder_refuses_to_start_on_a_bad_keyring_with_a_clear_error(tmp_path,
                                                                            monkeypatch):
    from farm.cli import main

    path = tmp_path / "keys"
    path.write_text(f"node1 {KEY_A}\nnode2\n")
    monkeypatch.setenv("FARM_SIGNING_KEYS", str(path))
    monkeypatch.setenv("FARM_DB_URL", f"sqlite:///{tmp_path / 'farm.db'}")
    out = CliRunner().invoke(main, ["recorder"])
    assert out.exit_code == 2, out.output
    assert "line 2: expected `HOST KEY`" in out.output and "Traceback" not in out.output


def test_a_short_worker_key_stops_the_worker_without_echoing_it(monkeypatch, capsys):
    from tasks import worker_main

    monkeypatch.setenv("FARM_SIGNING_KEY", "secret-but-short")
    assert worker_main.main(["--probe", "--sim", "H100"]) == 2
    err = capsys.readouterr().err
    assert "FARM_SIGNING_KEY='***' is too short (at least 32 characters)" in err
    assert "secret-but-short" not in err


def _key(key: str):
    from farm_contract.settings import Settings

    return Settings(signing_key=key)


def test_a_nul_character_is_replaced_before_the_store_sees_it(recorder):
    # PostgreSQL's text cannot hold NUL (an engine's log tail can): SQLite stored such a
    # result while PostgreSQL refused it on every retry, for ever (audit, 2026-12-08).
    from farm_contract.records import ErrorInfo

    apply, stored, _ = recorder
    failed = make_result("run-1", status="failed").model_copy(update={"error": ErrorInfo(
        kind="engine", message="vllm died\x00", log_tail=["a\x00b"])})
    payload = failed.model_dump_json()
    assert "\\u0000" in payload
    assert apply(payload, signing.sign(payload, host="node1", settings=_key(KEY_A))) == "stored"
    (kept,) = stored
    assert kept.error.message == "vllm died\ufffd" and kept.error.log_tail == ["a\ufffdb"]


def test_a_value_the_store_cannot_hold_is_parked_not_retried(monkeypatch):
    from sqlalchemy.exc import DataError

    parked = []
    monkeypatch.delenv("FARM_SIGNING_KEYS", raising=False)
    monkeypatch.setattr(recording, "park", lambda payload, error: parked.append(error))

    def refuses(result):
        raise DataError("INSERT …", {}, ValueError("value out of range"))

    payload = make_result("run-1").model_dump_json()
    assert recording.apply(RunResult, payload, refuses, None) == "parked"
    assert parked == ["RunResult not storable: value out of range"]

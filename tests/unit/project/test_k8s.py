"""deploy/k8s/ against the Kubernetes schemas (kubernetes-validate's offline copies,
strict: an unknown field is an error) and against the farm: the Secrets and
settings it names exist, the coordinator meets the `restricted` Pod Security
Standard, the worker is not privileged and reaches its helper's socket."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from farm.cli import main
from farm_contract.settings import Settings
from tests.paths import ROOT

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (the dev extra) is not installed")

K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes still commonly run by labs, and the newest schemas shipped.
VERSIONS = ("1.29.0", "1.37.0")
DEPLOYMENT_ONLY = {"FARM_REDIS_PASSWORD", "FARM_DB_PASSWORD"}


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in documents(name)]


def pod_specs() -> list[tuple[dict, dict]]:
    """(workload, its pod spec) of every workload."""
    return [(d, d["spec"]["template"]["spec"]) for d in manifests()
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version) -> None:
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    for name in files:
        for document in documents(name):
            kubernetes_validate.validate(document, version, strict=True)


def test_the_validation_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(next(d for d, _ in pod_specs()))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secrets.example.yaml"}


def test_the_coordinator_has_redis_postgres_recorder_and_flower() -> None:
    workloads = {d["metadata"]["name"]: d for d, _ in pod_specs()}
    assert {"farm-redis", "farm-postgres", "farm-recorder", "farm-flower"} <= set(workloads)
    runner = CliRunner()
    for name in ("farm-recorder", "farm-flower", "farm-worker"):
        command = workloads[name]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[0] == "farmctl"
        if command[1] == "worker":
            # `farmctl worker` execs the worker program: never in this process.
            done = subprocess.run([sys.executable, "-m", "farm.cli", "worker", "--help"],
                                  capture_output=True, timeout=60)
            assert done.returncode == 0, done.stderr
        else:
            assert runner.invoke(main, [command[1], "--help"]).exit_code == 0


def test_secrets_and_settings_named_exist_with_their_keys() -> None:
    provided = {(d["metadata"]["namespace"], d["metadata"]["name"]): set(d["stringData"])
                for d in documents("secrets.example.yaml")}
    configs = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in manifests()
               if d["kind"] == "ConfigMap"}
    for workload, spec in pod_specs():
        namespace = workload["metadata"]["namespace"]
        for container in containers(spec):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in provided[(namespace, ref["name"])], (workload, env)
                if env["name"].endswith("PASSWORD"):
                    assert "value" not in env, f"{env['name']}: a literal password"
            for source in container.get("envFrom", []):
                assert (namespace, source["configMapRef"]["name"]) in configs


def test_only_settings_farm_reads() -> None:
    known = {f.validation_alias for f in Settings.model_fields.values()} | DEPLOYMENT_ONLY
    text = "".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert set(re.findall(r"\b(FARM_[A-Z_]+)", text)) <= known


def test_the_coordinator_meets_the_restricted_pod_security_standard() -> None:
    namespaces = {d["metadata"]["name"]: d["metadata"]["labels"] for d in manifests()
                  if d["kind"] == "Namespace"}
    assert namespaces["farm"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload, spec in pod_specs():
        if workload["metadata"]["namespace"] != "farm":
            continue
        assert not any(spec.get(k) for k in ("hostPID", "hostIPC", "hostNetwork"))
        assert not any("hostPath" in v for v in spec.get("volumes", []))
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert not context.get("privileged")


def test_the_worker_daemonset_follows_gpu_products_and_tunes_through_the_helper() -> None:
    (worker,) = [d for d in documents("worker-daemonset.yaml") if d["kind"] == "DaemonSet"]
    spec = worker["spec"]["template"]["spec"]
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert term["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"
    by_name = {c["name"]: c for c in spec["containers"]}
    farm_worker, helper = by_name["worker"], by_name["gpu-tune"]
    assert farm_worker["securityContext"]["privileged"] is False
    assert farm_worker["securityContext"]["runAsNonRoot"] is True
    assert farm_worker["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert helper["securityContext"]["privileged"] is True
    env = {e["name"]: e.get("value") for e in farm_worker["env"]}
    assert "FARM_DB_URL" not in env and "FARM_DB_PASSWORD" not in env
    # The worker's helper command reaches the socket the helper container serves,
    # on a volume both mount.
    socket_path = env["FARM_GPU_TUNE_HELPER"].split()[-1]
    assert env["FARM_GPU_TUNE_HELPER"].split()[:2] == ["farm-gpu-tune-relay", "call"]
    assert socket_path in helper["command"]
    mounts = [{m["name"]: m["mountPath"] for m in c["volumeMounts"]}
              for c in (farm_worker, helper)]
    shared = {n for n in mounts[0] if mounts[1].get(n) == mounts[0][n]}
    assert any(socket_path.startswith(mounts[0][n] + "/") for n in shared)
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'farm-gpu-tune-relay = "workers.gpu.tune_relay:main"' in scripts

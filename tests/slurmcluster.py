"""A real single-node Slurm in a temp dir, for tests and benchmarks.

Debian's slurmctld, slurmd and munged, each with its own files under one
directory: a munge key and socket, a slurm.conf on free ports with a node that
has `Gres=gpu:<type>:<n>` GPUs whose device files are copies of /dev/null (the
jobs' workers serve them with `--sim`), no cgroups, no accounting.
Clients find it through SLURM_CONF (`env()`). Started as root (munged and the
daemons want it: jobs run as their submitter, root here).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """Slurm or munge cannot be started here (packages missing, not root, …)."""


def _find(program: str) -> str | None:
    return shutil.which(program) or next(
        (str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin") if (p := Path(d, program)).exists()),
        None)


def missing_programs() -> list[str]:
    """The programs a cluster needs that are not installed."""
    return [p for p in (*DAEMONS, "sbatch", "squeue", "scancel", "sinfo") if _find(p) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One node (this host) named after it, one partition `farm`, GPUs in gres.conf."""

    def __init__(self, root: Path, gres: str = "gpu:h100:2", cpus: int = 8,
                 kill_wait_s: int = 5):
        self.root = root
        self.gres = gres
        self.cpus = cpus
        self.kill_wait_s = kill_wait_s
        self.node = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.sock"

    def env(self) -> dict[str, str]:
        """Variables a Slurm client needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 30) -> SlurmCluster:
        missing = missing_programs()
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (Debian: apt-get "
                                   "install slurmctld slurmd slurm-client munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("a private Slurm needs root (slurmd runs jobs as their user)")
        self._write_files()
        munge = self.root / "munge"
        self._spawn("munged", [_find("munged"), "--foreground", "--force",
                               f"--socket={self.munge_socket}",
                               f"--key-file={munge / 'munge.key'}",
                               f"--pid-file={munge / 'munged.pid'}",
                               f"--log-file={munge / 'munged.log'}",
                               f"--seed-file={munge / 'munged.seed'}"])
        self._wait(self.munge_socket.exists, timeout_s, "munged's socket")
        self._spawn("slurmctld", [_find("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_find("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._node_idle, timeout_s, "the node to come up idle")
        return self

    def stop(self) -> None:
        """End every job (slurmstepd outlives slurmd), then stop the daemons — reverse
        order, TERM then KILL."""
        if self.procs and all(p.poll() is None for p in self.procs):
            self.run("scancel", "--full", "--user=root", check=False)
            try:
                self._wait(lambda: not self.run("squeue", "-h", check=False).stdout.strip(),
                           self.kill_wait_s + 10, "the jobs to end", stop_on_failure=False)
            except SlurmUnavailable:
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(argv), env={**os.environ, **self.env()}, capture_output=True,
                              text=True, timeout=30, check=check)

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- internals ---------------------------------------------------------------
    def _spawn(self, name: str, argv: list) -> None:
        out = open(self.root / "log" / f"{name}.out", "ab")
        self.procs.append(subprocess.Popen([str(a) for a in argv], stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           env={**os.environ, **self.env()}))

    def _wait(self, predicate, timeout_s: float, what: str,
              stop_on_failure: bool = True) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    if stop_on_failure:
                        self.stop()
                    raise SlurmUnavailable(f"{proc.args[0]} exited {proc.returncode} while "
                                           f"waiting for {what}: {self._tails()}")
            if predicate():
                return
            time.sleep(0.2)
        if stop_on_failure:
            self.stop()
        raise SlurmUnavailable(f"timed out waiting for {what}: {self._tails()}")

    def _tails(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-600:]}"
                          for p in sorted((self.root / "log").glob("*")) if p.stat().st_size)

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
        return out.startswith("idle")

    def _write_files(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o755)   # clients need to reach the socket
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        log = self.root / "log"
        name, gtype, count = self.gres.split(":")
        self.conf.write_text("\n".join([
            "ClusterName=farmtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # No cgroups here: processes tracked by parentage, no task binding.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "GresTypes=gpu",
            "ReturnToService=2",
            f"KillWait={self.kill_wait_s}",
            "MinJobAge=30",
            # The node's CPUs are what we say, not what the VM has.
            "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} Gres={self.gres} "
            "State=UNKNOWN",
            "PartitionName=farm Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            ""]))
        # Copies of /dev/null (char 1:3) stand for the device nodes: the gpu plugin
        # numbers GPUs by them (CUDA_VISIBLE_DEVICES); the jobs' workers are --sim.
        devices = self.root / "dev"
        devices.mkdir(exist_ok=True)
        for i in range(int(count)):
            node = devices / f"nvidia{i}"
            if not node.exists():
                os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (self.root / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name={name} Type={gtype} "
            f"File={devices}/nvidia[0-{int(count) - 1}]\n")

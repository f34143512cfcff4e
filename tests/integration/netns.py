"""A GPU host as a separate machine for tests: a network namespace joined to this one
by a veth pair, and a partition of that link (`tc qdisc … blackhole`). Root only."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Host:
    """Namespace `name` at `address`, reaching this machine at `gateway` over a veth."""

    def __init__(self, index: int = 0):
        tag = uuid.uuid4().hex[:6]
        self.name = f"farmt-{tag}"
        self.outer, self.inner = f"vo{tag}", f"vi{tag}"
        # A /30 of 10.213.0.0/16 of our own, per host.
        self.gateway = f"10.213.{index}.1"
        self.address = f"10.213.{index}.2"

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a command inside the namespace."""
        return ("ip", "netns", "exec", self.name)

    def create(self) -> Host:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
            _ip("link", "set", self.inner, "netns", self.name)
            _ip("addr", "add", f"{self.gateway}/30", "dev", self.outer)
            _ip("link", "set", self.outer, "up")
            for args in (("addr", "add", f"{self.address}/30", "dev", self.inner),
                         ("link", "set", self.inner, "up"), ("link", "set", "lo", "up")):
                _ip("-n", self.name, *args)
        except Exception:
            self.delete()
            raise
        return self

    def partition(self) -> None:
        """Drop everything this machine sends to the host: replies never arrive."""
        subprocess.run(["tc", "qdisc", "add", "dev", self.outer, "root", "blackhole"],
                       check=True, capture_output=True)

    def heal(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", self.outer, "root"],
                       check=True, capture_output=True)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)


def skip_unless_netns() -> None:
    """Skip (with the reason) where namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and tc need root")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (iproute2)")

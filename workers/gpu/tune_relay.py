"""`farm-gpu-tune-relay`: the privileged helper across a container boundary (Kubernetes).

On a bare host the worker runs `farm-gpu-tune` through sudo. In a pod the
worker's container is not privileged and has no sudo; the helper runs in a
second, privileged container of the same pod, and the two share only a unix
socket in an emptyDir volume:

    # helper container (privileged): serve one request per connection
    farm-gpu-tune-relay serve /run/farm-tune/helper.sock -- farm-gpu-tune
    # worker container: FARM_GPU_TUNE_HELPER names the client, which the worker
    # runs exactly as it would run the helper itself (argv, exit status, output)
    FARM_GPU_TUNE_HELPER="farm-gpu-tune-relay call /run/farm-tune/helper.sock"

A request is one JSON line, the helper's arguments; the answer is one JSON line
with its exit status, stdout and stderr. The server runs the helper command with
those arguments as an argv list (no shell), only for the helper's three command
names and at most three short arguments; the helper checks each argument again
before NVML is touched (workers/gpu/tune_helper.py). Standard library only, so
the helper image needs nothing but this file, the helper and nvidia-ml-py.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys

COMMANDS = {"set-power-limit", "lock-clocks", "reset"}
MAX_ARG_CHARS = 80
MAX_REQUEST_BYTES = 1024
HELPER_TIMEOUT_S = 60
USAGE = ("usage: farm-gpu-tune-relay serve SOCKET -- HELPER [ARG...] | "
         "farm-gpu-tune-relay call SOCKET ARG...")


def checked(args: object) -> list[str] | None:
    """`args` when it has the helper's shape (a command name, ≤ 2 short strings), else None."""
    if not (isinstance(args, list) and 1 <= len(args) <= 3
            and all(isinstance(a, str) and 0 < len(a) <= MAX_ARG_CHARS for a in args)):
        return None
    return args if args[0] in COMMANDS else None


def answer(helper: list[str], request: bytes) -> dict:
    """Run the helper for one request line; its exit status and output."""
    try:
        args = checked(json.loads(request))
    except ValueError:
        args = None
    if args is None:
        return {"status": 2, "stdout": "", "stderr": "farm-gpu-tune-relay: not a helper request"}
    try:
        done = subprocess.run([*helper, *args], capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"status": 1, "stdout": "", "stderr": f"farm-gpu-tune-relay: {exc}"}
    return {"status": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def serve(path: str, helper: list[str]) -> None:
    """Answer requests on the unix socket `path` until killed, one at a time: a GPU
    setting is never changed by two requests at once."""
    if os.path.exists(path):
        os.unlink(path)          # left by a previous container of the pod

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
            if not line:         # connected and left (a readiness probe): nothing asked
                return
            self.wfile.write(json.dumps(answer(helper, line)).encode() + b"\n")

    with socketserver.UnixStreamServer(path, Handler) as server:
        # The worker's container runs as another user: the socket is the pod's only.
        os.chmod(path, 0o666)
        server.serve_forever()


def call(path: str, args: list[str]) -> int:
    """Send `args` to the server at `path`; print its output, return its status."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(HELPER_TIMEOUT_S + 10)
            conn.connect(path)
            conn.sendall(json.dumps(args).encode() + b"\n")
            reply = json.loads(conn.makefile("rb").readline())
    except (OSError, ValueError) as exc:
        print(f"farm-gpu-tune-relay: no helper at {path}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(reply.get("stdout", ""))
    sys.stderr.write(reply.get("stderr", ""))
    return int(reply.get("status", 1))


def main(argv: list[str] | None = None) -> int:
    """Entry point: `serve SOCKET -- HELPER...` or `call SOCKET ARG...`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 4 and argv[0] == "serve" and argv[2] == "--":
        serve(argv[1], argv[3:])
        return 0
    if len(argv) >= 3 and argv[0] == "call":
        return call(argv[1], argv[2:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

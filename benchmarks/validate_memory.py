"""`farmctl validate`'s peak memory and time on the worst sweep files (issue 22 item 1).

Each case runs `farmctl validate FILE` as a child process and reads the child's
own peak resident set (ru_maxrss, through os.wait4) and wall time: the largest
expansion and the largest file still accepted, and the monsters the bounds
refuse (a million repetitions, a million requests in flight, a 1 MiB file of
models, a file one byte too large, /dev/zero). `--tree DIR` runs another
checkout (e.g. /work/main, before the bounds) under a memory cap
(`--cap-mb`, RLIMIT_AS) and `--timeout`, so a monster there cannot take the host.

    .venv/bin/python benchmarks/validate_memory.py [--tree /work/main] [--cap-mb 2048]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, table, temp_dir

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = (ROOT / "examples" / "quickstart.toml").read_text()
MiB = 1_048_576


def cases(folder: Path) -> list[tuple[str, str, Path]]:
    """(name, what the bound does, file) of each case, written into `folder`."""
    def write(name: str, text: str) -> Path:
        path = folder / f"{name}.toml"
        path.write_text(text)
        return path

    # 1,000 repetitions × 2 GPUs × 2 scenario runs × 5 bins: exactly MAX_RUNS (20,000).
    most = QUICKSTART.replace("repetitions = 2", "repetitions = 1000").replace(
        "input_tokens = [128, 512]", "input_tokens = [128, 256, 512, 1024, 2048]")
    # 20,000 distinct configurations (repetitions share their configuration's objects).
    distinct = QUICKSTART.replace("repetitions = 2", "repetitions = 1").replace(
        "input_tokens = [128, 512]", f"input_tokens = {list(range(1, 5001))}")
    # The largest file accepted: 20,000 configurations, 100 exclude rules (the most;
    # each configuration is matched against every one) and a description to 1 MiB.
    rules = "".join(f'[[exclude]]\ninput_tokens = 4096\noutput_tokens = {i + 1}\n'
                    for i in range(100))
    head = distinct.replace('name = "quickstart-sim"', 'name = "quickstart-sim"\ndescription = """')
    body = head.replace('description = """', 'description = """\n"""', 1) + rules
    pad = MiB - len(body.encode()) - 1
    biggest = head.replace('description = """', 'description = """' + "x" * pad + '"""', 1) \
        + rules
    # As many [[model]] tables as 1 MiB holds: parsed, then refused by run count.
    block = '[[model]]\nid = "m{0:05d}"\nsource = "o/m-1B"\n'
    rest = QUICKSTART.split("[[model]]")[0] + "[hardware]" + QUICKSTART.split("[hardware]")[1]
    count = (MiB - len(rest) - 64) // len(block.format(0))
    models = rest.replace("[hardware]", "".join(block.format(i) for i in range(count))
                          + "[hardware]")
    assert len(biggest.encode()) <= MiB < len((biggest + "\n##").encode())
    return [
        ("quickstart (16 runs)", "accepted", write("quickstart", QUICKSTART)),
        ("20,000 runs: 20 × 1,000 repetitions", "accepted", write("most-runs", most)),
        ("20,000 runs: 20,000 configurations", "accepted", write("distinct", distinct)),
        ("1 MiB: 20,000 configurations, 100 excludes", "accepted", write("biggest", biggest)),
        ("repetitions = 1,000,000", "refused (field)",
         write("reps", QUICKSTART.replace("repetitions = 2", "repetitions = 1000000"))),
        ("adaptive max 1,000 × 20 bins (80,000 runs)", "refused (run count)",
         write("count", most.replace("repetitions = 1000", "repetitions = { min = 2, max = 1000, "
                                     "ci_half_width_pct = 2 }").replace(
             "input_tokens = [128, 256, 512, 1024, 2048]",
             f"input_tokens = {list(range(100, 120))}"))),
        ("concurrency = [1,000,000]", "refused (field)",
         write("conc", QUICKSTART.replace("concurrency = [1, 16, 64]",
                                          "concurrency = [1000000]"))),
        (f"{models.count('[[model]]'):,} models in {len(models.encode()) / MiB:.2f} MiB",
         "refused (run count)", write("models", models)),
        ("1 MiB + 1 byte", "refused (size)", write("toobig", biggest + "\n##")),
        ("/dev/zero", "refused (not a file)", Path("/dev/zero")),
    ]


def measure(tree: Path, path: Path, cap_mb: int | None, timeout_s: float
            ) -> tuple[float, float, str]:
    """(peak RSS MiB, seconds, how it ended) of `farmctl validate PATH` in `tree`."""
    # The cap is set by the child itself (no preexec_fn: unsafe beside threads).
    cap = f"resource.setrlimit(resource.RLIMIT_AS, ({cap_mb * MiB}, {cap_mb * MiB}))" \
        if cap_mb else "pass"
    program = f"import resource; {cap}; from farm.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    errors = tempfile.TemporaryFile()        # a pipe could fill and stall the child
    child = subprocess.Popen([sys.executable, "-c", program, "validate", str(path)], cwd=tree,
                             env=env, stdout=subprocess.DEVNULL, stderr=errors)
    timer = None
    try:
        import threading

        timer = threading.Timer(timeout_s, lambda: child.send_signal(signal.SIGKILL))
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        if timer:
            timer.cancel()
    seconds = time.perf_counter() - start
    errors.seek(0)
    err = errors.read().decode(errors="replace")
    errors.close()
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGKILL:
        ended = f"killed after {timeout_s:.0f} s"
    elif "MemoryError" in err or "Cannot allocate" in err:
        ended = f"MemoryError at the {cap_mb} MB cap"
    else:
        ended = f"exit {code}"
    return usage.ru_maxrss / 1024, seconds, ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--cap-mb", type=int, default=None,
                        help="address-space cap for each child (MB)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print(machine())
    rows = []
    with temp_dir() as folder:
        for name, bound, path in cases(folder):
            size = path.stat().st_size if path.is_file() else 0
            rss, seconds, ended = measure(args.tree, path, args.cap_mb, args.timeout)
            rows.append([name, f"{size / 1024:,.0f} KB" if size else "—", bound, ended,
                         f"{rss:,.0f}", f"{seconds:.2f}"])
    print(f"tree: {args.tree}")
    print(table("farmctl validate: peak memory and time",
                ["file", "size", "bound", "ended", "peak RSS MiB", "s"], rows))


if __name__ == "__main__":
    main()

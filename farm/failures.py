"""Failed runs grouped by reason, for `farmctl run`, `results` and `status SWEEP`.

The store keeps a failed run's reason in `runs.error` as "<kind>: <message>"
(farm/store/recording.py). Runs that failed for the same reason are one line
on screen — "3 × engine: model path /x/y does not exist" — and one group with
its run ids in JSON, so a sweep of 300 runs failing alike does not print 300
reasons, and a reader still finds which runs they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NO_REASON = "no reason recorded"
MESSAGE_CHARS = 240          # one screen line; the whole message is in --format json


@dataclass
class FailureGroup:
    """Runs that failed with the same kind and first line of message."""

    kind: str | None
    message: str
    run_ids: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many runs failed this way."""
        return len(self.run_ids)

    def reason(self) -> str:
        """"kind: first line of the message", shortened to one screen line."""
        text = f"{self.kind}: {self.message}" if self.kind else self.message
        return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"

    def as_json(self) -> dict[str, Any]:
        """The group as `results --format json` carries it."""
        return {"count": self.count, "kind": self.kind, "message": self.message,
                "run_ids": self.run_ids}


def split_error(error: str | None) -> tuple[str | None, str]:
    """A stored error "<kind>: <message>" as (kind, the message's first line).

    A kind is one word (engine, oom, timeout, …); text without one is all message.
    """
    if not error or not error.strip():
        return None, NO_REASON
    first = error.strip().splitlines()[0].strip()
    kind, sep, rest = first.partition(": ")
    if sep and kind and " " not in kind:
        return kind, rest.strip() or NO_REASON
    return None, first


def group_failures(runs: Iterable[tuple[str, str | None]]) -> list[FailureGroup]:
    """Group (run id, stored error) pairs of failed runs by reason, most runs first.

    A run listed twice (result rows: one per load point) counts once.
    """
    groups: dict[tuple[str | None, str], FailureGroup] = {}
    seen: set[str] = set()
    for run_id, error in runs:
        if run_id in seen:
            continue
        seen.add(run_id)
        kind, message = split_error(error)
        group = groups.setdefault((kind, message), FailureGroup(kind, message))
        group.run_ids.append(run_id)
    for group in groups.values():
        group.run_ids.sort()
    return sorted(groups.values(), key=lambda g: (-g.count, g.kind or "", g.message))


def from_result_rows(rows: Iterable[Mapping[str, Any]]) -> list[FailureGroup]:
    """The failure groups of `Store.result_rows` rows (status "failed")."""
    return group_failures((r["run_id"], r.get("error")) for r in rows
                          if r.get("status") == "failed")


def format_failures(groups: list[FailureGroup], sweep: str) -> str:
    """The lines printed under a table: one per reason, with where the run ids are."""
    if not groups:
        return ""
    total = sum(g.count for g in groups)
    lines = [f"{total} run(s) failed (run ids: farmctl results {sweep} --format json):"]
    lines += [f"  {g.count} × {g.reason()}" for g in groups]
    return "\n".join(lines) + "\n"


def add_to_json(text: str, groups: list[FailureGroup]) -> str:
    """`results --format json` output with a top-level "failures" list of groups."""
    document = json.loads(text)
    document["failures"] = [g.as_json() for g in groups]
    return json.dumps(document, indent=2) + "\n"

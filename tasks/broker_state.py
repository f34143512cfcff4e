"""Small pieces of farm state kept in the broker's Redis, next to the queues.

GPU workers have no database access, so what they must know before running a
run lives here:

- ``farm:claim:<run_id>``   the worker holding a run; a heartbeat refreshes its
                            TTL. Its absence means nobody is running it.
- ``farm:done:<run_id>``    a result for this run has been sent: a redelivered
                            copy of the message is acknowledged, not re-run.
- ``farm:attempts:<run_id>``counter of starts (redeliveries and retries alike).
- ``farm:cancelled``        set of cancelled sweep ids.
- ``farm:worker:<name>``    a worker's advertisement (GPUs, queues, busy GPUs).
- ``farm:dispatcher``       the dispatch lease (farm/dispatch.py): one dispatcher
                            pass at a time tops the GPU queues up from the store.
- ``farm:progress:<run_id>``the load point a running run is at (for the
                            progress display); removed when the run ends.

`reap_orphans` is the heartbeat-based reaper FIELD_NOTES asks for: kombu only
hands back an unacknowledged message after `visibility_timeout` (hours, since
runs are long); a message whose consumer stopped heart-beating is put back on
its queue after a short grace instead.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis

from farm_contract.exitcodes import ExitCode
from farm_contract.settings import Settings, load_settings

log = logging.getLogger(__name__)

CLAIM = "farm:claim:"
DONE = "farm:done:"
ATTEMPTS = "farm:attempts:"
CANCELLED = "farm:cancelled"
WORKER = "farm:worker:"
PROGRESS = "farm:progress:"
UNREADABLE = "farm:unreadable"
DISPATCH_LEASE = "farm:dispatcher"
DONE_TTL_S = 90 * 24 * 3600
# kombu's Redis transport keeps unacknowledged messages in these two keys.
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"


def redis_client(broker_url: str, settings: Settings | None = None) -> redis.Redis:
    """A redis-py client for a Celery broker URL (redis://, rediss://, redis+socket://).

    A rediss:// URL is opened with the TLS files of `settings` (default: the
    environment's FARM_BROKER_TLS_*), the same ones Celery's connections use.
    """
    if broker_url.startswith("redis+socket://"):
        broker_url = "unix://" + broker_url[len("redis+socket://"):]
    tls: dict[str, Any] = {}
    if broker_url.lower().startswith("rediss://"):
        tls = (settings or load_settings()).broker_ssl_options()
    return redis.Redis.from_url(broker_url, socket_timeout=30, socket_connect_timeout=10, **tls)


def _waits_for_eta(payload: dict, now: float, grace_s: float) -> bool:
    """A retry scheduled for later is held unacked by a live worker until its ETA."""
    eta = payload.get("headers", {}).get("eta")
    if not eta:
        return False
    try:
        due = datetime.fromisoformat(eta).timestamp()
    except (TypeError, ValueError):
        return False
    return now < due + grace_s


def _task_id(raw: bytes, unacked: bool = False) -> str | None:
    """The task id (`headers.id`) of a raw kombu envelope; None if unreadable (the
    transport parks those)."""
    try:
        message = json.loads(raw)
        task_id = (message[0] if unacked else message)["headers"]["id"]
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    return task_id if isinstance(task_id, str) else None


# Compare-and-act on a lease in one step, so a lapsed holder never touches a newer one's.
_RENEW_IF_HELD = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                  "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_DELETE_IF_HELD = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                   "return redis.call('del', KEYS[1]) else return 0 end")


CREDENTIALS_HINT = ("put the Redis user and password in FARM_BROKER_URL, e.g. "
                    "redis://:PASSWORD@host:6379/0 (a user: USER:PASSWORD@; rediss:// with TLS)")


def credentials_refused(broker_url: str) -> str | None:
    """Why the broker turns these credentials away, or None. A long-running worker or
    recorder asks before it starts: a broker that is merely unreachable is left to
    Celery, which waits for it, but a refusal would repeat forever as tracebacks."""
    try:
        redis_client(broker_url).ping()
    except redis.AuthenticationError as exc:
        reason = str(exc)
    except redis.ResponseError as exc:
        if not str(exc).startswith(("NOAUTH", "WRONGPASS")):
            return None
        reason = str(exc)
    except (redis.RedisError, OSError):
        return None
    else:
        return None
    return (f"the broker refused us: it needs a password (or refused the one given); "
            f"{CREDENTIALS_HINT} [{reason.split(',')[0]}]")


class BrokerUnavailable(RuntimeError):
    """Redis does not answer."""

    # The worker side of tasks imports only the contract, so this cannot derive from
    # farm.errors.FarmError: farm/cli.py maps the class.
    exit_code = ExitCode.BROKER_ERROR


class BrokerState:
    """The farm's keys in the broker's Redis: claims, done markers, attempts, cancels, workers."""

    def __init__(self, client: redis.Redis):
        self.r = client

    def ping(self) -> None:
        """Raise BrokerUnavailable unless Redis answers."""
        try:
            self.r.ping()
        except (redis.RedisError, OSError) as exc:
            raise BrokerUnavailable(f"broker unavailable: {exc}") from None

    # -- claims and heartbeats ----------------------------------------------
    def claim(self, run_id: str, holder: str, ttl_s: float) -> bool:
        """Take the run for `holder`; False if another live worker holds it."""
        ok = self.r.set(CLAIM + run_id, holder, nx=True, px=int(ttl_s * 1000))
        if ok:
            return True
        return self.r.get(CLAIM + run_id) == holder.encode()

    def refresh_claim(self, run_id: str, holder: str, ttl_s: float) -> bool:
        """Keep our claim alive; take it back if it lapsed (e.g. Redis was away).

        Returns False when another worker holds the run now (it was reaped and
        re-taken): both finish, the recorder keeps one result.
        """
        if self.r.get(CLAIM + run_id) == holder.encode():
            self.r.pexpire(CLAIM + run_id, int(ttl_s * 1000))
            return True
        return bool(self.r.set(CLAIM + run_id, holder, nx=True, px=int(ttl_s * 1000)))

    def release(self, run_id: str, holder: str) -> None:
        """Drop the run's claim if `holder` still holds it."""
        if self.r.get(CLAIM + run_id) == holder.encode():
            self.r.delete(CLAIM + run_id)

    def is_claimed(self, run_id: str) -> bool:
        """Whether some worker holds a live claim on the run."""
        return bool(self.r.exists(CLAIM + run_id))

    # -- run bookkeeping ----------------------------------------------------
    def next_attempt(self, run_id: str) -> int:
        """Count one more start of the run and return its number (1 for the first)."""
        key = ATTEMPTS + run_id
        with self.r.pipeline() as pipe:
            attempt, _ = pipe.incr(key).expire(key, DONE_TTL_S).execute()
        return int(attempt)

    def mark_done(self, run_id: str) -> None:
        """Mark that a result of the run was sent (kept DONE_TTL_S seconds)."""
        self.r.set(DONE + run_id, "1", ex=DONE_TTL_S)

    def is_done(self, run_id: str) -> bool:
        """Whether a result of the run has been sent: a redelivery is not run again."""
        return bool(self.r.exists(DONE + run_id))

    def forget_done(self, run_id: str) -> None:
        """Drop the run's done marker: its result was sent but refused, so a retry
        must measure it again."""
        self.r.delete(DONE + run_id)

    def cancel_sweep(self, sweep_id: str) -> None:
        """Add the sweep to the cancelled set: workers skip its runs."""
        self.r.sadd(CANCELLED, sweep_id)

    def uncancel_sweep(self, sweep_id: str) -> None:
        """Remove the sweep from the cancelled set."""
        self.r.srem(CANCELLED, sweep_id)

    def is_cancelled(self, sweep_id: str) -> bool:
        """Whether the sweep is in the cancelled set."""
        return bool(self.r.sismember(CANCELLED, sweep_id))

    def park_unreadable(self, payload: Any, queue: str | None = None,
                        reason: str | None = None, task: str | None = None) -> None:
        """Keep a message no one could read, for a human: its text, the queue it
        came from, why it was unreadable and when (one JSON entry of farm:unreadable),
        and its task name when it has one (`task`, only then in the entry).
        A payload that is not text (bytes, or an argument of the wrong type) is kept
        as its decoded text or its JSON (repr where JSON has no form for it)."""
        if isinstance(payload, bytes):
            payload = payload.decode(errors="replace")
        elif not isinstance(payload, str):
            payload = json.dumps(payload, default=repr)
        self.r.rpush(UNREADABLE, json.dumps({
            "queue": queue, "reason": reason, "payload": payload,
            "parked_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **({"task": task} if task is not None else {})}))

    def unreadable_count(self) -> int:
        """How many messages are parked in farm:unreadable."""
        return int(self.r.llen(UNREADABLE))

    # -- worker advertisements ---------------------------------------------
    def advertise(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        """Publish a worker's advertisement, expiring after `ttl_s` seconds."""
        self.r.set(WORKER + name, json.dumps(info), px=int(ttl_s * 1000))

    def withdraw(self, name: str) -> None:
        """Remove a worker's advertisement."""
        self.r.delete(WORKER + name)

    def workers(self) -> list[dict[str, Any]]:
        """The advertisements of the live workers, sorted by worker name."""
        keys = sorted(self.r.scan_iter(WORKER + "*", count=500))
        values = self.r.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]

    # -- progress of running runs (for the screen) ----------------------------
    def set_progress(self, run_id: str, info: dict[str, Any], ttl_s: float) -> None:
        """Record where a running run is (its load point), expiring after `ttl_s`."""
        self.r.set(PROGRESS + run_id, json.dumps(info), px=int(ttl_s * 1000))

    def clear_progress(self, run_id: str) -> None:
        """Forget a run's progress (it ended, or was handed back)."""
        self.r.delete(PROGRESS + run_id)

    def progress(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The recorded progress of each of `run_ids` that has one."""
        if not run_ids:
            return {}
        values = self.r.mget([PROGRESS + run_id for run_id in run_ids])
        return {run_id: json.loads(v) for run_id, v in zip(run_ids, values) if v}

    def queue_slots(self) -> dict[str, int]:
        """Runs the live workers can hold at once per queue: for `{backend}.{slug}.xN`,
        each advertising worker's GPUs of that model divided by N."""
        slots: dict[str, int] = {}
        for worker in self.workers():
            models = [g.get("model") for g in worker.get("gpus") or ()]
            for queue in worker.get("queues") or ():
                _backend, _, rest = queue.partition(".")
                slug, _, count = rest.rpartition(".x")
                if count.isdigit() and int(count) > 0:
                    slots[queue] = slots.get(queue, 0) + models.count(slug) // int(count)
        return slots

    # -- the dispatcher's view of the queues ------------------------------------
    def queue_length(self, queue: str) -> int:
        """Messages waiting on a queue: kombu's Redis transport keeps a queue as a
        list named after it (messages taken but not acked are in `unacked`)."""
        return int(self.r.llen(queue))

    def acquire_lease(self, token: str, ttl_s: float, key: str = DISPATCH_LEASE) -> bool:
        """Take the lease for `token` (SET NX PX); True also when `token` holds it already."""
        if self.r.set(key, token, nx=True, px=int(ttl_s * 1000)):
            return True
        return self.renew_lease(token, ttl_s, key)

    def renew_lease(self, token: str, ttl_s: float, key: str = DISPATCH_LEASE) -> bool:
        """Extend the lease if `token` still holds it; False when it lapsed or another holds it."""
        return bool(self.r.eval(_RENEW_IF_HELD, 1, key, token, int(ttl_s * 1000)))

    def release_lease(self, token: str, key: str = DISPATCH_LEASE) -> None:
        """Drop the lease if `token` holds it (never another holder's)."""
        self.r.eval(_DELETE_IF_HELD, 1, key, token)

    # -- what the broker holds of a run (the lost-run check, farm/lost_runs.py) --
    def unheld(self, run_ids: list[str]) -> list[str]:
        """Those of `run_ids` with neither a live claim nor a done marker."""
        if not run_ids:
            return []
        with self.r.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.exists(CLAIM + run_id, DONE + run_id)
            held = pipe.execute()
        return [run_id for run_id, n in zip(run_ids, held) if not n]

    def message_task_ids(self, queues: list[str]) -> set[str]:
        """The task ids of every message waiting on `queues` or taken and not yet
        acknowledged (kombu's `unacked` hash), whoever took it."""
        ids = {_task_id(raw) for queue in queues for raw in self.r.lrange(queue, 0, -1)}
        # An unacked entry is kombu's [envelope, exchange, routing key].
        ids.update(_task_id(raw, unacked=True) for raw in self.r.hvals(UNACKED))
        ids.discard(None)
        return ids  # type: ignore[return-value]

    # -- the reaper -----------------------------------------------------------
    def reap_orphans(self, grace_s: float, now: float | None = None) -> list[str]:
        """Put back on their queues the unacknowledged tasks nobody is running.

        A message counts as orphaned when it was delivered more than `grace_s` ago
        and its task id has no live claim: its worker died without acking (SIGKILL,
        host loss). Returns the task ids restored. Running it twice is harmless.
        """
        now = time.time() if now is None else now
        restored = []
        for tag, delivered_at in self.r.zrange(UNACKED_INDEX, 0, -1, withscores=True):
            if now - delivered_at < grace_s:
                continue
            raw = self.r.hget(UNACKED, tag)
            if raw is None:
                continue
            try:
                payload, exchange, routing_key = json.loads(raw)
                task_id = payload["headers"]["id"]
            except (ValueError, KeyError, TypeError):
                log.warning("reaper: unreadable unacked message %r left alone", tag)
                continue
            if self.is_claimed(task_id) or _waits_for_eta(payload, now, grace_s):
                continue
            queue = self._queue_for(exchange, routing_key)
            if self._restore(tag, queue):
                restored.append(task_id)
                log.warning("reaper: task %s had no live worker; put back on %s",
                            task_id, queue)
        return restored

    def _queue_for(self, exchange: str, routing_key: str) -> str:
        """The queue a message was routed to, from kombu's binding table."""
        for member in self.r.smembers(f"_kombu.binding.{exchange}") if exchange else ():
            rk, _pattern, queue = member.decode().split("\x06\x16")
            if rk == routing_key:
                return queue
        return routing_key

    def _restore(self, tag: bytes, queue: str) -> bool:
        """Move one unacked message back to the head of its queue, atomically."""
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(UNACKED)
                raw = pipe.hget(UNACKED, tag)
                if raw is None:
                    return False
                payload, _exchange, _rk = json.loads(raw)
                payload.setdefault("headers", {})["redelivered"] = True
                pipe.multi()
                pipe.zrem(UNACKED_INDEX, tag)
                pipe.hdel(UNACKED, tag)
                # kombu publishes with LPUSH and consumes with BRPOP: RPUSH puts the
                # message first in line, where it was when it was taken.
                pipe.rpush(queue, json.dumps(payload))
                pipe.execute()
                return True
            except redis.WatchError:
                return False

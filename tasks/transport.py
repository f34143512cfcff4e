"""kombu's Redis transport, with two changes: an entry it cannot read is parked, not
fatal; a requeued message goes back to the head of its queue, not the tail.

A list entry on a queue that is not JSON, or JSON that is not a kombu message
envelope, makes kombu's Redis channel raise inside the consumer's event loop;
Celery calls that an "Unrecoverable error" and the whole worker (or recorder)
stops. One stray `LPUSH` must not take a GPU node down, and the entry is a
message someone meant to send: it is kept in `farm:unreadable` with its queue
and the reason (`BrokerState.park_unreadable`), and consumption carries on.

Selected by `tasks.app.configure` (`broker_transport`) for every Redis URL.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Empty

log = logging.getLogger(__name__)

# The keys of the envelope kombu's virtual transports put on a list.
ENVELOPE_KEYS = ("body", "headers", "properties")


def envelope_problem(message: Any) -> str | None:
    """Why a decoded list entry is not a kombu message envelope; None when it is one."""
    if not isinstance(message, dict):
        return f"not a message envelope (a JSON {type(message).__name__})"
    missing = [k for k in ENVELOPE_KEYS if k not in message]
    if missing:
        return f"not a message envelope (no {', '.join(missing)})"
    if not isinstance(message["properties"], dict) or "delivery_tag" not in message["properties"]:
        return "not a message envelope (no properties.delivery_tag)"
    return None


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, but a rejected message that is requeued goes back to the
    head of its queue (the end BRPOP takes next), where the reaper also puts runs
    back: a run handed back at SIGTERM keeps its turn instead of waiting behind
    every run queued since (kombu restores it to the tail)."""

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Acknowledge `delivery_tag`; with `requeue`, first put it back at the head."""
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=False)
            super(kombu_redis.QoS, self).ack(delivery_tag)
        else:
            super().reject(delivery_tag, requeue=False)


class Channel(kombu_redis.Channel):
    """A Redis channel that parks undecodable entries instead of raising, and hands
    requeued messages back to the head of their queue (`QoS`)."""

    QoS = QoS

    def _park(self, payload: Any, queue: str | None, reason: str) -> None:
        from tasks.broker_state import BrokerState

        with self.conn_or_acquire() as client:
            BrokerState(client).park_unreadable(payload, queue=queue, reason=reason)
        log.error("unreadable entry on queue %s parked in farm:unreadable: %s", queue, reason)

    def _last_queue(self) -> str | None:
        # kombu rotates the queue it just popped from to the end of its cycle.
        items = self._queue_cycle.items
        return items[-1] if items else None

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return super()._brpop_read(**options)
        except json.JSONDecodeError as exc:
            self._park(exc.doc, self._last_queue(), f"not JSON: {exc}")
            return True

    def _get(self, queue: str) -> Any:
        try:
            message = super()._get(queue)
        except json.JSONDecodeError as exc:
            self._park(exc.doc, queue, f"not JSON: {exc}")
            raise Empty() from None
        problem = envelope_problem(message)
        if problem:
            self._park(message, queue, problem)
            raise Empty()
        return message


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the parking channel."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str | None) -> None:
        problem = envelope_problem(message)
        if problem is None:
            super()._deliver(message, queue)
        elif self.channels:
            # Valid JSON, but nothing kombu can hand to Celery.
            self.channels[0]._park(message, queue, problem)

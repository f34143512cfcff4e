"""Celery's worker consumer, but a message no task here can take is parked, not dropped.

Celery acknowledges and forgets a message whose task name nobody registered
("Received unregistered task of type ..."), one that is not a task message at
all, one whose arguments are not a task's (`InvalidTaskError`, a content type
not accepted) and one whose body cannot be decoded. Such a message is usually
someone's mistake or a newer farm's task, never garbage: it is kept in
`farm:unreadable` (`BrokerState.park_unreadable`: queue, task name, reason,
headers and body) before Celery's own handling acknowledges it. Entries that are
not even message envelopes are parked one level down, by `tasks.transport`.

Selected by `tasks.app.configure` (`worker_consumer`), so the GPU workers and
the recorder both use it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


def _text(body: Any) -> Any:
    """A message body as text where it is bytes (kombu hands JSON bodies over as str)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode(errors="replace")
    return body


def _task_name(message: Any) -> str | None:
    headers = message.headers if isinstance(message.headers, dict) else {}
    name = headers.get("task")
    return None if name is None else str(name)


class Consumer(CeleryConsumer):
    """The worker consumer, parking what Celery would drop, then letting Celery ack it."""

    def _park(self, message: Any, reason: str) -> None:
        from farm_contract.settings import load_settings
        from tasks.broker_state import BrokerState, redis_client

        # Direct routing everywhere in farm: a message's routing key is its queue.
        queue = (message.delivery_info or {}).get("routing_key")
        payload = {"headers": message.headers, "content_type": message.content_type,
                   "body": _text(message.body)}
        try:
            BrokerState(redis_client(load_settings().broker_url)).park_unreadable(
                payload, queue=queue, reason=reason, task=_task_name(message))
        except Exception:
            # Celery acks it anyway; a broker that refuses the park would lose the ack too.
            log.exception("could not park a message of queue %s (%s)", queue, reason)
            return
        log.error("message on queue %s parked in farm:unreadable: %s", queue, reason)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """A task name no task here registered."""
        self._park(message, f"unregistered task {_task_name(message)!r}")
        super().on_unknown_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """A message with no task name: not a task message."""
        self._park(message, "not a task message (no task name)")
        super().on_unknown_message(body, message)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """A known task whose message Celery refuses (no args, content type not accepted)."""
        self._park(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """A body that cannot be decoded."""
        self._park(message, f"undecodable message body: {exc}")
        super().on_decode_error(message, exc)

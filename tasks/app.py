"""The Celery application: configuration and routing only, no task logic.

Tasks are sent by name, so importing this module pulls in neither the GPU side
(tasks.measure) nor the database side (tasks.record). The settings follow the
facts in FIELD_NOTES.md: long exclusive runs on Redis need late acks, prefetch 1,
a visibility timeout above the longest run, and JSON only.
"""

from __future__ import annotations

from celery import Celery

from farm_contract.exitcodes import ExitCode
from farm_contract.routing import RECORD_QUEUE
from farm_contract.settings import Settings, load_settings

# Imported, not only named, so the import contracts see the transport and the
# consumer Celery loads by their "module:Class" names.
from tasks import consumer, transport

MEASURE_TASK = "farm.measure"
RECORD_TASK = "farm.record"
EVENT_TASK = "farm.run_event"


def configure(app: Celery, settings: Settings) -> None:
    """Set `app`'s broker, serialization, acknowledgement and routing configuration."""
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # Restore visible messages via our heartbeat reaper, not a 100 s scan.
        "unacked_restore_interval": 60,
    }
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport,
        # No result backend: results travel as messages to the recorder.
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_soft_shutdown_timeout=30.0,
        worker_enable_soft_shutdown_on_idle=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue=RECORD_QUEUE,
        task_routes={
            RECORD_TASK: {"queue": RECORD_QUEUE},
            EVENT_TASK: {"queue": RECORD_QUEUE},
        },
        task_create_missing_queues=True,
        enable_utc=True,
        # A message no registered task takes is parked in farm:unreadable, not dropped.
        worker_consumer=f"{consumer.__name__}:{consumer.Consumer.__name__}",
    )
    # Celery 5.5+: retry a run whose pool child died, bounded by max_retries.
    app.conf["task_retry_on_worker_lost"] = True
    # rediss://: kombu's Redis transport opens TLS connections with these (the
    # server's certificate verified against FARM_BROKER_TLS_CA_FILE).
    app.conf.broker_use_ssl = settings.broker_ssl_options() if settings.broker_tls else None
    scheme = settings.broker_url.split("://", 1)[0]
    if scheme in ("redis", "rediss"):
        # kombu's Redis transport, but an entry it cannot read is parked, not fatal.
        app.conf.broker_transport = PARKING_TRANSPORT
    elif scheme == "redis+socket":
        # kombu takes the transport from a "name+" prefix, overriding broker_transport.
        register_parking_transport()
        app.conf.broker_url = PARKING_ALIAS + settings.broker_url[len("redis"):]


PARKING_TRANSPORT = f"{transport.__name__}:{transport.Transport.__name__}"
PARKING_ALIAS = "farm-redis"


def register_parking_transport() -> None:
    """Make "farm-redis+socket://" name the parking transport (`tasks.transport`)."""
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES.setdefault(PARKING_ALIAS, PARKING_TRANSPORT)


def run_worker(app: Celery, *, hostname: str, queues: list[str], pool: str,
               concurrency: int = 1, loglevel: str = "INFO") -> int:
    """Consume `queues` until Celery stops; return the worker's exit status.

    `app.worker_main` drops the status (Celery's `start()` swallows it), so a
    worker stopped by an unrecoverable error would exit 0 and a unit with
    `Restart=on-failure` would never restart it. This builds the worker the way
    `celery worker` does and hands its `exitcode` back instead.
    """
    worker = app.Worker(
        hostname=hostname, queues=queues, pool_cls=pool, concurrency=concurrency,
        loglevel=loglevel, send_events=True, without_gossip=True, without_mingle=True)
    worker.start()
    return int(worker.exitcode or ExitCode.OK)


def create_app(settings: Settings | None = None) -> Celery:
    """A configured Celery app "farm" (settings from the environment unless given)."""
    app = Celery("farm", set_as_current=True)
    configure(app, settings or load_settings())
    return app


app = create_app()

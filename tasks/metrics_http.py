"""Serving /metrics for a farm process (`farmctl worker`, `farmctl recorder`).

One registry per process: the process's own collector (workers/exporter.py or
farm/exporter.py) and prometheus_client's process collector (CPU seconds,
memory, open files). Served from prometheus_client's HTTP server, in daemon
threads: a scrape never blocks a run, and the process exits without stopping it.
Off unless FARM_METRICS_PORT is set; a port already taken is logged and the
process goes on without metrics — measuring matters more than watching.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.registry import Collector

from farm_contract.settings import Settings

log = logging.getLogger(__name__)


def registry_with(collector: Collector) -> CollectorRegistry:
    """A registry holding `collector` and this process's own metrics (process_*)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(collector)
    return registry


def serve_metrics(settings: Settings, collector: Collector, what: str) -> Any | None:
    """Serve `collector` on http://FARM_METRICS_ADDRESS:FARM_METRICS_PORT/metrics.

    Returns the HTTP server (its `shutdown()` stops it), or None when metrics are
    off or the port cannot be bound.
    """
    if settings.metrics_port is None:
        return None
    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_address,
                                            registry=registry_with(collector))
    except OSError as exc:
        log.warning("%s metrics not served: cannot listen on %s:%d (%s)", what,
                    settings.metrics_address, settings.metrics_port, exc)
        return None
    log.info("%s metrics on http://%s:%d/metrics", what, settings.metrics_address,
             settings.metrics_port)
    return server

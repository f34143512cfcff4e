"""One GPU, one run: an import refuses two results measured at once on one GPU
(farm/report/importer.py). A GPU measures one run at a time, so one of two such
results carries another run's measurement, copied under a second run id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from farm.report.dataset import DatasetError
from farm.store import Store
from farm_contract.records import RunResult

STORED = "in this store"


@dataclass(frozen=True)
class GpuSpan:
    """A result's hold on one GPU, start to finish: a GPU measures one run at a time."""
    gpu: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    source: str                 # where the result is: "<runs file> row <n>", or STORED

    @property
    def imported(self) -> bool:
        """Whether the export brings it (else the store holds it)."""
        return self.source != STORED

    def when(self) -> str:
        """Its time, as a refusal names it."""
        return f"from {self.started_at.isoformat()} to {self.finished_at.isoformat()}"


def gpu_spans(result: RunResult, source: str) -> list[GpuSpan]:
    """A result's spans, one per GPU it held (none for a failure before it held one)."""
    start, end = _utc(result.started_at), _utc(result.finished_at)
    if end <= start:            # a failure before any GPU was held
        return []
    return [GpuSpan(gpu.uuid, result.run_id, start, end, source) for gpu in result.gpus]


def _utc(value: datetime) -> datetime:
    """Aware UTC (a naive time is UTC, as the store takes it)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def refuse_overlaps(store: Store, spans: list[GpuSpan], run_ids: set[str]) -> None:
    """Refuse results measured at once on one GPU, within the export or against the
    store's: one of them is another run's measurement copied. The store's result of
    a run the export brings a result for (`run_ids`) is the same run, not an overlap."""
    if not spans:
        return
    stored = [GpuSpan(gpu, run_id, _utc(start), _utc(end), STORED)
              for run_id, gpus, start, end in store.result_spans(
                  min(s.started_at for s in spans), max(s.finished_at for s in spans))
              if run_id not in run_ids for gpu in gpus]
    by_gpu: dict[str, list[GpuSpan]] = {}
    for span in spans + stored:
        by_gpu.setdefault(span.gpu, []).append(span)
    for gpu, on_gpu in by_gpu.items():
        pair = _overlap(on_gpu)
        if pair is not None:
            earlier, later = pair
            imported, other = (later, earlier) if later.imported else (earlier, later)
            raise DatasetError(
                f"{imported.source} (run {imported.run_id}): measured on GPU {gpu} "
                f"{imported.when()}, while it measured run {other.run_id} ({other.source}, "
                f"{other.when()}): a GPU measures one run at a time, so one of them "
                "carries a measurement not its own")


def _overlap(spans: list[GpuSpan]) -> tuple[GpuSpan, GpuSpan] | None:
    """Two spans that overlap, one of them imported (the store's own are not this
    import's to judge); None if there are none.

    In order of start, a span overlaps an earlier one exactly when it starts before
    the latest end among them; an imported span is compared with every earlier
    span, a stored one only with the imported ones.
    """
    last: GpuSpan | None = None               # the earlier span that ends last
    last_imported: GpuSpan | None = None      # the same among the imported ones
    for span in sorted(spans, key=lambda s: (s.started_at, s.finished_at)):
        earlier = last if span.imported else last_imported
        if earlier is not None and span.started_at < earlier.finished_at:
            return earlier, span
        if last is None or span.finished_at > last.finished_at:
            last = span
        if span.imported and (last_imported is None
                              or span.finished_at > last_imported.finished_at):
            last_imported = span
    return None

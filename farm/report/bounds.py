"""The validity bounds and measurement settings a sweep's runs used, for the report.

Each run carries its sweep's `[measurement]` table in its RunSpec (the runs'
`spec_json`), and each verdict records the bound every check applied
(`ValidityCheck.threshold`). The report states both: the settings next to
the defaults they override (a quick start lowers `min_steady_s` to 0.2 s
where the default is 30 s), and the bounds the verdicts recorded, per GPU.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from farm_contract.runspec import MeasurementSpec

# setting → (what it sets, unit); validity bounds first, in the page's order.
SETTINGS: dict[str, tuple[str, str]] = {
    "min_steady_s": ("validity: shortest steady-state window of a load point", "s"),
    "agreement_tolerance": ("validity: largest counter vs timeline energy difference", "%"),
    "agreement_min_window_s": ("validity: shortest window the agreement check compares", "s"),
    "cooldown_timeout_s": ("preflight: longest wait for the GPUs to cool to idle", "s"),
    "cooldown_band_c": ("preflight: 'cool' means within this of the idle temperature", "°C"),
    "sample_period_s": ("power timeline sampling period", "s"),
    "idle_baseline_s": ("length of each idle baseline window", "s"),
    "region": ("grid region of the emissions (ISO 3166 alpha-3)", ""),
    "codecarbon": ("CPU and RAM energy through CodeCarbon", ""),
    "quiet": ("preflight: the quiet-GPU gate before the idle baselines", ""),
    "self_size": ("self-sizing: repeat a load point until its steady window is long enough",
                  ""),
    "steady_margin_pct": ("self-sizing: aim at min_steady_s plus this margin", "pct"),
    "max_passes": ("self-sizing: most passes over a load point's prompts", ""),
}


@dataclass(frozen=True)
class Setting:
    """One measurement setting: the value(s) the sweep's runs used and the default."""

    name: str
    meaning: str
    values: tuple[tuple[str, int], ...]   # (value as text, number of runs), most runs first
    default: str

    @property
    def value(self) -> str:
        """The value used, "0.2 s"; several as "0.2 s (12 runs), 30 s (4 runs)"."""
        if len(self.values) == 1:
            return self.values[0][0]
        return ", ".join(f"{v} ({n} run{'' if n == 1 else 's'})" for v, n in self.values)

    @property
    def overridden(self) -> bool:
        """Whether some run used another value than the default."""
        return any(v != self.default for v, _ in self.values)


def _text(name: str, value: Any) -> str:
    unit = SETTINGS.get(name, ("", ""))[1]
    if hasattr(value, "model_dump"):          # a default that is a table (quiet)
        value = value.model_dump()
    if isinstance(value, dict):
        # Sorted: a stored RunSpec's keys are canonical (sorted), a default's are in
        # field order; the same table must read the same (not "overridden").
        return ", ".join(f"{key}={_text('', v)}" for key, v in sorted(value.items()))
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if unit == "%":                           # a fraction, shown as a percentage
        return f"{value * 100:g}%"
    if unit == "pct":                         # already a percentage
        return f"{value:g}%"
    if isinstance(value, int | float):
        return f"{value:g} {unit}".strip()
    return str(value)


def measurement_settings(spec_jsons: Iterable[str]) -> list[Setting]:
    """Every measurement setting of the runs (RunSpec JSON), with its default."""
    used: dict[str, Counter[str]] = {}
    for spec_json in spec_jsons:
        measurement = json.loads(spec_json).get("measurement") or {}
        for name, value in measurement.items():
            used.setdefault(name, Counter())[_text(name, value)] += 1
    fields = MeasurementSpec.model_fields
    order = [*SETTINGS, *sorted(set(used) - set(SETTINGS))]
    out = []
    for name in order:
        if name not in used:
            continue
        default = _text(name, fields[name].default) if name in fields else "—"
        values = tuple(sorted(used[name].items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(Setting(name, SETTINGS.get(name, (name, ""))[0], values, default))
    return out


def overrides_note(settings: Iterable[Setting]) -> str:
    """One sentence: which defaults the sweep overrides, e.g. "min_steady_s = 0.2 s
    (default 30 s)"; or that it overrides none."""
    changed = [s for s in settings if s.overridden]
    if not changed:
        return "This sweep uses the default measurement settings and validity bounds."
    return (f"This sweep overrides {len(changed)} default(s): "
            + "; ".join(f"{s.name} = {s.value} (default {s.default})" for s in changed)
            + ". Its verdicts were reached with these values.")


def recorded_bounds(results: Mapping[str, Mapping[str, Any] | None],
                    gpu_of: Mapping[str, str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(check, bound, GPUs) as the stored verdicts of `results` (run id → result)
    recorded them: a bound can differ per GPU (the power range is idle…limit)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for run_id, result in results.items():
        validity = (result or {}).get("validity")
        if validity is None:
            continue
        for check in validity.checks:
            seen.setdefault((check.name, check.threshold), set()).add(gpu_of[run_id])
    return [(name, bound, tuple(sorted(gpus))) for (name, bound), gpus in sorted(seen.items())]


__all__ = ["SETTINGS", "Setting", "measurement_settings", "overrides_note", "recorded_bounds"]

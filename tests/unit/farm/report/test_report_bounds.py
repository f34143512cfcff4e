"""The report's measurement settings table (farm/report/bounds.py): every setting a
sweep can set is explained, in its unit, next to its default."""

from __future__ import annotations

import json

from farm.report.bounds import SETTINGS, measurement_settings, overrides_note
from farm_contract.runspec import MeasurementSpec


def spec_json(**measurement) -> str:
    return json.dumps({"measurement": MeasurementSpec(**measurement).model_dump()})


def test_every_measurement_setting_says_what_it_sets():
    # A setting added to MeasurementSpec without a line here showed its own name
    # as its meaning in the report.
    assert set(MeasurementSpec.model_fields) == set(SETTINGS)
    settings = {s.name: s for s in measurement_settings([spec_json()])}
    assert set(settings) == set(SETTINGS)
    assert all(s.meaning != s.name and not s.overridden for s in settings.values())


def test_values_in_their_units_and_tables_as_key_value_pairs():
    quiet = {"timeout_s": 60.0}
    settings = {s.name: s for s in measurement_settings([
        spec_json(steady_margin_pct=15, agreement_tolerance=0.05, quiet=quiet,
                  self_size=False)] * 2 + [spec_json()])}
    assert settings["steady_margin_pct"].value == "15% (2 runs), 10% (1 run)"
    assert settings["agreement_tolerance"].default == "3%"
    assert settings["self_size"].values[0] == ("off", 2)
    assert settings["quiet"].default == ("enabled=on, max_utilization_pct=1, "
                                         "power_band_pct=2, power_band_w=1, timeout_s=180, "
                                         "window_s=10")
    assert "timeout_s=60" in settings["quiet"].values[0][0]
    note = overrides_note(settings.values())
    assert note.startswith("This sweep overrides 4 default(s): ")
    assert "{" not in note


def test_a_stored_specs_key_order_is_no_override():
    """A RunSpec is stored canonical (sorted keys); the default table is in field order.
    The same values in another order are the default (issue 22 item 7: every report
    said the sweep overrides `quiet`)."""
    stored = json.dumps({"measurement": MeasurementSpec().model_dump()}, sort_keys=True)
    settings = {s.name: s for s in measurement_settings([stored])}
    assert not settings["quiet"].overridden
    assert overrides_note(settings.values()).startswith("This sweep uses the default")

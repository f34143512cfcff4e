"""docs/report.md "How to add a figure", executed: the page's own example module,
taken from the docs as written, is dropped into `farm/report/figures/` (its
package path, here extended by a temporary folder) and the report of a stored
sweep then has its section and its figures, labelled like every other."""

from __future__ import annotations

import re
import sys

import pytest

import farm.report.figures as registry
from farm.report.report import write_report
from farm.store.repository import Store
from tests.paths import ROOT


def documented_example() -> str:
    """The first python block under "How to add a figure" in docs/report.md."""
    text = (ROOT / "docs" / "report.md").read_text(encoding="utf-8")
    section = text.split("## How to add a figure", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def added_figure(tmp_path, monkeypatch):
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "throughput_vs_load.py").write_text(documented_example())
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(folder)])
    # The shipped kinds all registered first: a copy of a half-filled registry, put
    # back afterwards with every module already imported, would stay half-filled
    # for the tests that come later in this process.
    registry.kinds()
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    monkeypatch.setattr(registry, "_loaded", False)
    yield
    sys.modules.pop("farm.report.figures.throughput_vs_load", None)


def test_the_documented_figure_is_one_file_and_reaches_the_page(added_figure, report_store,
                                                               tmp_path):
    assert "throughput_load" in [k.name for k in registry.kinds()]
    url, name = report_store
    with Store.open(url) as store:
        write_report(store, name, tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert 'id="throughput_load"' in page and "Throughput vs load" in page
    drawn = sorted((tmp_path / "out" / "figures").glob("throughput-vs-*.png"))
    assert drawn, "the new kind drew no figure"
    # The report's labelling applies to it: the SIMULATED title in the PNG's Title chunk.
    assert b"SIMULATED" in drawn[0].read_bytes()

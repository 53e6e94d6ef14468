"""The app's tabs, one file each, and their registry (`VIEWS`, in `Tab` order).

A new tab: its file here (a `View` subclass), its id in `wstui.app.tabs.Tab` (its place there
is its digit key), its class in `VIEWS`; then `python -m wstui.app.keys --readme` refreshes the
README's key table.
"""

from __future__ import annotations

from wstui.app.tabs import Tab
from wstui.app.views.base import TensorView, View
from wstui.app.views.depth import DepthView
from wstui.app.views.diff import DiffView
from wstui.app.views.findings import FindingsView
from wstui.app.views.histogram import HistogramView
from wstui.app.views.overview import OverviewView
from wstui.app.views.quantization import QuantizationView
from wstui.app.views.sensitivity import SensitivityView
from wstui.app.views.series import SeriesView
from wstui.app.views.spectrum import SpectrumView
from wstui.app.views.table import TableView

_BY_TAB: dict[Tab, type[View]] = {v.tab: v for v in (
    OverviewView, SpectrumView, HistogramView, QuantizationView, TableView, DepthView,
    FindingsView, DiffView, SensitivityView, SeriesView,
)}
#: every view in tab order (a Tab without its view fails here, at import)
VIEWS: tuple[type[View], ...] = tuple(_BY_TAB[tab] for tab in Tab)

__all__ = ["VIEWS", "Tab", "TensorView", "View"]

"""What a report view is: one way of turning results records into a table and a plot.

A view subclasses `ReportView`, sets NAME (its ``report --NAME`` flag) and registers itself in
registry.REPORT_VIEW_REGISTRY; `python -m clip_convpass.report` offers every registered view. The
default view, Table 2, is reporting/table2.py.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

from clip_convpass.reporting.format import base_name


class ReportView:
    NAME = ""
    HELP = ""
    EMPTY = "nothing to show"  # said (exit 1) when no record fits the view

    @classmethod
    def build(cls, records: List[dict], metric: str, notes: List[str], methods: Optional[Sequence[str]] = None) -> Any:
        raise NotImplementedError

    @classmethod
    def render(cls, data: Any, fmt: str, metric: str, notes: Sequence[str]) -> str:
        raise NotImplementedError

    @classmethod
    def plot(cls, data: Any, path: str, metric: str) -> None:
        raise NotImplementedError


def selected(name: str, methods: Optional[Sequence[str]]) -> bool:
    """Whether a table row (possibly "Row [what differs]") is one of the chosen row names (None: all)."""
    return methods is None or base_name(name) in methods or name in methods

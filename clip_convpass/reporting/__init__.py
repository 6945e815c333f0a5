"""Reports from results.json files: records (reading, averaging over seeds), format (labels, tables), one
module per view (table2 = the default; fewshot, robustness, ... registered in REPORT_VIEW_REGISTRY)."""
from clip_convpass.reporting.records import aggregate, collect
from clip_convpass.reporting.table2 import build_table, plot, render

__all__ = ["aggregate", "build_table", "collect", "plot", "render"]

"""Formatting shared by every report view: row and column labels, row order, cells, text / CSV tables."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from tabulate import tabulate

from clip_convpass.registry import DATASET_REGISTRY, method_rows, rows_by_name

# mean, std, number of seeds; (None, None, n): the method is not applicable there (n/a, never a number)
Cell = Optional[Tuple[Optional[float], Optional[float], int]]
NA = "n/a"

STAGE_LABELS = {"step0": "step 0"}


def domain_label(domain: str) -> str:
    """The dataset's column label ("-V2"); "ImageNet step 0" for an evaluation at a stage ("ImageNet@step0")."""
    name, _, stage = domain.partition("@")
    label = DATASET_REGISTRY.get(name).column_label() if name in DATASET_REGISTRY else name
    return f"{label} {STAGE_LABELS.get(stage, stage)}" if stage else label


def row_label(name: str) -> str:
    row = rows_by_name().get(base_name(name))
    return row.display + name[len(base_name(name)):] if row else name


def base_name(row: str) -> str:
    """The registered row name of a table row ("CoOp [shots=8]" -> "CoOp")."""
    return row.split(" [", 1)[0]


def order_rows(names: Iterable[str], order: Optional[Sequence[str]] = None) -> List[str]:
    names = list(names)
    rank = {n: i for i, n in enumerate(order or [r.name for r in method_rows()])}
    return sorted(names, key=lambda n: (rank.get(base_name(n), len(rank)), base_name(n), n))


def fmt_cell(cell: Cell) -> str:
    if cell is None:
        return "missing"
    m, s, n = cell
    if m is None:
        return NA
    if s is None:  # a mean of means (an Average row): no spread over seeds to show
        return f"{m:.2f} (n={n})"
    return f"{m:.2f} ± {s:.2f} (n={n})"


def render_rows(headers: Sequence[str], body: List[List[str]], fmt: str, notes: Sequence[str] = (),
                title: str = "") -> str:
    """A table of strings as CSV (notes as comment lines) or text (terminal / markdown; notes as footnotes)."""
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([list(headers)] + body)
        return buf.getvalue() + "".join(f"# {n}\n" for n in notes)
    text = tabulate(body, headers=headers, tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True)
    text = (f"{title}\n\n" if title else "") + text
    return text + "".join(f"\n\nNote: {n}" if i == 0 else f"\nNote: {n}" for i, n in enumerate(notes))


def write_or_print(text: str, output: str) -> None:
    if output:
        Path(output).write_text(text + "\n")
    else:
        print(text)

"""Command-line helpers every command shares."""
from __future__ import annotations

import argparse
from typing import Callable, Dict, List, Sequence


def _is_number(token: str, kind: type) -> bool:
    try:
        kind(token)
        return True
    except ValueError:
        return False


def number_list(kind: type) -> Callable[[str], list]:
    """argparse type for "1,2,3" (join_numeric_lists turns `--seeds 1 2 3` into that)."""
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} values, got {text!r}") from None

    return parse


def join_numeric_lists(argv: Sequence[str], options: Dict[str, type]) -> List[str]:
    """`--seeds 1 2 MODEL.PRETRAINED W` means seeds [1, 2] and a KEY VALUE pair, as train.py's opts do: the
    numbers after a numeric list option become one `--seeds=1,2` token (argparse would otherwise give the
    option every word up to the next flag), and the words after them stay where the overrides are read."""
    out: List[str] = []
    argv = list(argv)
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        kind = options.get(token)
        if kind is None:
            out.append(token)
            continue
        numbers = []
        while i < len(argv) and _is_number(argv[i], kind):
            numbers.append(argv[i])
            i += 1
        out.append(f"{token}={','.join(numbers)}" if numbers else token)  # none: argparse says a value is missing
    return out

"""Markdown building blocks of the report: tables, the provenance line of a result file, links, file reads."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import read_json

__all__ = ["fmt", "load", "machine_line", "md_table", "not_run", "read_csv", "rel"]


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats to ``digits`` places, missing values and NaN as a dash, sequences in brackets."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
             cell: Callable[[Any], str] = fmt) -> str:
    """A markdown table of ``rows`` with ``(key, header)`` columns."""
    if not rows:
        return "_(no rows)_\n"
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def machine_line(payload: dict[str, Any]) -> str:
    """The command, machine, date and commit a result file records, as one italic line."""
    m = payload.get("machine", {})
    shared = f" — **{m['note']}**" if m.get("note") else ""
    threads = f", {payload['threads']} torch thread(s)" if "threads" in payload else ""
    return (f"_Command `{payload.get('command', '?')}`; {m.get('nproc', '?')} CPU(s) `{m.get('cpu_model', '?')}`, "
            f"torch {m.get('torch', '?')}{threads}, {m.get('date_utc', '?')}, commit {m.get('git_commit') or '?'}"
            f"{' (quick mode)' if payload.get('quick') else ''}{shared}._\n")


def not_run(command: str) -> str:
    return f"**Not run.** Command: `{command}`.\n"


def load(folder: Path, name: str) -> dict[str, Any] | None:
    """The JSON result ``folder/name``, or None when that suite has not written it."""
    path = folder / name
    return read_json(path) if path.is_file() else None


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def rel(path: Path, md: Path) -> str:
    """``path`` relative to the folder of the markdown file ``md`` (for links)."""
    return os.path.relpath(path, md.parent).replace(os.sep, "/")

"""JSON lines, read and written one way: every reader names the file and line of a bad row, and the
writer never leaves a half-written file under the final name.

Lines are the file's own ``\\n`` lines (not ``str.splitlines``, which would also split a string holding a
raw U+2028, as ``ensure_ascii=False`` writes it). Blank lines are skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from r1reward.data.records import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """(line number, object) for each non-blank line. A line that is not a JSON object (e.g. one cut
    short by a kill) gives (line number, DataError with reason ``invalid-json``) instead, so that the
    caller decides: the dataset reader counts one bad row, ``read_jsonl`` stops, metrics skip it."""
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, DataError(f"invalid JSON: {exc}", reason="invalid-json")
                continue
            if not isinstance(row, dict):
                yield line_no, DataError(f"not a JSON object: {type(row).__name__}", reason="invalid-json")
                continue
            yield line_no, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file. A missing file or a bad line is a one-line DataError (a
    UserError) naming it: ``file.jsonl:3: invalid JSON: ...``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    rows = []
    for line_no, row in iter_jsonl(path):
        if isinstance(row, DataError):
            raise DataError(f"{path}:{line_no}: {row}", reason=row.reason)
        rows.append(row)
    return rows


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` one per line (UTF-8, non-ASCII kept as is) to a temporary file beside ``path``,
    then rename it over ``path``: a reader or an interrupted run never sees a half-written file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return path


def append_jsonl(row: dict[str, Any], path: str | Path) -> None:
    """Add one row at the end of ``path`` (a log such as metrics.jsonl; a kill may cut the last line,
    which ``iter_jsonl`` then reports as one bad line)."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")

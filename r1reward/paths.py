"""Output folders every command writes into: created up front, with a one-line error when they cannot be."""

from __future__ import annotations

import os
from pathlib import Path

from r1reward.errors import UserError


def prepare_output_dir(path: str | Path) -> Path:
    """Create `path` with its parents (like mkdir -p) and check it is writable; one-line error otherwise."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a directory: {out}")
    blocking = next((p for p in out.absolute().parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"cannot create output directory {out}: {blocking} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"output directory is not writable: {out}")
    return out

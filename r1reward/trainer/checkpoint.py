"""Checkpoints: `step_K/` holds `deepspeed/` (every rank's state, to resume), `hf/` (a Hugging Face
model that transformers and vLLM load) and `trainer_state.json`.

A checkpoint cannot be half-written: it is written into `.step_K.partial/` and renamed to `step_K/`
only once every rank, the processor and the trainer state are on disk. A save that fails (a full disk,
a dead rank) leaves the previous checkpoint as the latest; `latest_checkpoint` sees complete
`step_K/` directories only. `keep` > 0 deletes all but the newest `keep` checkpoints after a save.

Checkpoints must be trusted: resuming restores `deepspeed/` with DeepSpeed's `load_checkpoint`, which
unpickles every rank's state (`torch.load` with `weights_only=False`), so a crafted file there runs
code in the learner. Resume only from checkpoints a run of yours wrote; `load_checkpoint` below is the
package's one way to them (tests/test_faults_unit.py checks that nothing else unpickles). The `hf/`
model is safetensors, which holds no code, and is the part to share.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
PARTIAL_SUFFIX = ".partial"
_COMPLETE = re.compile(r"^step_(\d+)$")


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """`step_K/` directories holding a trainer state, oldest first (partial ones are never listed)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _COMPLETE.match(p.name)) and p.is_dir() and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yields a temporary sibling of `final` to write into; renames it to `final` when the block ends
    without an error (an existing `final` is replaced), removes it when the block raises."""
    final = Path(final)
    staging = final.with_name(f".{final.name}{PARTIAL_SUFFIX}")
    if staging.exists():  # left by a save that died mid-way
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    if final.exists():  # a directory cannot be renamed over a non-empty one
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_checkpoints(output_dir: Path, keep: int) -> list[Path]:
    """Deletes all but the newest `keep` complete checkpoints (keep <= 0 keeps all); returns the deleted."""
    if keep <= 0:
        return []
    old = complete_checkpoints(output_dir)[:-keep]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def save_checkpoint(
    learners: Any, processor: Any, output_dir: Path, step: int, state: dict[str, Any], keep: int = 0
) -> Path:
    """`learners`: a LearnerGroup (every rank saves its DeepSpeed state; rank 0 also the hf/ model); its
    waits are bounded by the run's timeouts."""
    directory = Path(output_dir) / "checkpoints" / f"step_{step}"
    with staged_directory(directory) as staging:
        hf_dir = staging / "hf"
        learners.save(str(staging / "deepspeed"), f"step_{step}", str(hf_dir))
        processor.save_pretrained(hf_dir)
        (staging / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=1))
    prune_checkpoints(output_dir, keep)
    return directory


def load_checkpoint(learners: Any, checkpoint: Path) -> dict[str, Any]:
    """Restores every rank's DeepSpeed state (`learners`: a LearnerGroup); returns the saved trainer state."""
    learners.load(str(checkpoint / "deepspeed"), checkpoint.name)
    return json.loads((checkpoint / STATE_FILE).read_text())

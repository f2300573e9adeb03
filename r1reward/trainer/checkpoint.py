"""Checkpoints: `step_K/` holds `deepspeed/` (every rank's state, to resume), `hf/` (a Hugging Face
model that transformers and vLLM load) and `trainer_state.json`.

A checkpoint cannot be half-written: it is written into `.step_K.partial/` and renamed to `step_K/`
only once every rank, the processor and the trainer state are on disk. On a cluster the ranks write
from their own nodes: each reports the files it wrote, and the driver renames only once it sees every
one of them at its size (a rank writing to a disk of its node's own is refused in one line). A save
that fails (a full disk, a dead rank) leaves the previous checkpoint as the latest; `latest_checkpoint`
sees complete `step_K/` directories only. `keep` > 0 deletes all but the newest `keep` checkpoints after a save.

Checkpoints must be trusted: resuming restores `deepspeed/` with DeepSpeed's `load_checkpoint`, which
unpickles every rank's state (`torch.load` with `weights_only=False`), so a crafted file there runs
code in the learner. Resume only from checkpoints a run of yours wrote; `load_checkpoint` below is the
package's one way to them (tests/test_faults_unit.py checks that nothing else unpickles). The `hf/`
model is safetensors, which holds no code, and is the part to share.

One output directory holds one run. Each trainer state records its run's id; `claim_output_dir`
decides at start-up, before any actor starts, whether this run may use the directory (a fresh run
refuses one that holds another run, unless told to overwrite it), and a run prunes and restarts from
its own checkpoints only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from r1reward.errors import UserError

STATE_FILE = "trainer_state.json"
PARTIAL_SUFFIX = ".partial"
_COMPLETE = re.compile(r"^step_(\d+)$")
# What a run writes into its output directory, and an overwrite deletes (config.json is rewritten anyway;
# logs/ holds Ray's logs, kept).
RUN_RECORD = ("checkpoints", "metrics.jsonl", "tensorboard", "data_report.json")


def new_run_id() -> str:
    """Sortable by start time, unique across runs started in the same second."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def checkpoint_run_id(checkpoint: Path) -> str | None:
    """The run that wrote `checkpoint` (None for a checkpoint from before run ids)."""
    try:
        return json.loads((Path(checkpoint) / STATE_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def complete_checkpoints(output_dir: Path, run_id: str | None = None) -> list[Path]:
    """`step_K/` directories holding a trainer state, oldest first (partial ones are never listed); with
    `run_id`, only that run's."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _COMPLETE.match(p.name)) and p.is_dir() and (p / STATE_FILE).is_file()
    ]
    done = [p for _, p in sorted(found)]
    return done if run_id is None else [p for p in done if checkpoint_run_id(p) == run_id]


def latest_checkpoint(output_dir: Path, run_id: str | None = None) -> Path | None:
    done = complete_checkpoints(output_dir, run_id)
    return done[-1] if done else None


def claim_output_dir(
    output_dir: Path, *, resume: bool, overwrite: bool, section: str, run_id: str | None = None
) -> tuple[str, Path | None]:
    """Whether this run may use `output_dir`, decided before anything starts; returns (this run's id,
    the checkpoint to resume from or None). `section` is the config section named in the error
    ("trainer" or "sft").

    - resume: the latest checkpoint of `run_id` (a restart of this run), else the latest of the
      directory, whose run this one continues;
    - a fresh run: a directory holding another run's checkpoints or metrics is refused with one line,
      unless `overwrite`, which deletes that run's checkpoints, metrics and TensorBoard events first.
    """
    out = Path(output_dir)
    if resume:
        checkpoint = latest_checkpoint(out, run_id)
        return run_id or (checkpoint and checkpoint_run_id(checkpoint)) or new_run_id(), checkpoint
    earlier = latest_checkpoint(out)
    metrics = out / "metrics.jsonl"
    if earlier is not None or (metrics.is_file() and metrics.stat().st_size > 0):
        if not overwrite:
            held = f"checkpoints up to {earlier.name}" if earlier is not None else "metrics.jsonl of a run"
            raise UserError(
                f"{out} holds another run ({held}): set {section}.resume=true to continue it, "
                f"{section}.overwrite=true to delete it first, or another {section}.output_dir"
            )
        for name in RUN_RECORD:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        print(f"{section}.overwrite=true: deleted the earlier run's checkpoints and metrics in {out}")
    return run_id or new_run_id(), None


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


def prune_checkpoints(
    output_dir: Path, keep: int, run_id: str | None = None, written: Path | None = None
) -> list[Path]:
    """Deletes all but the newest `keep` complete checkpoints of `run_id` (None: of any run), never
    `written` (the checkpoint just saved, which counts as one of the `keep`); keep <= 0 keeps all.
    Returns the deleted."""
    if keep <= 0:
        return []
    others = [p for p in complete_checkpoints(output_dir, run_id) if p != written]
    old = others[: max(0, len(others) - (keep - (written is not None)))]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


class IncompleteCheckpoint(UserError):
    pass


def check_rank_files(staging: Path, written: list[list[tuple[str, int]]], name: str) -> None:
    """Raises IncompleteCheckpoint unless every file each rank reports is here at its size."""
    for rank, files in enumerate(written):
        for path, size in files:
            if not os.path.isfile(path) or os.path.getsize(path) != size:
                found = f"{os.path.getsize(path)} bytes" if os.path.isfile(path) else "missing"
                raise IncompleteCheckpoint(
                    f"checkpoint {name} is incomplete: learner rank {rank} wrote "
                    f"{os.path.relpath(path, staging)} ({size} bytes), {found} on the driver's node; "
                    f"trainer.output_dir must be on a file system every node shares"
                )


def save_checkpoint(
    learners: Any,
    processor: Any,
    output_dir: Path,
    step: int,
    state: dict[str, Any],
    keep: int = 0,
    run_id: str | None = None,
) -> Path:
    """`learners`: a LearnerGroup (every rank saves its DeepSpeed state; rank 0 also the hf/ model); its
    waits are bounded by the run's timeouts. `keep` > 0 then prunes the run's older checkpoints."""
    directory = Path(output_dir) / "checkpoints" / f"step_{step}"
    with staged_directory(directory) as staging:
        hf_dir = staging / "hf"
        written = learners.save(str(staging / "deepspeed"), f"step_{step}", str(hf_dir))
        check_rank_files(staging, written, directory.name)
        processor.save_pretrained(hf_dir)
        (staging / STATE_FILE).write_text(json.dumps({"step": step, "run_id": run_id, **state}, indent=1))
    prune_checkpoints(output_dir, keep, run_id, written=directory)
    return directory


def load_checkpoint(learners: Any, checkpoint: Path) -> dict[str, Any]:
    """Restores every rank's DeepSpeed state (`learners`: a LearnerGroup); returns the saved trainer state."""
    learners.load(str(checkpoint / "deepspeed"), checkpoint.name)
    return json.loads((checkpoint / STATE_FILE).read_text())

"""The stages of `r1reward pipeline`: declared inputs and outputs, a record each, and reruns that skip
what is done and resume what was interrupted.

A stage reads inputs (files, folders, a hub model id, or another stage's output) and config values (its
settings), and writes its outputs under the pipeline's folder. Its fingerprint digests both: a file or
folder by the names, sizes and modification times of its files, a hub id by its name, another stage's
output by the digest recorded when that stage finished. OUT/stages/<stage>.json records the stage:
`running` with the fingerprint when it starts; `done` with its outputs, their digest and its results
when it ends. On every run, stage by stage:

- done, with the same fingerprint and its outputs as recorded: skipped (its record stands in for it);
- running with the same fingerprint (a run that was killed or failed in it): run with resume=True,
  which SFT and RL turn into continuing from their last checkpoint;
- otherwise (never run, or an input or setting changed): run from the start. It writes new outputs,
  so every later stage that reads them gets a new fingerprint and runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORDS_DIR = "stages"
DONE, RESUME, RUN = "done", "resume", "run"


@dataclass(frozen=True)
class From:
    """An input that is an output of an earlier stage."""

    stage: str
    output: str


@dataclass
class StageRun:
    """What a stage's `run` gets: its inputs as paths, whether to resume, the records of earlier stages."""

    inputs: dict[str, str]
    resume: bool
    records: dict[str, dict[str, Any]]


@dataclass
class Stage:
    id: str  # "seed-0/sft": recorded in OUT/stages/seed-0/sft.json
    title: str
    # Labelled by the config key they stand for (e.g. "model.path"): paths, hub ids, or From.
    inputs: dict[str, str | From]
    # As known before the stage runs (the dry run shows these); `run` returns the exact ones.
    outputs: dict[str, str]
    settings: dict[str, Any]  # the config values the stage's result depends on
    run: Callable[[StageRun], dict[str, Any]]  # -> {"outputs": {...}, "results": {...}}, both optional
    notes: Callable[[dict[str, str]], list[str]] = lambda inputs: []  # dry-run lines, from the inputs
    check: Callable[[], None] | None = None  # before anything runs: refuse bad inputs in one line


def path_digest(value: str) -> str:
    """A file or folder by its files' names, sizes and modification times; anything else (a hub model
    id) by its name."""
    path = Path(value)
    if path.is_file():
        stat = path.stat()
        return f"file:{stat.st_size}:{stat.st_mtime_ns}"
    if not path.is_dir():
        return f"name:{value}"
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(root, name)
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "dir:" + digest.hexdigest()


def outputs_digest(outputs: dict[str, str]) -> str:
    return hashlib.sha256(
        json.dumps({k: path_digest(v) for k, v in outputs.items()}, sort_keys=True).encode()
    ).hexdigest()


def fingerprint(stage: Stage, records: dict[str, dict[str, Any]]) -> str | None:
    """The digest of the stage's settings and inputs; None while an input stage has no record of its
    outputs (in a dry run, a stage after one that would run)."""
    inputs = {}
    for label, value in stage.inputs.items():
        if isinstance(value, From):
            if value.stage not in records:
                return None
            inputs[label] = f"{value.stage}:{value.output}:{records[value.stage]['output_digest']}"
        else:
            inputs[label] = path_digest(value)
    text = json.dumps({"settings": stage.settings, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def record_path(out: Path, stage_id: str) -> Path:
    return Path(out) / RECORDS_DIR / f"{stage_id}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or cut short: the stage is not done
        return None
    return record if isinstance(record, dict) else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomically (a temporary file, then a rename): a kill never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(partial, path)


def state_of(record: dict[str, Any] | None, fp: str | None) -> str:
    """DONE, RESUME or RUN: what a run does with a stage of this fingerprint and this record."""
    if record is None or fp is None or record.get("fingerprint") != fp:
        return RUN
    if record.get("status") == "running":
        return RESUME
    if record.get("status") == "done" and outputs_digest(record.get("outputs", {})) == record.get("output_digest"):
        return DONE
    return RUN  # done, but its outputs were changed or removed since


def resolve(stage: Stage, records: dict[str, dict[str, Any]], declared: dict[str, Stage]) -> dict[str, str]:
    """The stage's inputs as paths: another stage's output as recorded, else as that stage declares it."""
    out = {}
    for label, value in stage.inputs.items():
        if isinstance(value, From):
            source = records[value.stage]["outputs"] if value.stage in records else declared[value.stage].outputs
            out[label] = str(source[value.output])
        else:
            out[label] = str(value)
    return out


def plan(stages: Sequence[Stage], out: Path) -> list[tuple[Stage, str, dict[str, str]]]:
    """Per stage, what a run would do now (DONE, RESUME or RUN) and its inputs as paths; reads records
    and file metadata only."""
    declared = {stage.id: stage for stage in stages}
    records: dict[str, dict[str, Any]] = {}
    rows = []
    for stage in stages:
        record = read_record(record_path(out, stage.id))
        state = state_of(record, fingerprint(stage, records))
        if state == DONE:
            records[stage.id] = record  # type: ignore[assignment]
        rows.append((stage, state, resolve(stage, records, declared)))
    return rows


def run_stages(
    stages: Sequence[Stage],
    out: Path,
    say: Callable[[str], Any] = print,
    before_first: Callable[[], Any] = lambda: None,
) -> dict[str, dict[str, Any]]:
    """Run the stages in order, skipping and resuming as the module docstring says; `before_first` runs
    once, before the first stage that is not skipped. Returns every stage's record."""
    declared = {stage.id: stage for stage in stages}
    records: dict[str, dict[str, Any]] = {}
    started = False
    for stage in stages:
        path = record_path(out, stage.id)
        fp = fingerprint(stage, records)
        record = read_record(path)
        state = state_of(record, fp)
        if state == DONE:
            say(f"{stage.id}: done, skipped (record: {path})")
            records[stage.id] = record  # type: ignore[assignment]
            continue
        if not started:
            before_first()
            started = True
        inputs = resolve(stage, records, declared)
        if state == RESUME:
            say(f"{stage.id}: interrupted in an earlier run; resuming it")
        write_record(path, {"stage": stage.id, "status": "running", "fingerprint": fp, "inputs": inputs})
        result = stage.run(StageRun(inputs, state == RESUME, records)) or {}
        outputs = {**stage.outputs, **{k: str(v) for k, v in result.get("outputs", {}).items()}}
        records[stage.id] = {
            "stage": stage.id,
            "status": "done",
            "fingerprint": fp,
            "inputs": inputs,
            "outputs": outputs,
            "output_digest": outputs_digest(outputs),
            "results": result.get("results", {}),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_record(path, records[stage.id])
    return records

"""The path contract: files the project writes name images relative to themselves, and load the same
from any working directory (the first-run bug: a hard-example parquet written with cwd-relative paths
could not be read back)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from r1reward.data.dataset import load_preferences
from r1reward.data.synthetic import make_synthetic_data
from r1reward.data.writers import write_records


def _load(path: Path, schema: str = "r1reward-rl"):
    records, report = load_preferences(path, schema, swap_seed=None, verbose=False)
    return records, report


def _load_moved_hard_parquet(cwd: Path, check: bool) -> subprocess.CompletedProcess:
    """Load ../run-moved/pipeline/data/hard.parquet from `cwd` in a fresh process; prints kept and skipped."""
    code = (
        "from r1reward.data.dataset import load_preferences;"
        "r, rep = load_preferences('../run-moved/pipeline/data/hard.parquet', 'r1reward-rl', swap_seed=None,"
        " verbose=False); print(rep.kept, rep.skipped)"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=check)


def test_synthetic_set_written_relative_loads_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_synthetic_data("runs/data/train", num=6, seed=0)  # relative, as the pipeline does
    image_columns = pq.read_table("runs/data/train/train.parquet").column("image").to_pylist()
    assert all(not os.path.isabs(p) and p.startswith("images/") for p in image_columns)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    records, report = _load(Path("../runs/data/train/train.parquet"))
    assert report.kept == 6 and report.skipped == 0
    assert all(Path(r.images[0]).is_file() for r in records)


def test_rewritten_records_keep_working_after_cwd_change_and_move(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_synthetic_data("runs/pipeline/data/train", num=5, seed=1)
    records, _ = _load(Path("runs/pipeline/data/train/train.parquet"))
    write_records(records[:3], "runs/pipeline/data/hard.parquet")  # what hard-example selection does
    stored = pq.read_table("runs/pipeline/data/hard.parquet").column("image").to_pylist()
    assert stored[0] == "train/images/000000.png"  # relative to hard.parquet, not to the cwd
    messages = pq.read_table("runs/pipeline/data/hard.parquet").column("message").to_pylist()
    content = json.loads(messages[0])[0]["content"]
    assert [part["type"] for part in content] == ["text", "image"]  # the released layout: text first
    # Read it from another working directory, then after moving the whole run folder.
    out = _load_moved_hard_parquet(tmp_path / "runs", check=False)
    assert out.returncode != 0 or out.stdout.split()[:2] != ["3", "0"]  # not moved yet: must not load
    (tmp_path / "runs").rename(tmp_path / "run-moved")
    (tmp_path / "runs").mkdir()
    out = _load_moved_hard_parquet(tmp_path / "runs", check=True)
    assert out.stdout.split()[:2] == ["3", "0"]


def test_embedded_images_are_saved_beside_the_written_file(tmp_path):
    make_synthetic_data(tmp_path / "src", num=2, seed=2)
    records, _ = _load(tmp_path / "src" / "train.parquet")
    embedded = [dataclasses.replace(r, images=[Path(r.images[0]).read_bytes()]) for r in records]
    write_records(embedded, tmp_path / "out" / "hard.parquet")
    loaded, report = _load(tmp_path / "out" / "hard.parquet")
    assert report.kept == 2
    assert all(Path(r.images[0]).parent == (tmp_path / "out" / "images") for r in loaded)

"""The CLI: real subprocesses, one-line errors and no traceback for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1reward", *args], capture_output=True, text=True, timeout=300)


def test_make_synthetic_data_round_trips_through_parquet(tmp_path):
    out = tmp_path / "data"
    proc = run_cli("make-synthetic-data", str(out), "--num", "12", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out / "train.parquet")
    assert table.column_names == ["question", "message", "answer", "image"]
    rows = table.to_pylist()
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    sft = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs) == len(sft) == 12
    for row, pair, target in zip(rows, pairs, sft):
        assert row["answer"] == [f"<answer>{pair['label']}</answer>"]
        message = json.loads(row["message"])
        assert message[0]["content"][0]["type"] == "text"  # text first, as the released training rows
        assert message[0]["content"][-1]["image"] == row["image"] == pair["images"][0]
        assert pair["response_1"] in row["question"] and pair["response_2"] in row["question"]
        assert pair["response_1"] != pair["response_2"]
        with Image.open(out / row["image"]) as im:
            assert im.convert("RGB").size == (56, 56)
        assert target["target"].endswith(f"<answer>{pair['label']}</answer>")
        assert target["target"].startswith("<think>")
    assert {p["label"] for p in pairs} == {1, 2}
    again = tmp_path / "again"
    assert run_cli("make-synthetic-data", str(again), "--num", "12", "--seed", "3").returncode == 0
    assert (again / "pairs.jsonl").read_bytes() == (out / "pairs.jsonl").read_bytes()


def test_missing_parent_directories_are_created(tmp_path):
    out = tmp_path / "new" / "nested" / "data"
    assert run_cli("make-synthetic-data", str(out), "--num", "2").returncode == 0
    assert (out / "train.parquet").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["make-tiny-model", "/sys/r1reward-test/model"], "cannot create output directory"),
        (["make-synthetic-data", "{file}/sub", "--num", "2"], "is a file, not a directory"),
        (["make-synthetic-data", "{file}", "--num", "2"], "exists and is not a directory"),
        (["make-synthetic-data", "{tmp}/d", "--num", "0"], "--num must be positive"),
        (
            ["print-config", "--config", "configs/tiny-cpu.yaml", "trainer.no_such_key=1"],
            "unknown key 'trainer.no_such_key'",
        ),
        (["print-config", "trainer.num_steps=many"], "bad value for 'trainer.num_steps'"),
        # The pipeline's SFT stage starts minutes in: its batch layout is refused before anything runs.
        (
            [
                "pipeline",
                "--config",
                "configs/pipeline-tiny.yaml",
                "pipeline.output_dir={tmp}/p",
                "sft.train_batch_size=6",
            ],
            "pipeline: sft.train_batch_size (6) must be a multiple of learner.num_ranks x learner.micro_batch_size",
        ),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = [a.format(file=afile, tmp=tmp_path) for a in args]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

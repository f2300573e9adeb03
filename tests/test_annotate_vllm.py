"""`r1reward annotate` end to end against a real `python -m vllm.entrypoints.openai.api_server` serving the
tiny model after its cold-start SFT, started and stopped here: the SFT set, the RL set and the report are
written, agree with each other, and a rerun asks the server nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from r1reward.algo import parse_answer
from r1reward.cli import main
from r1reward.data.annotations import read_annotations
from r1reward.data.dataset import load_preferences
from r1reward.data.jsonl import read_jsonl
from serve_fakes import free_port, wait_healthy

pytestmark = pytest.mark.slow
START_LIMIT_S = 600  # two shared cores: the engine's start-up, compile included


@pytest.fixture
def vllm_server(sft_model_dir, tmp_path):
    port, log = free_port(), tmp_path / "vllm.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(sft_model_dir),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--kv-cache-memory-bytes", "268435456", "--limit-mm-per-prompt", '{"image":1,"video":0}',
        "--max-model-len", "4096", "--enforce-eager",
    ]  # fmt: skip
    # Its own session: the engine core is a child process, and the whole group is stopped at the end.
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, START_LIMIT_S, name="the vLLM server")
        yield f"{url}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_annotate_against_a_real_vllm_openai_server(vllm_server, synthetic_dir, tmp_path):
    out = tmp_path / "annotated"
    args = ["annotate", "--teacher-url", vllm_server, "--teacher-model", "tiny", "--data",
            str(synthetic_dir / "pairs.jsonl"), "--schema", "canonical", "--out", str(out), "--concurrency", "4",
            "--temperature", "1.0", "--max-tokens", "400", "--request-timeout", "120"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "annotate_report.json").read_text())
    entries = read_annotations(out / "annotations.jsonl")
    assert report["pairs"] == len(entries) == 16 and report["errors"] == 0
    assert sum(report["difficulty"].values()) == 16
    for entry in entries.values():
        assert 1 <= len(entry["traces"]) <= 3
        assert [t["answer"] for t in entry["traces"]] == [parse_answer(t["text"]) for t in entry["traces"]]
        assert entry["tries"] == next((i + 1 for i, t in enumerate(entry["traces"]) if t["right"]), None)
    assert report["tokens"]["completion"] > 0 and report["requests"] == sum(len(e["traces"]) for e in entries.values())
    # The SFT-trained model answers some pairs right: the SFT set is not empty, and each target is a right trace.
    sft = read_jsonl(out / "sft.jsonl")
    assert len(sft) == report["sft_pairs"] == sum(e["tries"] is not None for e in entries.values()) > 0
    assert all(parse_answer(row["target"]) == row["label"] for row in sft)
    rl, _ = load_preferences(out / "rl.parquet", "r1reward-rl", swap_seed=None, verbose=False)
    assert len(rl) == report["rl_pairs"] == sum(not e["tries"] or e["tries"] >= 2 for e in entries.values())

    lines = (out / "annotations.jsonl").read_text()
    assert main(args) == 0  # the rerun: every pair is finished, nothing is asked
    assert json.loads((out / "annotate_report.json").read_text())["asked_this_run"] == 0
    assert (out / "annotations.jsonl").read_text() == lines

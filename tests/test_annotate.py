"""`r1reward annotate` against a fake OpenAI-compatible teacher on loopback: tries and difficulty, the
SFT/RL split, 429s, timeouts, garbage, a refused key, and a kill mid-run then a resume that asks no
finished pair again. The run against a real vLLM OpenAI server is tests/test_annotate_vllm.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from annotate_fake_teacher import FakeTeacher
from r1reward.cli import main
from r1reward.data.annotations import read_annotations
from r1reward.data.dataset import load_preferences
from r1reward.data.jsonl import read_jsonl, write_jsonl
from r1reward.trainer.annotate import annotate
from r1reward.trainer.teacher import TeacherClient, retry_after_s

ROOT = Path(__file__).resolve().parents[1]


def write_pairs(folder: Path, n: int, labels: list[int] | None = None) -> Path:
    """n pairs "question i"; the better response says "good" (label 1 + i % 2 unless `labels` given)."""
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "red.png")
    rows = [
        {
            "id": f"pair-{i}",
            "question": f"question {i}",
            "images": ["red.png"],
            "response_1": f"{'good' if label == 1 else 'poor'} answer {i}",
            "response_2": f"{'poor' if label == 1 else 'good'} answer {i}",
            "label": label,
        }
        for i, label in enumerate(labels or [1 + i % 2 for i in range(n)])
    ]
    return write_jsonl(rows, folder / "pairs.jsonl")


def right_on(tries_needed: dict[int, int | None]):
    """A teacher that is wrong until try `tries_needed[i]` of question i (None: always wrong)."""

    def script(question: str, n: int):
        need = tries_needed[int(question.split()[-1])]
        return ("answer", "right") if need is not None and n + 1 >= need else ("answer", "wrong")

    return script


def cli_args(url: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["annotate", "--teacher-url", url, "--teacher-model", "m", "--data", str(data), "--schema", "canonical",
            "--out", str(out), *extra]  # fmt: skip


def client(url: str, **kw) -> TeacherClient:
    return TeacherClient(url, "fake-teacher", **{"timeout_s": 5.0, "backoff_s": 0.01, "max_backoff_s": 0.2, **kw})


def test_tries_are_the_difficulty_and_the_paper_rule_splits_sft_and_rl(tmp_path):
    data = write_pairs(tmp_path, 8)
    needed = {0: 1, 1: 1, 2: 2, 3: 3, 4: None, 5: 2, 6: 1, 7: None}
    out = tmp_path / "out"
    out.mkdir()
    with FakeTeacher(right_on(needed)) as teacher:
        report = annotate(data, "canonical", out, client(teacher.url), tries=3, concurrency=3, progress=False)
    entries = read_annotations(out / "annotations.jsonl")
    for i, need in needed.items():
        entry = entries[f"pair-{i}"]
        assert entry["tries"] == need
        assert len(entry["traces"]) == (need or 3) == teacher.requests[f"question {i}"]
        assert [t["right"] for t in entry["traces"]] == [False] * ((need or 4) - 1) + ([True] if need else [])
    assert set(teacher.images) == {1}  # the image went with every request
    assert report["difficulty"] == {"1": 3, "2": 2, "3": 1, "failed": 2}
    assert report["tokens"]["total"] == 110 * sum(teacher.requests.values())

    # SFT: the first right trace of each solved pair, loadable by the SFT loader's reader (canonical + target).
    sft = read_jsonl(out / "sft.jsonl")
    assert [r["id"] for r in sft] == [f"pair-{i}" for i, need in needed.items() if need]
    assert all(r["target"].endswith(f"<answer>{r['label']}</answer>") for r in sft)
    records, _ = load_preferences(out / "sft.jsonl", "canonical", swap_seed=None, verbose=False)
    assert len(records) == len(sft) and all(r.extra["target"] for r in records)

    # RL: 2+ tries or failed, in the R1-Reward RL parquet layout.
    rl, _ = load_preferences(out / "rl.parquet", "r1reward-rl", swap_seed=None, verbose=False)
    want = {f"question {i}" for i, need in needed.items() if need is None or need >= 2}
    assert {r.question for r in rl} == want
    assert report["rl_pairs"] == len(want) and report["sft_pairs"] == len(sft)


def test_429s_are_waited_out_with_retry_after_and_the_wait_is_bounded(tmp_path):
    data = write_pairs(tmp_path, 2)
    script = lambda q, n: ("429", "1") if n < 2 else ("answer", "right")  # noqa: E731
    with FakeTeacher(script) as teacher:
        start = time.monotonic()
        report = annotate(data, "canonical", tmp_path, client(teacher.url, max_backoff_s=5.0), tries=3, progress=False)
        waited = time.monotonic() - start
    assert report["difficulty"]["1"] == 2 and report["errors"] == 0
    assert teacher.requests == {"question 0": 3, "question 1": 3}
    assert waited >= 2.0  # two Retry-After: 1 in a row, honoured

    # A Retry-After beyond the bound waits only the bound.
    script = lambda q, n: ("429", "3600") if n < 1 else ("answer", "right")  # noqa: E731
    with FakeTeacher(script) as teacher:
        start = time.monotonic()
        annotate(data, "canonical", tmp_path / "b", client(teacher.url, max_backoff_s=0.3), progress=False)
        assert time.monotonic() - start < 10


def test_a_timeout_a_5xx_and_garbage_are_retried(tmp_path):
    data = write_pairs(tmp_path, 3)
    first = {"question 0": ("sleep", 3.0), "question 1": ("500",), "question 2": ("garbage",)}
    script = lambda q, n: first[q] if n == 0 else ("answer", "right")  # noqa: E731
    with FakeTeacher(script) as teacher:
        report = annotate(data, "canonical", tmp_path, client(teacher.url, timeout_s=0.5), progress=False)
    assert report["difficulty"]["1"] == 3 and report["errors"] == 0
    assert teacher.requests == {"question 0": 2, "question 1": 2, "question 2": 2}


def test_a_pair_that_never_gets_a_reply_is_left_for_the_rerun(tmp_path, capsys):
    data = write_pairs(tmp_path, 2)
    broken = {"on": True}
    script = lambda q, n: ("garbage",) if q == "question 1" and broken["on"] else ("answer", "right")  # noqa: E731
    with FakeTeacher(script) as teacher:
        args = cli_args(teacher.url, data, tmp_path / "out", "--max-attempts", "2", "--max-backoff", "0.1")
        assert main(args) == 1
        err = capsys.readouterr().out
        assert "1 pairs got no answer" in err and "pair 'pair-1'" in err and "not a chat completion" in err
        assert set(read_annotations(tmp_path / "out" / "annotations.jsonl")) == {"pair-0"}
        broken["on"] = False
        assert main(args) == 0
    assert teacher.requests["question 0"] == 1  # finished: not asked again
    assert set(read_annotations(tmp_path / "out" / "annotations.jsonl")) == {"pair-0", "pair-1"}


def test_a_refused_key_stops_the_run_with_one_line(tmp_path, capsys):
    data = write_pairs(tmp_path, 3)
    with FakeTeacher(lambda q, n: ("refuse",)) as teacher:
        os.environ["R1REWARD_TEST_KEY"] = "sk-wrong"
        try:
            rc = main(cli_args(teacher.url, data, tmp_path / "out", "--api-key-env", "R1REWARD_TEST_KEY"))
        finally:
            del os.environ["R1REWARD_TEST_KEY"]
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("r1reward annotate: error: teacher") and "HTTP 401" in err
    assert sum(teacher.requests.values()) <= 3  # stopped, not retried


def test_a_missing_api_key_variable_is_one_line(tmp_path, capsys):
    data = write_pairs(tmp_path, 1)
    rc = main(cli_args("http://127.0.0.1:9/v1", data, tmp_path / "o", "--api-key-env", "R1REWARD_NO_SUCH_VAR"))
    assert rc == 2 and "R1REWARD_NO_SUCH_VAR" in capsys.readouterr().err


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("7") == 7.0
    assert retry_after_s("garbage") is None and retry_after_s(None) is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_s(later) <= 31


def test_a_killed_run_resumes_without_asking_a_finished_pair_again(tmp_path):
    data = write_pairs(tmp_path, 12)
    out = tmp_path / "out"
    needed = {i: [1, 2, None][i % 3] for i in range(12)}
    slow = right_on(needed)

    def script(question, n):  # slow enough to kill the run in the middle
        time.sleep(0.15)
        return slow(question, n)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with FakeTeacher(script) as teacher:
        cmd = [sys.executable, "-m", "r1reward", *cli_args(teacher.url, data, out, "--concurrency", "2")]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(read_annotations(out / "annotations.jsonl")) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before 4 pairs"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        before = set(read_annotations(out / "annotations.jsonl"))
        assert 4 <= len(before) < 12
        asked_before = dict(teacher.requests)
        subprocess.run(cmd, env=env, check=True, timeout=120, capture_output=True)
    asked_after = {q: teacher.requests[q] - asked_before.get(q, 0) for q in teacher.requests}
    assert all(asked_after.get(f"question {pair.split('-')[1]}", 0) == 0 for pair in before)
    entries = read_annotations(out / "annotations.jsonl")
    assert len(entries) == 12 == len(read_jsonl(out / "annotations.jsonl"))  # one line per pair, none twice
    report = json.loads((out / "annotate_report.json").read_text())
    # (a pair in flight at the kill was asked, not finished: the rerun asks it afresh)
    assert report["pairs"] == 12 and report["asked_this_run"] == 12 - len(before)


def test_a_chosen_first_file_is_asked_balanced_and_a_rerun_keeps_the_order(tmp_path, capsys):
    data = write_pairs(tmp_path, 8, labels=[1] * 8)  # like MM-RLHF: the chosen response always first
    out = tmp_path / "out"
    with FakeTeacher(lambda q, n: ("answer", "right")) as teacher:
        assert main(cli_args(teacher.url, data, out)) == 0
        entries = read_annotations(out / "annotations.jsonl")
        sft = read_jsonl(out / "sft.jsonl")
        # Half are asked (and kept for SFT) with the better response second: the traces answer 2 there.
        assert sorted(r["label"] for r in sft) == [1] * 4 + [2] * 4
        assert all(("good" in r["response_1"]) == (r["label"] == 1) for r in sft)
        assert all(r["target"].endswith(f"<answer>{r['label']}</answer>") for r in sft)
        assert sum(e["swapped"] for e in entries.values()) == 4
        assert all(e["label"] == (2 if e["swapped"] else 1) for e in entries.values())
        # Resuming in another order would mix two orders in one set: refused in one line.
        assert main(cli_args(teacher.url, data, out, "--keep-order")) == 2
        assert "asked in the other response order" in capsys.readouterr().err
        assert sum(teacher.requests.values()) == 8

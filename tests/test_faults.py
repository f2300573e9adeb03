"""Faults injected into a real tiny run (Ray, vLLM, DeepSpeed; no mocks): `pytest -m faults`.

Each run is `python -m r1reward train` in a subprocess, as a user starts it, with the tiny config
(6 steps of 4 prompts, one rollout worker, two learner ranks). Three runs are shared by the tests:

- A, uninterrupted, a checkpoint every step, with NaN injected at two steps (a loss, advantages);
- B, the same run, a checkpoint every 2 steps keeping 1, SIGKILLed once it has logged step 5
  (after its step_4 checkpoint, in the middle of step 6);
- C, B resumed with trainer.resume=true.

Below them, runs D (bad rows, a hanging/garbage judge, a stalled sync receiver) and F (a learner rank
SIGKILLed, with trainer.max_restarts=1: the stop line, then the restart) test the remaining faults.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
NAN_LOSS_STEP, NAN_ADVANTAGES_STEP = 2, 3
ORPHAN_DEADLINE_S = 60.0


def _train_command(model: Path, train_path: Path, out: Path, steps: int, *overrides: str) -> list[str]:
    """`python -m r1reward train` on the tiny config: 4 prompts a step, two micro-batches of 2."""
    return [
        sys.executable,
        "-m",
        "r1reward",
        "train",
        "--config",
        str(ROOT / "configs" / "tiny-cpu.yaml"),
        f"model.path={model}",
        f"data.train_path={train_path}",
        f"trainer.output_dir={out}",
        f"trainer.num_steps={steps}",
        "trainer.rollout_batch_size=4",
        "learner.train_batch_size=4",
        "learner.micro_batch_size=2",
        "rollout.max_new_tokens=64",
        *overrides,
    ]


def _command(model: Path, data: Path, out: Path, *overrides: str) -> list[str]:
    """Runs A, B, C: STEPS steps with NaN injected into a loss and into advantages."""
    return _train_command(
        model,
        data / "train.parquet",
        out,
        STEPS,
        f"trainer.debug_nan_loss_step={NAN_LOSS_STEP}",
        f"trainer.debug_nan_advantages_step={NAN_ADVANTAGES_STEP}",
        *overrides,
    )


def _start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)  # a local Ray, started (and owned) by the driver
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return text


def _steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return steps


def _rows(out: Path) -> list[dict]:
    from r1reward.trainer.metrics import read_metrics

    return read_metrics(out / "metrics.jsonl")


def _weights_sha(checkpoint: Path) -> str:
    files = sorted((checkpoint / "hf").glob("*.safetensors"))
    assert files, f"no safetensors in {checkpoint / 'hf'}"
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _alive(pid: int, created: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def runs(sft_model_dir, synthetic_dir, tmp_path_factory):
    import psutil

    root = tmp_path_factory.mktemp("faults")
    a, b = root / "A", root / "B"
    result: dict = {"A": a, "B": b}

    start = time.monotonic()
    _finish(_start(_command(sft_model_dir, synthetic_dir, a, "trainer.save_every=1"), root / "A.log"), root / "A.log")
    result["time_A"] = time.monotonic() - start

    # B: killed with SIGKILL once step 5 is logged (step_4 is its checkpoint; step 6 is running).
    command_b = _command(sft_model_dir, synthetic_dir, b, "trainer.save_every=2", "trainer.keep_checkpoints=1")
    b_started = time.time()
    proc = _start(command_b, root / "B.log")
    deadline = time.monotonic() + 900
    while 5 not in _steps(b):
        assert proc.poll() is None, (root / "B.log").read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, "run B never logged step 5"
        time.sleep(0.05)
    tree = {p.pid: (p.create_time(), p.name()) for p in psutil.Process(proc.pid).children(recursive=True)}
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait()
    gone: dict[int, float] = {}
    while time.monotonic() - killed_at < ORPHAN_DEADLINE_S:
        for pid, (created, _) in tree.items():
            if pid not in gone and not _alive(pid, created):
                gone[pid] = time.monotonic() - killed_at
        if len(gone) == len(tree):
            break
        time.sleep(0.1)
    result.update(
        tree=tree,
        gone=gone,
        steps_at_kill=_steps(b),
        checkpoints_at_kill=sorted(p.name for p in (b / "checkpoints").iterdir()),
    )
    # Independent of the snapshot: no vLLM engine process started since B began may outlive B's driver
    # (nothing else starts vLLM while this module runs).
    vllm_deadline = time.monotonic() + 10
    while True:
        result["vllm_left"] = {
            p.pid: p.info["name"]
            for p in psutil.process_iter(["name", "create_time", "status"])
            if (p.info["name"] or "").startswith("VLLM::")
            and p.info["create_time"] >= b_started
            and p.info["status"] != psutil.STATUS_ZOMBIE
        }
        if not result["vllm_left"] or time.monotonic() > vllm_deadline:
            break
        time.sleep(0.2)
    survivors = [pid for pid in tree if pid not in gone]
    for pid in survivors:  # do not leave them to slow down the next run (the test below fails anyway)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    start = time.monotonic()
    result["log_C"] = _finish(_start(command_b + ["trainer.resume=true"], root / "C.log"), root / "C.log")
    result["time_C"] = time.monotonic() - start
    print(
        f"\nfaults: A {result['time_A']:.0f} s, C {result['time_C']:.0f} s, "
        f"run B's {len(tree)} processes gone {max(gone.values(), default=0):.2f} s after SIGKILL"
    )
    return result


def test_sigkill_of_the_driver_leaves_no_process_of_the_run(runs):
    names = {name for _, name in runs["tree"].values()}
    # The run really had them when it was killed: the local Ray, its workers, the vLLM engine.
    # (Once, on a machine under three concurrent test loads, the snapshot held the engine's processes
    # under other names; the check of vLLM processes below does not depend on the snapshot.)
    assert {"raylet", "gcs_server"} <= names, names
    assert not runs["vllm_left"], f"vLLM processes alive after the driver's SIGKILL: {runs['vllm_left']}"
    assert any(n.startswith("ray::LearnerRank") for n in names) and any(n.startswith("ray::Rollout") for n in names)
    left = {pid: name for pid, (_, name) in runs["tree"].items() if pid not in runs["gone"]}
    assert not left, f"alive {ORPHAN_DEADLINE_S:.0f} s after the driver's SIGKILL: {left}"


def test_a_killed_run_keeps_its_last_complete_checkpoint_only(runs):
    assert runs["steps_at_kill"][-1] == 5
    # keep_checkpoints=1 deleted step_2; no partial directory is left by the kill.
    assert runs["checkpoints_at_kill"] == ["step_4"]


def test_resume_after_sigkill_equals_the_uninterrupted_run(runs):
    a, b = runs["A"], runs["B"]
    assert "resumed from" in runs["log_C"] and "step_4 at step 4" in runs["log_C"]
    resumed, uninterrupted = _rows(b), _rows(a)
    # Step 5 was logged by the killed run and again after the resume: it is there once.
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    # Same prompts, same sampling seeds, same updates: the rows agree (timings aside).
    for key in ("reward/mean", "reward/format_rate", "loss", "response_length/mean", "nonfinite_skipped"):
        assert [r[key] for r in resumed] == [r[key] for r in uninterrupted], key
    # Exact, not within a tolerance: fp32 on the CPU, the same kernels and the same order of operations.
    assert _weights_sha(b / "checkpoints" / f"step_{STEPS}") == _weights_sha(a / "checkpoints" / f"step_{STEPS}")
    assert sorted(p.name for p in (b / "checkpoints").iterdir()) == [f"step_{STEPS}"]


def test_tensorboard_holds_each_step_once_after_the_resume(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs["B"] / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("reward/mean")
    assert [e.step for e in events] == list(range(1, STEPS + 1))
    assert [e.value for e in events] == pytest.approx([r["reward/mean"] for r in _rows(runs["A"])])


def test_a_nan_loss_or_nan_advantages_skip_the_update_on_every_rank(runs):
    import math

    a = runs["A"]
    sha = {step: _weights_sha(a / "checkpoints" / f"step_{step}") for step in range(1, STEPS + 1)}
    # Rank 0's loss is NaN at step 2, one sample's advantages at step 3: the weights do not move...
    assert sha[NAN_LOSS_STEP] == sha[NAN_LOSS_STEP - 1]
    assert sha[NAN_ADVANTAGES_STEP] == sha[NAN_ADVANTAGES_STEP - 1]
    # ...while an ordinary step does.
    assert sha[4] != sha[3] and sha[5] != sha[4]
    rows = {r["step"]: r for r in _rows(a)}
    for step, row in rows.items():
        bad = step in (NAN_LOSS_STEP, NAN_ADVANTAGES_STEP)
        # Mean over the two ranks: 1.0 means both skipped their one optimizer step of the step.
        assert row["optimizer_steps_skipped"] == (1.0 if bad else 0.0), (step, row)
        assert row["nonfinite_skipped"] == (1.0 if bad else 0.0), (step, row)
        assert all(math.isfinite(v) for v in row.values()), row  # the NaN is counted, never logged


# --- a sync that stalls, a judge that hangs or talks nonsense, bad rows; a learner rank killed -----------
# Two more runs, 4 steps each with a checkpoint every 2:
# - D trains on a corpus of good and bad rows, asks a local judge server that hangs on every other request
#   and answers garbage to the rest, and at step 3 rollout worker 0 stalls instead of receiving the weights;
# - E is SIGKILLed in one learner rank once its step_2 checkpoint is complete.
JUDGE_TIMEOUT_S, SYNC_TIMEOUT_S, FAULT_STEPS = 2.0, 15.0, 4


class _BadJudge:
    """An OpenAI-compatible endpoint that sleeps past any timeout on odd requests and answers without a
    verdict on even ones."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        judge = self
        self.requests = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with judge.lock:
                    judge.requests += 1
                    hang = judge.requests % 2 == 1
                try:
                    if hang:
                        time.sleep(30)
                    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "maybe?"}}]})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body.encode())
                except OSError:
                    pass  # the client gave up, as it should

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _fault_command(model: Path, train_path: Path, out: Path, *overrides: str) -> list[str]:
    """Runs D and F: FAULT_STEPS steps with a checkpoint every 2."""
    return _train_command(model, train_path, out, FAULT_STEPS, "trainer.save_every=2", *overrides)


def _checkpoint_done(out: Path, step: int) -> bool:
    from r1reward.trainer.checkpoint import STATE_FILE

    return (out / "checkpoints" / f"step_{step}" / STATE_FILE).is_file()


def _error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("r1reward train: error:")]
    assert len(lines) == 1, text[-4000:]
    return lines[0]


def _kill_a_learner_rank_after_step_2(proc: subprocess.Popen, out: Path, log: Path) -> None:
    """SIGKILL one learner rank once the step_2 checkpoint is complete (step 3 is then running)."""
    import psutil

    deadline = time.monotonic() + 900
    while not _checkpoint_done(out, 2):
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, f"{out.name} never saved step_2"
        time.sleep(0.05)
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name().startswith("ray::LearnerRank")]
    assert ranks, [p.name() for p in psutil.Process(proc.pid).children(recursive=True)]
    ranks[-1].kill()


@pytest.fixture(scope="module")
def fault_runs(sft_model_dir, synthetic_dir, tmp_path_factory):
    from helpers import write_bad_corpus

    root = tmp_path_factory.mktemp("fault-runs")
    d = root / "D"
    result: dict = {"D": d}

    corpus, result["good_ids"] = write_bad_corpus(synthetic_dir, root / "corpus")
    judge = _BadJudge()
    try:
        proc = _start(
            _fault_command(
                sft_model_dir,
                corpus,
                d,
                f"data.image_root={synthetic_dir}",
                "reward.judge=openai",
                f"reward.judge_url={judge.url}",
                "reward.judge_model=judge",
                "reward.judge_retries=0",
                f"timeouts.judge_request_s={JUDGE_TIMEOUT_S}",
                f"timeouts.weight_sync_s={SYNC_TIMEOUT_S}",
                "trainer.debug_stall_sync_step=3",
            ),
            root / "D.log",
        )
        deadline = time.monotonic() + 900
        while not _checkpoint_done(d, 2) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        step_3_began = time.monotonic()
        proc.wait(timeout=600)
        result["D_after_step_2_s"] = time.monotonic() - step_3_began
        result["D_rc"], result["D_log"] = proc.returncode, (root / "D.log").read_text(errors="replace")
        result["judge_requests"] = judge.requests
    finally:
        judge.close()

    print(
        f"\nfaults: D ended {result['D_after_step_2_s']:.0f} s after its step_2 checkpoint (sync timeout "
        f"{SYNC_TIMEOUT_S:.0f} s)"
    )
    return result


def test_a_stalled_sync_receiver_ends_the_run_within_the_timeout_naming_the_worker(fault_runs):
    line = _error_line(fault_runs["D_log"])
    assert fault_runs["D_rc"] == 2, fault_runs["D_log"][-4000:]
    assert "training stopped at step 3" in line and "weight sync" in line and "rollout worker 0" in line, line
    assert f"resume from {fault_runs['D'] / 'checkpoints' / 'step_2'} with trainer.resume=true" in line, line
    # Step 3's generate, score and train, then the sync's timeout, then the shutdown: no hang.
    assert fault_runs["D_after_step_2_s"] < SYNC_TIMEOUT_S + 120, fault_runs["D_after_step_2_s"]
    assert [r["step"] for r in _rows(fault_runs["D"])] == [1, 2]


def test_a_judge_that_hangs_or_answers_garbage_is_counted_and_training_goes_on(fault_runs):
    rows = _rows(fault_runs["D"])
    assert fault_runs["judge_requests"] > 0, "no generation reached the judge: the test would prove nothing"
    # Every request failed (a hang cut at the timeout, or no verdict), and each is counted.
    assert sum(r["reward/judge_failures"] for r in rows) > 0
    for row in rows:  # 4 generations, one round of concurrent requests: at most one timeout per step
        assert row["time/reward"] < JUDGE_TIMEOUT_S + 5, row
    assert [r["step"] for r in rows] == [1, 2] and _checkpoint_done(fault_runs["D"], 2)


def test_bad_rows_are_skipped_and_reported_by_reason_in_a_real_run(fault_runs):
    from helpers import BAD_KINDS, GOOD_ROWS

    report = json.loads((fault_runs["D"] / "data_report.json").read_text())
    assert report["kept"] == GOOD_ROWS and report["rows"] == GOOD_ROWS + len(BAD_KINDS)
    assert {k: v for k, v in report.items() if k.startswith("skipped/")} == {f"skipped/{k}": 1 for k in BAD_KINDS}
    assert "skipped 8" in fault_runs["D_log"]


@pytest.fixture(scope="module")
def killed_learner_run(sft_model_dir, synthetic_dir, tmp_path_factory):
    """Run F: a learner rank SIGKILLed during step 3, with trainer.max_restarts=1. The run stops with the
    one line (role, step, checkpoint), then starts again from step_2 and finishes."""
    out = tmp_path_factory.mktemp("fault-run-F") / "F"
    log = out.parent / "F.log"
    command = _fault_command(
        sft_model_dir, synthetic_dir / "train.parquet", out, "timeouts.collective_s=60", "trainer.max_restarts=1"
    )
    proc = _start(command, log)
    _kill_a_learner_rank_after_step_2(proc, out, log)
    killed_at = time.monotonic()
    while "restart 1 of 1" not in log.read_text(errors="replace"):  # the stop line is printed with it
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() - killed_at < 600, "no stop line 600 s after a learner rank was killed"
        time.sleep(0.05)
    detect_s = time.monotonic() - killed_at
    print(f"\nfaults: F stopped {detect_s:.1f} s after a learner rank's SIGKILL, then restarted")
    return {"out": out, "log": _finish(proc, log, timeout=600), "detect_s": detect_s}


def test_a_killed_learner_rank_ends_the_run_naming_role_step_and_checkpoint(killed_learner_run):
    out, log = killed_learner_run["out"], killed_learner_run["log"]
    line = next(line for line in log.splitlines() if "restart 1 of 1" in line)
    assert "training stopped at step 3" in line and "learner rank" in line, line
    assert f"resume from {out / 'checkpoints' / 'step_2'} with trainer.resume=true" in line, line
    assert killed_learner_run["detect_s"] < 120, killed_learner_run["detect_s"]


def test_max_restarts_starts_again_from_the_last_checkpoint_after_a_killed_learner_rank(killed_learner_run):
    out, log = killed_learner_run["out"], killed_learner_run["log"]
    assert f"resumed from {out / 'checkpoints' / 'step_2'} at step 2" in log, log[-4000:]
    assert [r["step"] for r in _rows(out)] == list(range(1, FAULT_STEPS + 1))  # each step once
    assert _checkpoint_done(out, FAULT_STEPS)

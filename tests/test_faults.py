"""Faults injected into a real tiny run (Ray, vLLM, DeepSpeed; no mocks): `pytest -m faults`.

Each run is `r1reward train` in a subprocess, started through tests/fault_injection.py (which wraps the
faults around the step from outside), with the tiny config (5 steps of 4 prompts, one rollout worker,
two learner ranks) under the same adversities: a corpus of good and bad rows, a judge server that hangs
on every other request and answers garbage to the rest, a NaN loss at step 2 and NaN advantages at
step 3. Three runs are shared by the tests:

- A, uninterrupted, a checkpoint every step;
- B, a checkpoint every 2 steps keeping 1, generating one batch ahead (trainer.max_staleness=1), its
  driver SIGKILLed once it has logged step 3 (after its step_2 checkpoint, in the middle of step 4,
  with step 5's batch generating);
- F, a checkpoint every step keeping 1, with trainer.max_restarts=1: a learner rank is SIGKILLed once
  the step_2 checkpoint is complete, the run stops with one line and starts again from step_2; then at
  step 5 rollout worker 0 stalls instead of receiving the weights, and with no restart left the run ends
  with one line naming the worker. Steps 1 to 4 must equal A's, weights included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import weights_sha

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5
NAN_LOSS_STEP, NAN_ADVANTAGES_STEP = 2, 3
ORPHAN_DEADLINE_S = 60.0
JUDGE_TIMEOUT_S, SYNC_TIMEOUT_S = 1.0, 6.0
KILL_LEARNER_AFTER, STALL_STEP = 2, 5


def _command(
    model: Path, corpus: Path, images: Path, judge_url: str, out: Path, *overrides: str, stall_sync_step: int = 0
) -> list[str]:
    """`r1reward train` on the tiny config: 4 prompts a step, two micro-batches of 2, the bad corpus, the
    bad judge, NaN at two steps (and, with `stall_sync_step`, a stalled weight sync)."""
    return [
        sys.executable,
        str(ROOT / "tests" / "fault_injection.py"),
        f"--nan-loss-step={NAN_LOSS_STEP}",
        f"--nan-advantages-step={NAN_ADVANTAGES_STEP}",
        f"--stall-sync-step={stall_sync_step}",
        "train",
        "--config",
        str(ROOT / "configs" / "tiny-cpu.yaml"),
        f"model.path={model}",
        f"data.train_path={corpus}",
        f"data.image_root={images}",
        f"trainer.output_dir={out}",
        f"trainer.num_steps={STEPS}",
        "trainer.rollout_batch_size=4",
        "learner.train_batch_size=4",
        "learner.micro_batch_size=2",
        "rollout.max_new_tokens=64",
        "reward.judge=openai",
        f"reward.judge_url={judge_url}",
        "reward.judge_model=judge",
        "reward.judge_retries=0",
        f"timeouts.judge_request_s={JUDGE_TIMEOUT_S}",
        "reward.max_judge_failure_rate=1",  # this judge always fails: train on, counting (test_judge_e2e.py stops)
        # The synchronous and the one-ahead runs compute the same old log-probs (learner), and the gap shows.
        "algo.old_logprobs=learner",
        *overrides,
    ]


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


def _alive(pid: int, created: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _checkpoint_done(out: Path, step: int) -> bool:
    from r1reward.trainer.checkpoint import STATE_FILE

    return (out / "checkpoints" / f"step_{step}" / STATE_FILE).is_file()


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("r1reward train: error:")]


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


def _run_b_killed(command: list[str], out: Path, log: Path) -> dict:
    """Run B: the driver SIGKILLed once step 3 is logged; which of its processes are gone, and when."""
    import psutil

    started = time.time()
    proc = _start(command, log)
    deadline = time.monotonic() + 900
    while 3 not in _steps(out):
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, "run B never logged step 3"
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
    result = {
        "tree": tree,
        "gone": gone,
        "steps_at_kill": _steps(out),
        "checkpoints_at_kill": sorted(p.name for p in (out / "checkpoints").iterdir()),
    }
    # Independent of the snapshot: no vLLM engine process started since B began may outlive B's driver
    # (nothing else starts vLLM while this module runs).
    vllm_deadline = time.monotonic() + 10
    while True:
        result["vllm_left"] = {
            p.pid: p.info["name"]
            for p in psutil.process_iter(["name", "create_time", "status"])
            if (p.info["name"] or "").startswith("VLLM::")
            and p.info["create_time"] >= started
            and p.info["status"] != psutil.STATUS_ZOMBIE
        }
        if not result["vllm_left"] or time.monotonic() > vllm_deadline:
            break
        time.sleep(0.2)
    for pid in [pid for pid in tree if pid not in gone]:  # do not leave them to slow down the next run
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return result


def _run_f_learner_killed_then_stalled(command: list[str], out: Path, log: Path) -> dict:
    """Run F: a learner rank SIGKILLed once the step_KILL_LEARNER_AFTER checkpoint is complete (the next
    step is then running); then the restarted run stalls in the weight sync of step STALL_STEP and ends."""
    import psutil

    proc = _start(command, log)
    deadline = time.monotonic() + 900
    while not _checkpoint_done(out, KILL_LEARNER_AFTER):
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, f"run F never saved step_{KILL_LEARNER_AFTER}"
        time.sleep(0.05)
    tree = psutil.Process(proc.pid).children(recursive=True)
    ranks = [p for p in tree if p.name().startswith("ray::LearnerRank")]
    assert ranks, [p.name() for p in tree]
    ranks[-1].kill()
    killed_at = time.monotonic()
    while "restart 1 of 1" not in log.read_text(errors="replace"):  # the stop line is printed with it
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() - killed_at < 600, "no stop line 600 s after a learner rank was killed"
        time.sleep(0.05)
    detect_s = time.monotonic() - killed_at
    while not _checkpoint_done(out, STALL_STEP - 1) and proc.poll() is None:
        assert time.monotonic() - killed_at < 900, f"the restarted run F never saved step_{STALL_STEP - 1}"
        time.sleep(0.1)
    stall_began = time.monotonic()
    proc.wait(timeout=600)
    return {
        "detect_s": detect_s,
        "after_last_checkpoint_s": time.monotonic() - stall_began,
        "rc": proc.returncode,
        "log": log.read_text(errors="replace"),
    }


@pytest.fixture(scope="module")
def runs(sft_model_dir, synthetic_dir, tmp_path_factory):
    from helpers import write_bad_corpus

    root = tmp_path_factory.mktemp("faults")
    a, b, f = root / "A", root / "B", root / "F"
    result: dict = {"A": a, "B": b, "F": f}
    corpus, result["good_ids"] = write_bad_corpus(synthetic_dir, root / "corpus")
    judge = _BadJudge()
    try:

        def command(out: Path, *overrides: str, stall_sync_step: int = 0) -> list[str]:
            return _command(
                sft_model_dir, corpus, synthetic_dir, judge.url, out, *overrides, stall_sync_step=stall_sync_step
            )

        start = time.monotonic()
        result["log_A"] = _finish(_start(command(a, "trainer.save_every=1"), root / "A.log"), root / "A.log")
        result["time_A"] = time.monotonic() - start
        result["judge_requests"] = judge.requests

        result["B_killed"] = _run_b_killed(
            command(b, "trainer.save_every=2", "trainer.keep_checkpoints=1", "trainer.max_staleness=1"),
            b,
            root / "B.log",
        )

        start = time.monotonic()
        result["F_run"] = _run_f_learner_killed_then_stalled(
            command(
                f,
                "trainer.save_every=1",
                "trainer.keep_checkpoints=1",
                "trainer.max_restarts=1",
                "timeouts.collective_s=60",
                f"timeouts.weight_sync_s={SYNC_TIMEOUT_S}",
                stall_sync_step=STALL_STEP,
            ),
            f,
            root / "F.log",
        )
        result["time_F"] = time.monotonic() - start
    finally:
        judge.close()
    killed, run_f = result["B_killed"], result["F_run"]
    print(
        f"\nfaults: A {result['time_A']:.0f} s, F {result['time_F']:.0f} s; run B's {len(killed['tree'])} "
        f"processes gone {max(killed['gone'].values(), default=0):.2f} s after SIGKILL; F stopped "
        f"{run_f['detect_s']:.1f} s after a learner rank's SIGKILL and ended {run_f['after_last_checkpoint_s']:.0f} s "
        f"after its step_{STALL_STEP - 1} checkpoint (sync timeout {SYNC_TIMEOUT_S:.0f} s); A's reward phase "
        f"{max(r['time/reward'] for r in _rows(a)):.2f} s at most (judge timeout {JUDGE_TIMEOUT_S:.0f} s)"
    )
    return result


# --- B: the driver SIGKILLed -----------------------------------------------------------------------
def test_sigkill_of_the_driver_leaves_no_process_of_the_run(runs):
    killed = runs["B_killed"]
    names = {name for _, name in killed["tree"].values()}
    # The run really had them when it was killed: the local Ray, its workers, the vLLM engine.
    # (Once, on a machine under three concurrent test loads, the snapshot held the engine's processes
    # under other names; the check of vLLM processes below does not depend on the snapshot.)
    assert {"raylet", "gcs_server"} <= names, names
    assert not killed["vllm_left"], f"vLLM processes alive after the driver's SIGKILL: {killed['vllm_left']}"
    assert any(n.startswith("ray::LearnerRank") for n in names) and any(n.startswith("ray::Rollout") for n in names)
    left = {pid: name for pid, (_, name) in killed["tree"].items() if pid not in killed["gone"]}
    assert not left, f"alive {ORPHAN_DEADLINE_S:.0f} s after the driver's SIGKILL: {left}"


def test_a_killed_run_keeps_its_last_complete_checkpoint_only(runs):
    assert runs["B_killed"]["steps_at_kill"][-1] == 3
    # keep_checkpoints=1 keeps step_2 alone; no partial directory is left by the kill.
    assert runs["B_killed"]["checkpoints_at_kill"] == ["step_2"]


def test_one_batch_ahead_step_1_equals_the_synchronous_run_then_samples_are_one_version_behind(runs):
    import math

    rows, sync_rows = _rows(runs["B"]), _rows(runs["A"])
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert all(math.isfinite(v) for v in row.values()), row
        assert 0 <= row["idle/rollout"] <= 1 and 0 <= row["idle/learner"] <= 1
    # Step 1 has nothing generated ahead: the same samples, log-probs and update as the synchronous run A,
    # to the bit, although the workers generate step 2 while the learners train on it.
    same = {k: v for k, v in sync_rows[0].items() if not k.startswith(("time/", "idle/"))}
    assert {k: rows[0][k] for k in same} == same
    # Then every sample (4 a step) comes from the weights one sync behind the learner's...
    assert (rows[0]["staleness/0"], rows[0]["staleness/1"]) == (4, 0)
    for row in rows[1:]:
        assert (row["staleness/0"], row["staleness/1"], row["staleness/dropped"]) == (0, 4, 0), row
    # ...which the log-probs show where the weights moved in between: step 1's update moved them, so
    # the learner disagrees with step 2's sampler; step 2's update was skipped (its loss was NaN), so
    # step 3's samples, one version behind, still match the learner's weights.
    assert rows[0]["logprob_gap/max"] < 1e-3 and rows[2]["logprob_gap/max"] < 1e-3, rows
    assert rows[1]["logprob_gap/max"] > 10 * max(rows[0]["logprob_gap/max"], 1e-4), rows


# --- F: a learner rank SIGKILLed, the restart, then a stalled sync ----------------------------------
def test_a_killed_learner_rank_ends_the_run_naming_role_step_and_checkpoint(runs):
    out, log = runs["F"], runs["F_run"]["log"]
    line = next(line for line in log.splitlines() if "restart 1 of 1" in line)
    step = KILL_LEARNER_AFTER + 1
    assert f"training stopped at step {step}" in line and "learner rank" in line, line
    assert f"resume from {out / 'checkpoints' / f'step_{KILL_LEARNER_AFTER}'} with trainer.resume=true" in line, line
    assert runs["F_run"]["detect_s"] < 120, runs["F_run"]["detect_s"]


def test_the_restart_resumes_from_the_checkpoint_and_equals_the_uninterrupted_run(runs):
    a, f, log = runs["A"], runs["F"], runs["F_run"]["log"]
    assert f"resumed from {f / 'checkpoints' / f'step_{KILL_LEARNER_AFTER}'} at step {KILL_LEARNER_AFTER}" in log
    resumed, uninterrupted = _rows(f), _rows(a)
    # The step after the kill ran twice (killed, then after the restart): it is logged once.
    assert [r["step"] for r in resumed] == list(range(1, STALL_STEP))
    # Same prompts, same sampling seeds, same updates: the rows agree (timings aside).
    for key in ("reward/mean", "reward/format_rate", "loss", "response_length/mean", "nonfinite_skipped"):
        assert [r[key] for r in resumed] == [r[key] for r in uninterrupted[: STALL_STEP - 1]], key
    # Exact, not within a tolerance: fp32 on the CPU, the same kernels and the same order of operations.
    last = f"step_{STALL_STEP - 1}"
    assert weights_sha(f / "checkpoints" / last) == weights_sha(a / "checkpoints" / last)
    assert sorted(p.name for p in (f / "checkpoints").iterdir()) == [last]


def test_tensorboard_holds_each_step_once_after_the_restart(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs["F"] / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("reward/mean")
    assert [e.step for e in events] == list(range(1, STALL_STEP))
    assert [e.value for e in events] == pytest.approx([r["reward/mean"] for r in _rows(runs["A"])][: STALL_STEP - 1])


def test_a_stalled_sync_receiver_ends_the_run_within_the_timeout_naming_the_worker(runs):
    run_f = runs["F_run"]
    lines = _error_lines(run_f["log"])
    assert run_f["rc"] == 2 and len(lines) == 1, run_f["log"][-4000:]
    line = lines[0]
    assert f"training stopped at step {STALL_STEP}" in line, line
    assert "weight sync" in line and "rollout worker 0" in line, line
    last = runs["F"] / "checkpoints" / f"step_{STALL_STEP - 1}"
    assert f"resume from {last} with trainer.resume=true" in line, line
    # The step's generate, score and train, then the sync's timeout, then the shutdown: no hang.
    assert run_f["after_last_checkpoint_s"] < SYNC_TIMEOUT_S + 120, run_f["after_last_checkpoint_s"]


# --- A (and all three): NaN, the bad judge, the bad rows -------------------------------------------
def test_a_nan_loss_or_nan_advantages_skip_the_update_on_every_rank(runs):
    import math

    a = runs["A"]
    sha = {step: weights_sha(a / "checkpoints" / f"step_{step}") for step in range(1, STEPS + 1)}
    # Rank 0's loss is NaN at step 2, one sample's advantages at step 3: the weights do not move...
    assert sha[NAN_LOSS_STEP] == sha[NAN_LOSS_STEP - 1]
    assert sha[NAN_ADVANTAGES_STEP] == sha[NAN_ADVANTAGES_STEP - 1]
    # ...while an ordinary step does.
    assert sha[4] != sha[3] and sha[5] != sha[4]
    rows = {r["step"]: r for r in _rows(a)}
    assert sorted(rows) == list(range(1, STEPS + 1))
    for step, row in rows.items():
        bad = step in (NAN_LOSS_STEP, NAN_ADVANTAGES_STEP)
        # Mean over the two ranks: 1.0 means both skipped their one optimizer step of the step.
        assert row["optimizer_steps_skipped"] == (1.0 if bad else 0.0), (step, row)
        assert row["nonfinite_skipped"] == (1.0 if bad else 0.0), (step, row)
        assert all(math.isfinite(v) for v in row.values()), row  # the NaN is counted, never logged
    assert "per-phase time of the last step" in runs["log_A"]


def test_a_judge_that_hangs_or_answers_garbage_is_counted_and_training_goes_on(runs):
    rows = _rows(runs["A"])
    assert runs["judge_requests"] > 0, "no generation reached the judge: the test would prove nothing"
    # Every request failed (a hang cut at the timeout, or no verdict), and each is counted.
    assert sum(r["reward/judge_failures"] for r in rows) > 0
    for row in rows:  # 4 generations, one round of concurrent requests: at most one timeout per step
        assert row["time/reward"] < JUDGE_TIMEOUT_S + 5, row
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)) and _checkpoint_done(runs["A"], STEPS)


def test_bad_rows_are_skipped_and_reported_by_reason_in_a_real_run(runs):
    from helpers import BAD_KINDS, GOOD_ROWS

    report = json.loads((runs["A"] / "data_report.json").read_text())
    assert report["kept"] == GOOD_ROWS and report["rows"] == GOOD_ROWS + len(BAD_KINDS)
    assert {k: v for k, v in report.items() if k.startswith("skipped/")} == {f"skipped/{k}": 1 for k in BAD_KINDS}
    assert "skipped 8" in runs["log_A"]

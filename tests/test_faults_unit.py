"""Fast fault tests: atomic checkpoints, keep_checkpoints, metrics truncation on resume, safe defaults.

The end-to-end fault tests (real Ray, vLLM, DeepSpeed) are in tests/test_faults.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import BAD_KINDS, GOOD_ROWS, write_bad_corpus
from r1reward.trainer import checkpoint as ckpt
from test_driver_loop import make_trainer  # noqa: F401 - the fake trainer fixture


# --- checkpoints that cannot be half-written ------------------------------------------------------
class _FakeLearners:
    """A LearnerGroup's save: writes what each learner rank writes (a DeepSpeed folder, rank 0 an hf/
    folder); `fail_at` makes rank 1 raise mid-save, after part of the files are on disk, as a full disk
    or a dead rank would."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at

    def save(self, directory: str, tag: str, hf_dir: str) -> list[list[tuple[str, int]]]:
        return [self._save_rank(rank, directory, tag, hf_dir) for rank in (0, 1)]

    def _save_rank(self, rank: int, directory: str, tag: str, hf_dir: str) -> list[tuple[str, int]]:
        fail_at = self.fail_at if rank == 1 else None
        (Path(directory) / tag).mkdir(parents=True, exist_ok=True)
        shard = Path(directory) / tag / f"rank{rank}.pt"
        shard.write_bytes(b"x" * 64)
        if fail_at is not None and tag == f"step_{fail_at}":
            raise OSError(28, "No space left on device")
        if rank == 0:
            Path(hf_dir).mkdir(parents=True, exist_ok=True)
            (Path(hf_dir) / "model.safetensors").write_bytes(tag.encode())
        return [(str(shard), 64)]


class _FakeProcessor:
    def save_pretrained(self, path) -> None:
        (Path(path) / "processor_config.json").write_text("{}")


def _save(out: Path, step: int, fail_at: int | None = None, keep: int = 0) -> Path:
    return ckpt.save_checkpoint(_FakeLearners(fail_at), _FakeProcessor(), out, step, {"samples_seen": step}, keep=keep)


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_latest_and_no_partial(tmp_path):
    _save(tmp_path, 2)
    with pytest.raises(OSError, match="No space left"):
        _save(tmp_path, 4, fail_at=4)
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_2"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]
    state = json.loads((tmp_path / "checkpoints" / "step_2" / ckpt.STATE_FILE).read_text())
    assert state["step"] == 2
    # The run goes on and saves again: the failed step's name is free.
    _save(tmp_path, 4)
    assert ckpt.latest_checkpoint(tmp_path).name == "step_4"
    assert (tmp_path / "checkpoints" / "step_4" / "deepspeed" / "step_4" / "rank1.pt").is_file()


def test_latest_checkpoint_ignores_partial_incomplete_and_foreign_directories(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step_3").mkdir(parents=True)
    (root / "step_3" / ckpt.STATE_FILE).write_text('{"step": 3}')
    (root / ".step_9.partial").mkdir()  # a save killed mid-way (kill -9: nothing cleaned up)
    (root / ".step_9.partial" / ckpt.STATE_FILE).write_text('{"step": 9}')
    (root / "step_7").mkdir()  # an older layout's directory without its trainer state
    (root / "step_8.tmp").mkdir()
    (root / "step_8.tmp" / ckpt.STATE_FILE).write_text('{"step": 8}')
    (root / "step_10").mkdir()
    (root / "step_10" / ckpt.STATE_FILE).write_text('{"step": 10}')
    assert ckpt.latest_checkpoint(tmp_path) == root / "step_10"  # numeric, not lexical, order
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step_3", "step_10"]
    assert ckpt.latest_checkpoint(tmp_path / "nowhere") is None


def test_a_partial_directory_left_by_a_killed_save_is_replaced_by_the_next_save(tmp_path):
    stale = tmp_path / "checkpoints" / ".step_2.partial"
    (stale / "junk").mkdir(parents=True)
    _save(tmp_path, 2)
    assert not stale.exists() and not (tmp_path / "checkpoints" / "step_2" / "junk").exists()


def test_a_resaved_step_replaces_the_old_directory_whole(tmp_path):
    first = _save(tmp_path, 2)
    (first / "stale").write_text("from the first save")
    _save(tmp_path, 2)
    assert not (first / "stale").exists() and (first / ckpt.STATE_FILE).is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]


@pytest.mark.parametrize("keep, left", [(0, [1, 2, 3, 4, 5]), (2, [4, 5]), (1, [5])])
def test_keep_checkpoints_keeps_the_newest(tmp_path, keep, left):
    for step in range(1, 6):
        _save(tmp_path, step, keep=keep)
    assert [int(p.name.split("_")[1]) for p in ckpt.complete_checkpoints(tmp_path)] == left
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [f"step_{s}" for s in left]


def test_a_failed_save_prunes_nothing(tmp_path):
    _save(tmp_path, 1, keep=1)
    with pytest.raises(OSError):
        _save(tmp_path, 2, fail_at=2, keep=1)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step_1"]


def test_keep_checkpoints_is_a_trainer_config_key():
    from r1reward.config import load_config

    config = load_config("configs/tiny-cpu.yaml", ["trainer.keep_checkpoints=3"])
    assert config.trainer.keep_checkpoints == 3
    assert load_config("configs/tiny-cpu.yaml", []).trainer.keep_checkpoints == 0


# --- exact resume, metrics side ---------------------------------------------------------------------
def _scalar_steps(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))  # purge_orphaned_data=True, as TensorBoard reads a run
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_a_resumed_logger_keeps_each_step_once_in_jsonl_and_tensorboard(tmp_path):
    from r1reward.trainer.metrics import MetricsLogger, read_metrics

    first = MetricsLogger(tmp_path, 6)
    for step in range(1, 6):  # steps 1..5 logged, the last checkpoint is step 4, then kill -9
        first.log(step, {"loss": float(step)})
    first.writer.flush()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a row cut short by the kill
    resumed = MetricsLogger(tmp_path, 6, start_step=4)
    for step in (5, 6):
        resumed.log(step, {"loss": 10.0 * step})
    resumed.close()
    first.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 50.0, 60.0]  # the resumed run's step 5
    assert _scalar_steps(tmp_path / "tensorboard", "loss") == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
        (5, 50.0),
        (6, 60.0),
    ]


def test_truncate_metrics_keeps_rows_up_to_the_step(tmp_path):
    from r1reward.trainer.metrics import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3, 3, 4)))
    assert truncate_metrics(path, 2) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    assert truncate_metrics(path, 5) == 0 and truncate_metrics(tmp_path / "absent.jsonl", 0) == 0
    assert truncate_metrics(path, 0) == 2 and path.read_text() == ""


# --- nothing compiled at run time; no silent wait on a build lock -------------------------------
def test_a_stale_build_lock_fails_with_the_lock_file_named_instead_of_waiting_for_ever(tmp_path):
    import subprocess
    import sys

    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.write_text("")  # what a build killed mid-way leaves behind
    code = (
        "import os; os.environ['DS_ACCELERATOR'] = 'cpu'\n"
        "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder\n"
        "from r1reward.learner.ops import bounded_extension_lock\n"
        "with bounded_extension_lock(2.0):\n"
        "    ShareMemCommBuilder().load()\n"
    )
    env = {**__import__("os").environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ExtensionLockTimeout" in proc.stderr and f"rm {lock}" in proc.stderr, proc.stderr[-2000:]


def test_the_lock_wait_is_restored_after_the_block(tmp_path):
    from torch.utils.file_baton import FileBaton

    from r1reward.learner.ops import ExtensionLockTimeout, bounded_extension_lock

    original = FileBaton.wait
    lock = tmp_path / "lock"
    lock.write_text("")
    with bounded_extension_lock(0.2):
        with pytest.raises(ExtensionLockTimeout, match=str(lock)):
            FileBaton(str(lock)).wait()
    assert FileBaton.wait is original


def test_make_env_builds_the_deepspeed_cpu_op_after_the_import_check():
    recipe = Path("Makefile").read_text().split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in recipe.splitlines()]
    check = next(i for i, line in enumerate(lines) if "import torch, torchvision.ops, vllm, ray, deepspeed" in line)
    build = next(i for i, line in enumerate(lines) if "-m r1reward.learner.ops" in line)
    assert check < build < lines.index("touch $(STAMP)") and "DS_ACCELERATOR=cpu" in lines[build]


# --- safe defaults ---------------------------------------------------------------------------------
PACKAGE = Path(__file__).resolve().parents[1] / "r1reward"


def _calls(name: str):
    """(file, ast.Call) for every call of `...name(...)` in the package."""
    import ast

    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    yield path, node


def test_no_remote_code_is_trusted_anywhere():
    import ast

    # No config key asks for remote code, so no call may pass trust_remote_code at all (vLLM and
    # transformers default to False), nor a truthy literal through **kwargs.
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                raise AssertionError(f"{path}:{node.value.lineno} passes trust_remote_code")
            if isinstance(node, ast.Constant) and node.value == "trust_remote_code":
                raise AssertionError(f"{path}:{node.lineno} names trust_remote_code")


def _receiver(call) -> str:
    """`a.b` for a call of `a.b.f(...)`, `a` for `a.f(...)`, "" for `f(...)`."""
    import ast

    func = call.func
    return ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""


def test_checkpoints_are_unpickled_in_one_place_only_and_it_says_they_must_be_trusted():
    # DeepSpeed's load_checkpoint unpickles every rank's state (torch.load, weights_only=False): a
    # crafted checkpoint runs code. The package may reach it from one method, that method through the
    # learner group from trainer/checkpoint.load_checkpoint alone, and nothing else may unpickle.
    import ast

    unsafe = []
    for name in ("load", "loads"):
        for path, call in _calls(name):
            kw = {k.arg: k.value for k in call.keywords}
            receiver = _receiver(call)
            if receiver == "torch" and getattr(kw.get("weights_only"), "value", None) is not True:
                unsafe.append(f"{path}:{call.lineno} torch.{name} without weights_only=True")
            if receiver in ("pickle", "cloudpickle", "dill", "joblib"):
                unsafe.append(f"{path}:{call.lineno} {receiver}.{name}")
            if receiver in ("np", "numpy") and getattr(kw.get("allow_pickle"), "value", None):
                unsafe.append(f"{path}:{call.lineno} {receiver}.{name}(allow_pickle=True)")
    assert not unsafe, unsafe
    deepspeed_loads = [
        (path.relative_to(PACKAGE).as_posix(), call.lineno)
        for path, call in _calls("load_checkpoint")
        if _receiver(call).endswith("engine")  # the DeepSpeed engine's, not the rollout group's safetensors one
    ]
    assert [p for p, _ in deepspeed_loads] == ["learner/worker.py"], deepspeed_loads
    worker = ast.parse((PACKAGE / "learner" / "worker.py").read_text())
    method = next(
        f.name
        for f in ast.walk(worker)
        if isinstance(f, ast.FunctionDef) and f.lineno <= deepspeed_loads[0][1] <= f.end_lineno
    )
    assert method == "load"  # LearnerRank.load, called by LearnerGroup.load
    callers = [path.relative_to(PACKAGE).as_posix() for path, call in _calls("load") if _receiver(call) == "learners"]
    assert callers == ["trainer/checkpoint.py"], callers
    assert "must be trusted" in " ".join(ckpt.__doc__.split())


def test_the_judge_url_comes_from_the_config_only(monkeypatch):
    from r1reward.algo.judges import OpenAIJudge
    from r1reward.config.schema import RewardConfig
    from r1reward.errors import UserError

    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "JUDGE_URL", "R1REWARD_JUDGE_URL"):
        monkeypatch.setenv(var, "http://attacker.invalid:1/v1")
    with pytest.raises(UserError, match="judge_url"):
        OpenAIJudge(RewardConfig(judge="openai", judge_model="m"))
    judge = OpenAIJudge(RewardConfig(judge="openai", judge_model="m", judge_url="http://judge.internal:8000/v1"))
    assert judge.url == "http://judge.internal:8000/v1/chat/completions"
    # The key is read from the variable the config names, and never sent without one.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "Authorization" not in judge.headers


def test_shipped_cluster_files_keep_the_dashboard_local_or_behind_token_auth():
    import yaml

    cluster = PACKAGE.parent / "cluster"
    head = yaml.safe_load((cluster / "ray-cluster.yaml").read_text())["head_start_ray_commands"]
    assert any("--dashboard-host=127.0.0.1" in c for c in head) and not any("0.0.0.0" in c for c in head)
    job = yaml.safe_load((cluster / "rayjob.yaml").read_text())["spec"]["rayClusterSpec"]
    host = job["headGroupSpec"]["rayStartParams"].get("dashboard-host", "127.0.0.1")
    assert host == "127.0.0.1" or job.get("authOptions", {}).get("mode") == "token"
    slurm = (cluster / "slurm.sbatch").read_text()
    start = slurm.index("ray start --head")
    assert "--dashboard-host=127.0.0.1" in slurm[start : start + 400] or (
        "export RAY_AUTH_MODE=token" in slurm[:start] and "export RAY_AUTH_TOKEN" in slurm[:start]
    )


# --- timeouts from the config ---------------------------------------------------------------------
def test_timeouts_have_running_defaults_and_are_validated_at_start_up():
    from r1reward.config.load import ConfigError, load_config

    config = load_config(PACKAGE.parent / "configs" / "tiny-cpu.yaml")
    t = config.timeouts
    assert 0 < t.judge_request_s <= t.weight_sync_s <= t.collective_s <= t.remote_call_s
    assert config.reward.judge_timeout_s == t.judge_request_s  # the judge reads the one timeout section
    for key in ("remote_call_s", "startup_s", "collective_s", "weight_sync_s", "judge_request_s"):
        with pytest.raises(ConfigError, match=f"timeouts.{key}' must be > 0"):
            load_config(None, [f"timeouts.{key}=0"])
    with pytest.raises(ConfigError, match="unknown key 'timeouts.sync_s'"):
        load_config(None, ["timeouts.sync_s=5"])
    assert load_config(None, ["timeouts.judge_request_s=7"]).reward.judge_timeout_s == 7
    # The old key may not disagree with the new one silently.
    with pytest.raises(ConfigError, match="now 'timeouts.judge_request_s'"):
        load_config(None, ["reward.judge_timeout_s=5"])


def test_a_failed_remote_call_is_named_in_one_line_without_rays_traceback():
    from r1reward.waits import error_line

    class TaskError(Exception):  # the shape of ray.exceptions.RayTaskError: the actor's exception in .cause
        def __init__(self, cause: BaseException) -> None:
            super().__init__("ray::LearnerRank.push_weights() (pid=1, ip=127.0.0.1)\n  File ...\nTimeoutError: x")
            self.cause = cause

    error = TaskError(TimeoutError("weight sync update: rollout worker 0 (sync rank 1) did not answer within 5 s"))
    assert (
        error_line(error)
        == "TimeoutError: weight sync update: rollout worker 0 (sync rank 1) did not answer within 5 s"
    )
    assert error_line(RuntimeError("first line\nsecond")) == "RuntimeError: first line"


# --- bad input, counted ---------------------------------------------------------------------------
def test_a_corpus_of_every_bad_row_kind_keeps_exactly_the_good_rows_and_counts_the_rest(synthetic_dir, tmp_path):
    from r1reward.data.dataset import load_preferences

    path, good_ids = write_bad_corpus(synthetic_dir, tmp_path)
    words = lambda record: len((record.question + record.response_1 + record.response_2).split())  # noqa: E731
    records, report = load_preferences(
        path,
        "r1reward-rl",
        image_root=synthetic_dir,
        swap_seed=None,
        max_prompt_tokens=2048,
        token_counter=words,
        verbose=False,
        unique_ids=True,
    )
    assert [r.id for r in records] == good_ids
    assert dict(report.counts) == {kind: 1 for kind in BAD_KINDS}
    assert (report.rows, report.kept) == (GOOD_ROWS + len(BAD_KINDS), GOOD_ROWS)


def test_strict_data_stops_at_the_first_bad_row_naming_file_and_row(synthetic_dir, tmp_path):
    from r1reward.data.dataset import load_preferences
    from r1reward.data.records import DataError

    path, _ = write_bad_corpus(synthetic_dir, tmp_path)
    with pytest.raises(DataError) as info:
        load_preferences(path, "r1reward-rl", image_root=synthetic_dir, strict=True, verbose=False, unique_ids=True)
    assert str(info.value).startswith(f"{path}:{GOOD_ROWS + 1}: image-missing:")
    assert "\n" not in str(info.value)


# --- fault injection from outside (tests/fault_injection.py) --------------------------------------
def test_the_config_has_no_test_only_fault_keys():
    from r1reward.config import load_config
    from r1reward.config.load import ConfigError

    for key in ("debug_nan_loss_step", "debug_nan_advantages_step", "debug_stall_sync_step"):
        with pytest.raises(ConfigError, match=f"unknown key 'trainer.{key}'"):
            load_config(None, [f"trainer.{key}=2"])


class _FakeActor:
    """A Ray actor handle's `__ray_call__`: records which function was sent to which role."""

    def __init__(self, role: str, calls: list) -> None:
        self.__ray_call__ = SimpleNamespace(remote=lambda fn: calls.append((role, fn.__name__)) or (role, fn))


def test_faults_are_wrapped_around_the_step_at_their_step_only(make_trainer, monkeypatch):  # noqa: F811
    import math

    import fault_injection
    from r1reward.trainer.driver import Trainer

    trainer, log = make_trainer(eta=0, steps=5)
    calls: list = []
    monkeypatch.setattr(fault_injection, "wait_all", lambda refs, roles, call, timeout_s: calls.append(roles))
    trainer.learners.ranks = [_FakeActor("learner rank 0", calls), _FakeActor("learner rank 1", calls)]
    trainer.learners.roles = ["learner rank 0", "learner rank 1"]
    trainer.rollout.workers = [_FakeActor("rollout worker 0", calls)]
    seen: dict[int, list[bool]] = {}

    def train(samples):
        seen[len(seen) + 1] = [all(math.isfinite(a) for a in s.advantages) for s in samples]
        calls.append("train")
        return [{"loss": 0.0}]

    trainer.learners.train = train
    faults = fault_injection.Faults(nan_loss_step=2, nan_advantages_step=3, stall_sync_step=4)
    monkeypatch.setattr(Trainer, "train_step", fault_injection.wrap_train_step(Trainer.train_step, faults))
    by_step = []
    for step in range(5):
        calls.clear()
        trainer.train_step(step)
        by_step.append([c for c in calls if isinstance(c, tuple)])
    # Step 2: rank 0 alone is told to poison its next loss, before the update; step 4: worker 0 stalls.
    assert by_step == [
        [],
        [("learner rank 0", "poison_next_loss")],
        [],
        [("rollout worker 0", "stall_next_update")],
        [],
    ]
    # Step 3: one sample's advantages are NaN on their way to the learners, and that step's only.
    assert [row.count(False) for row in seen.values()] == [0, 0, 1, 0, 0] and not seen[3][0]
    assert trainer.learners.train is train  # nothing is left wrapped after its step
    assert [entry[0] for entry in log].count("sync") == 5

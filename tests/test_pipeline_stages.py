"""`r1reward pipeline` without a model: the dry run of the paper's pipeline, the stage records that make
a rerun skip what is done and resume what was interrupted, and the start-up checks. The stages here are
plain functions writing files; tests/test_e2e_pipeline.py runs the real ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1reward.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper-qwen2.5-vl-7b.yaml"
# What loading a model or starting a stage imports (the config itself imports torch, for the algorithms).
HEAVY = ("transformers", "vllm", "ray", "deepspeed")


def dry_run(*overrides: str, config: Path = PAPER) -> tuple[int, str, list[str]]:
    """`r1reward pipeline --dry-run` in a fresh process: (exit code, output, heavy modules it imported)."""
    code = (
        "import sys; from r1reward.cli import main; rc = main(sys.argv[1:]); "
        f"print('IMPORTED', [m for m in {HEAVY!r} if m in sys.modules]); sys.exit(rc)"
    )
    args = ["pipeline", "--config", str(config), "--dry-run", *overrides]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = proc.stdout.splitlines()
    imported = json.loads(lines[-1].removeprefix("IMPORTED ").replace("'", '"')) if lines else None
    return proc.returncode, proc.stdout + proc.stderr, imported


def stage_lines(text: str, stage: str) -> list[str]:
    """The lines of one stage's block in the dry run."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if f"] {stage}: " in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    return lines[start:end]


# --- the dry run ----------------------------------------------------------------------------------
def test_dry_run_of_the_paper_pipeline_starts_rl_and_its_kl_reference_from_the_sft_checkpoint(tmp_path):
    out = tmp_path / "run"
    rc, text, imported = dry_run(f"pipeline.output_dir={out}", "algo.kl_coef=0.001")
    assert rc == 0, text
    assert imported == []  # nothing loaded: the 7B model and the data exist nowhere here
    assert not out.exists()  # nor written
    headers = [line.split(":")[0] for line in text.splitlines() if line.startswith("[")]
    assert headers == ["[1/3] seed-0/sft", "[2/3] seed-0/rl", "[3/3] seed-0/eval"]

    sft_export = f"{out}/seed-0/sft/checkpoints/step_<last>/hf"
    sft = stage_lines(text, "seed-0/sft")
    assert "    in   model.path = Qwen/Qwen2.5-VL-7B-Instruct (a hub id)" in sft
    assert "    in   sft.data_path = data/R1-Reward-SFT/sft.jsonl (not found)" in sft
    assert f"    out  hf = {sft_export}" in sft
    rl = stage_lines(text, "seed-0/rl")
    assert f"    in   model.path = {sft_export} (seed-0/sft's hf)" in rl
    assert any(line.startswith(f"    KL reference: {sft_export} (") for line in rl), rl
    assert "    in   data.train_path = data/R1-Reward-RL/train.parquet (not found)" in rl
    evaluation = stage_lines(text, "seed-0/eval")
    assert f"    in   model = {out}/seed-0/rl/checkpoints/step_<last>/hf (seed-0/rl's hf)" in evaluation
    for name in ("vl-rewardbench", "multimodal-rewardbench", "mm-rlhf-rewardbench"):
        assert any(line.startswith(f"    out  {name} = {out}/seed-0/eval/{name}") for line in evaluation), name


def test_dry_run_without_kl_loads_no_reference_and_lists_unconfigured_benchmarks_as_skipped(tmp_path):
    rc, text, _ = dry_run(f"pipeline.output_dir={tmp_path}", "pipeline.benchmarks.vl_rewardbench.data=")
    assert rc == 0, text
    assert "    KL reference: none (algo.kl_coef=0: no reference model is loaded)" in stage_lines(text, "seed-0/rl")
    evaluation = stage_lines(text, "seed-0/eval")
    assert "    skipped: vl-rewardbench (pipeline.benchmarks.vl_rewardbench.data is not set)" in evaluation
    assert not any("out  vl-rewardbench" in line for line in evaluation)


def test_dry_run_with_annotation_trains_on_the_teachers_sets(tmp_path):
    rc, text, _ = dry_run(f"pipeline.output_dir={tmp_path}", "pipeline.annotate.data=data/pairs.jsonl")
    assert rc == 0, text
    assert stage_lines(text, "annotate")[0].startswith("[1/4] annotate: teacher annotation")
    assert f"    in   sft.data_path = {tmp_path}/annotate/sft.jsonl (annotate's sft)" in stage_lines(text, "seed-0/sft")
    rl = stage_lines(text, "seed-0/rl")
    assert f"    in   data.train_path = {tmp_path}/annotate/rl.parquet (annotate's rl)" in rl


def test_the_demo_is_the_same_command_with_a_source_and_hard_example_stage(tmp_path):
    rc, text, imported = dry_run(f"pipeline.output_dir={tmp_path}", config=ROOT / "configs" / "pipeline-tiny.yaml")
    assert rc == 0 and imported == [], text
    headers = [line.split(":")[0] for line in text.splitlines() if line.startswith("[")]
    assert headers == [f"[{n}/5] seed-0/{kind}" for n, kind in enumerate(["source", "sft", "hard", "rl", "eval"], 1)]
    rl = stage_lines(text, "seed-0/rl")
    assert f"    in   data.train_path = {tmp_path}/seed-0/data/hard.parquet (seed-0/hard's hard)" in rl
    assert f"    in   model.path = {tmp_path}/seed-0/sft/checkpoints/step_<last>/hf (seed-0/sft's hf)" in rl


# --- the configuration ----------------------------------------------------------------------------
def test_the_paper_recipe_runs_the_paper_pipeline_on_real_data():
    c = load_config(PAPER)
    assert (c.pipeline.source, c.pipeline.hard_examples) == ("data", "none")
    assert (c.pipeline.annotate.teacher_model, c.pipeline.annotate.tries) == ("gpt-4o", 3)
    assert c.pipeline.annotate.data is None  # the SFT and RL sets are given, not annotated here
    assert all(getattr(c.pipeline.benchmarks, name).data for name in vars(c.pipeline.benchmarks))


def test_every_benchmark_of_eval_has_a_pipeline_entry():
    from r1reward.config.schema import BenchmarksConfig
    from r1reward.eval.benchmarks import BENCHMARKS
    from r1reward.trainer.pipeline import key_of

    assert {key_of(name) for name in BENCHMARKS} == set(vars(BenchmarksConfig()))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pipeline.annotate.data=x.jsonl"], "pipeline.annotate.data is read with pipeline.source=data only"),
        (
            ["pipeline.source=data", "pipeline.annotate.data=x.jsonl"],
            "the teacher needs 'pipeline.annotate.teacher_url'",
        ),
        (["pipeline.seeds=[0,0]"], "pipeline.seeds must be distinct"),
        (["pipeline.seeds=[]"], "pipeline.seeds must name at least one seed"),
        (["pipeline.source=files"], "'pipeline.source' is 'files'"),
    ],
)
def test_a_pipeline_that_cannot_run_is_refused_in_one_line(tmp_path, overrides, message, capsys):
    from r1reward.cli import main

    assert main(["pipeline", "--dry-run", f"pipeline.output_dir={tmp_path}/p", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_missing_input_stops_the_run_before_any_stage(tmp_path, capsys):
    from r1reward.cli import main

    out = tmp_path / "run"
    assert main(["pipeline", "--config", str(PAPER), f"pipeline.output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "r1reward pipeline: error: sft.data_path not found: data/R1-Reward-SFT/sft.jsonl (read by stage seed-0/sft)"
    )
    assert not out.exists()


def test_which_changes_rerun_which_stages():
    """A stage's settings hold what its result depends on: a changed value reruns that stage (and, through
    its outputs, the later ones), and only that stage; where and how a run writes reruns nothing."""
    from r1reward.trainer.pipeline import build_stages

    def settings(*overrides: str) -> dict:
        config = load_config(PAPER, ["pipeline.source=data", "pipeline.annotate.data=pairs.jsonl", *overrides])
        return {stage.id: stage.settings for stage in build_stages(config)}

    base = settings()
    assert list(base) == ["annotate", "seed-0/sft", "seed-0/rl", "seed-0/eval"]

    def changed(*overrides: str) -> list[str]:
        other = settings(*overrides)
        return [stage for stage in base if other[stage] != base[stage]]

    assert changed("trainer.num_steps=10") == ["seed-0/rl"]
    assert changed("sft.lr=2e-5") == ["seed-0/sft"]
    assert changed("learner.num_ranks=8") == ["seed-0/sft", "seed-0/rl"]
    assert changed("pipeline.annotate.tries=4") == ["annotate"]
    assert changed("pipeline.benchmarks.vl_rewardbench.image_root=/elsewhere") == ["seed-0/eval"]
    assert changed("rollout.num_workers=8") == ["seed-0/rl", "seed-0/eval"]
    quiet = ("pipeline.annotate.concurrency=2", "pipeline.annotate.api_key_env=KEY", "trainer.output_dir=/x")
    assert changed(*quiet, "sft.output_dir=/y", "trainer.max_restarts=2", "timeouts.startup_s=9") == []


def test_a_resumed_sft_or_rl_stage_continues_from_its_checkpoint_only_if_it_saved_one(tmp_path):
    from r1reward.config.schema import Config
    from r1reward.trainer.pipeline import own_dir

    directory = tmp_path / "rl"
    assert own_dir("trainer", directory, resume=True)["trainer__resume"] is False  # nothing saved yet: afresh
    state = directory / "checkpoints" / "step_1" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"step": 1}))
    assert own_dir("trainer", directory, resume=True) == {
        "trainer__output_dir": directory,
        "trainer__overwrite": False,
        "trainer__resume": True,
    }
    assert own_dir("sft", directory)["sft__overwrite"] is True  # a stage that runs afresh starts over
    assert Config().sft.resume is False


def test_the_machine_names_the_cpu_model_read_from_cpuinfo(tmp_path):
    """Two CPUs of the same capability can train the tiny model differently: results name the model."""
    from r1reward.trainer.pipeline import cpu_model, machine

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD  EPYC\x1b[31m 9654\nflags\t: avx2\n" * 2)
    assert cpu_model(str(info)) == "AMD EPYC[31m 9654"  # control bytes dropped, spaces collapsed
    info.write_text("model name\t: " + "x" * 500 + "\n")
    assert len(cpu_model(str(info))) == 80
    assert cpu_model(str(tmp_path / "absent")) != ""  # platform's answer, or "unknown"
    assert machine()["cpu_model"] == cpu_model()

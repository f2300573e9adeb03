"""One output directory, one run: a fresh run refuses a directory that holds another run, `overwrite`
clears it first, `resume` continues it; every checkpoint names its run, and a run prunes and restarts
from its own checkpoints only. No Ray: the driver's set-up runs with its actors replaced by fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import r1reward.trainer.driver as driver
from r1reward.config import ConfigError, load_config
from r1reward.config.schema import Config
from r1reward.errors import UserError
from r1reward.trainer import checkpoint as ckpt
from r1reward.trainer.metrics import read_metrics


class _Learners:
    """A LearnerGroup's save and load: the files a save leaves, the checkpoints a load restores."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def save(self, directory: str, tag: str, hf_dir: str) -> list[list[tuple[str, int]]]:
        (Path(directory) / tag).mkdir(parents=True)
        Path(hf_dir).mkdir(parents=True)
        return [[]]  # one rank that wrote no files

    def load(self, directory: str, tag: str) -> None:
        self.loaded.append(Path(directory).parent)

    def close(self) -> None:
        pass


class _Processor:
    def save_pretrained(self, path) -> None:
        (Path(path) / "processor_config.json").write_text("{}")


def _save(out: Path, step: int, run_id: str | None, keep: int = 0) -> Path:
    return ckpt.save_checkpoint(_Learners(), _Processor(), out, step, {}, keep=keep, run_id=run_id)


def _earlier_run(out: Path, steps=(50, 100), run_id: str = "earlier") -> None:
    """What another run left in `out`: its checkpoints, metrics, TensorBoard events and config."""
    for step in steps:
        _save(out, step, run_id)
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 101)))
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1").write_bytes(b"x")
    (out / "config.json").write_text('{"earlier": true}')


# --- checkpoints name their run ------------------------------------------------------------------
def test_a_checkpoint_records_its_run_id_and_latest_can_ask_for_one_run(tmp_path):
    _save(tmp_path, 100, "x")
    _save(tmp_path, 2, "y")
    state = json.loads((tmp_path / "checkpoints" / "step_2" / ckpt.STATE_FILE).read_text())
    assert state["run_id"] == "y" and ckpt.checkpoint_run_id(tmp_path / "checkpoints" / "step_100") == "x"
    assert ckpt.latest_checkpoint(tmp_path).name == "step_100"
    assert ckpt.latest_checkpoint(tmp_path, run_id="y").name == "step_2"
    assert ckpt.latest_checkpoint(tmp_path, run_id="z") is None


@pytest.mark.parametrize("keep", [1, 2])
def test_pruning_keeps_the_checkpoint_just_written_and_other_runs_checkpoints(tmp_path, keep):
    _save(tmp_path, 100, "earlier")  # another run's, at a higher step than any of this run's
    for step in (1, 2, 3):
        written = _save(tmp_path, step, "this", keep=keep)
        assert written.is_dir()
    left = [p.name for p in ckpt.complete_checkpoints(tmp_path)]
    assert left == [f"step_{s}" for s in (1, 2, 3)[-keep:]] + ["step_100"]


# --- the start-up decision: refuse, overwrite, resume --------------------------------------------
def test_a_fresh_run_refuses_a_directory_with_checkpoints_in_one_line_naming_the_ways_out(tmp_path):
    _earlier_run(tmp_path)
    with pytest.raises(UserError) as refused:
        ckpt.claim_output_dir(tmp_path, resume=False, overwrite=False, section="trainer")
    line = str(refused.value)
    assert "\n" not in line and str(tmp_path) in line and "step_100" in line, line
    assert "trainer.resume=true" in line and "trainer.overwrite=true" in line, line
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 100  # nothing was touched


def test_a_fresh_run_refuses_metrics_left_by_a_run_that_saved_no_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(UserError, match=r"metrics\.jsonl.*sft\.resume=true.*sft\.overwrite=true"):
        ckpt.claim_output_dir(tmp_path, resume=False, overwrite=False, section="sft")
    run_id, resume_from = ckpt.claim_output_dir(tmp_path / "new", resume=False, overwrite=False, section="sft")
    assert run_id and resume_from is None  # an empty or absent directory is fine


def test_overwrite_deletes_the_earlier_runs_record_and_keeps_other_files(tmp_path):
    _earlier_run(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    run_id, resume_from = ckpt.claim_output_dir(tmp_path, resume=False, overwrite=True, section="trainer")
    assert run_id != "earlier" and resume_from is None
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "logs").is_dir() and (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_continues_the_latest_checkpoints_run_and_a_restart_its_own(tmp_path):
    _save(tmp_path, 4, "earlier")
    run_id, resume_from = ckpt.claim_output_dir(tmp_path, resume=True, overwrite=False, section="trainer")
    assert (run_id, resume_from) == ("earlier", tmp_path / "checkpoints" / "step_4")
    _save(tmp_path, 100, "other")
    mine = ckpt.claim_output_dir(tmp_path, resume=True, overwrite=False, section="trainer", run_id="earlier")
    assert mine == ("earlier", tmp_path / "checkpoints" / "step_4")


def test_resume_and_overwrite_together_are_refused_at_load():
    for section in ("trainer", "sft"):
        with pytest.raises(ConfigError, match=rf"{section}\.resume.*{section}\.overwrite"):
            load_config("configs/tiny-cpu.yaml", [f"{section}.resume=true", f"{section}.overwrite=true"])
    assert load_config("configs/tiny-cpu.yaml", ["trainer.overwrite=true"]).trainer.overwrite is True


# --- the driver: the decision comes before any actor, and a restart keeps to its own run ---------
@pytest.fixture
def fake_actors(monkeypatch):
    """Trainer.setup with its data, Ray and actors replaced: records what started and what was loaded."""
    import r1reward.placement.ray_init as ray_init

    started: list[str] = []

    def load_data(self) -> None:
        started.append("data")
        self.processor = _Processor()

    def start_actors(self) -> None:
        started.append("actors")
        self.learners = _Learners()

    monkeypatch.setattr(driver.Trainer, "_load_data", load_data)
    monkeypatch.setattr(driver.Trainer, "_start_actors", start_actors)
    monkeypatch.setattr(driver.Trainer, "_sync_weights", lambda self, step=None: None)
    monkeypatch.setattr(driver, "start_guard", lambda: None)
    monkeypatch.setattr(ray_init, "ensure_ray", lambda config, logs: started.append("ray"))
    return started


def _config(out: Path, **trainer) -> Config:
    config = Config()
    config.trainer.output_dir, config.trainer.keep_checkpoints = str(out), 1
    for key, value in trainer.items():
        setattr(config.trainer, key, value)
    return config


def test_train_refuses_a_used_directory_before_anything_starts(tmp_path, fake_actors):
    _earlier_run(tmp_path)
    with pytest.raises(UserError, match="trainer.overwrite=true"):
        driver.train(_config(tmp_path))
    assert fake_actors == [] and (tmp_path / "config.json").read_text() == '{"earlier": true}'


def test_overwrite_clears_the_directory_before_the_actors_start(tmp_path, fake_actors, monkeypatch):
    _earlier_run(tmp_path)
    seen = []
    monkeypatch.setattr(driver.Trainer, "fit", lambda self: seen.append(ckpt.complete_checkpoints(tmp_path)) or {})
    driver.train(_config(tmp_path, overwrite=True))
    assert fake_actors == ["data", "ray", "actors"] and seen == [[]]


@pytest.mark.parametrize("own_checkpoint", [True, False])
def test_the_restart_resumes_from_its_own_runs_checkpoint_only(tmp_path, fake_actors, monkeypatch, own_checkpoint):
    """Two runs started into one empty directory at once both pass the start-up check; when one stops,
    its restart must not pick up the other's (later) checkpoint."""
    runs: list[dict] = []

    def fit(self):
        runs.append({"resume": self.config.trainer.resume, "loaded": list(self.learners.loaded), "step": self.step})
        if len(runs) == 1:
            if own_checkpoint:
                self.save_checkpoint(2)
            _save(tmp_path, 100, "the other run")
            raise driver.RunStopped("training stopped at step 3: learner rank 1 died")
        return {"step": self.step}

    monkeypatch.setattr(driver.Trainer, "fit", fit)
    config = _config(tmp_path, max_restarts=1)
    if not own_checkpoint:  # nothing of its own to resume from: the run ends with its stop line
        with pytest.raises(driver.RunStopped):
            driver.train(config)
        assert len(runs) == 1
        return
    result = driver.train(config)
    assert result["restarts"] == 1
    assert runs[1] == {"resume": True, "loaded": [tmp_path / "checkpoints" / "step_2"], "step": 2}
    assert (tmp_path / "checkpoints" / "step_100").is_dir()  # not this run's to prune


# --- SFT and the pipeline's stages ---------------------------------------------------------------
def test_sft_refuses_a_used_directory_before_it_loads_anything(tmp_path):
    from r1reward.trainer.sft import SFTTrainer

    out, data = tmp_path / "sft", tmp_path / "sft.jsonl"
    data.write_text("")
    _earlier_run(out)
    config = Config()
    config.sft.output_dir, config.sft.data_path, config.model.path = str(out), str(data), "not-loaded"
    with pytest.raises(UserError, match=r"sft\.resume=true.*sft\.overwrite=true"):
        SFTTrainer(config).setup()
    assert len(ckpt.complete_checkpoints(out)) == 2


@pytest.mark.parametrize("section", ["sft", "trainer"])
def test_a_pipeline_stage_reruns_into_its_own_directory(tmp_path, section):
    """A pipeline stage that runs afresh (new, or an input or setting changed) owns its directory: the
    earlier run's checkpoints there are deleted, not refused and never resumed from."""
    from r1reward.config import override
    from r1reward.trainer.pipeline import own_dir

    _earlier_run(tmp_path / section)
    stage = getattr(override(Config(), **own_dir(section, tmp_path / section)), section)
    assert stage.output_dir == str(tmp_path / section)
    run_id, resume_from = ckpt.claim_output_dir(
        stage.output_dir, resume=stage.resume, overwrite=stage.overwrite, section=section
    )
    assert resume_from is None and ckpt.complete_checkpoints(tmp_path / section) == []

"""The stage records of `r1reward pipeline` (r1reward/trainer/stages.py) on stages that are plain
functions writing files: a rerun skips what is done and changes no file, a changed input or setting
reruns that stage and the later ones, an interrupted stage resumes, a removed output is made again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


class Chain:
    """Three stages a -> b -> c of plain functions: each reads its input file and appends a line to its
    output; `calls` lists (stage, resume) per call; `fail` names a stage that raises once."""

    def __init__(self, root: Path, setting: int = 1) -> None:
        from r1reward.trainer.stages import From, Stage

        self.root, self.calls, self.fail = root, [], None
        self.source = root / "source.txt"
        out = root / "out"

        def stage(name: str, source, settings: dict) -> Stage:
            target = out / name / "result.txt"

            def run(ctx):
                self.calls.append((name, ctx.resume))
                if self.fail == name:
                    self.fail = None
                    raise RuntimeError(f"{name} was killed")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(Path(ctx.inputs["in"]).read_text() + f"{name}\n")
                return {"results": {"lines": len(target.read_text().splitlines())}}

            return Stage(name, f"stage {name}", {"in": source}, {"result": str(target)}, settings, run)

        self.stages = [
            stage("a", str(self.source), {"x": 1}),
            stage("b", From("a", "result"), {"y": setting}),
            stage("c", From("b", "result"), {}),
        ]
        self.out = out

    def run(self) -> dict:
        from r1reward.trainer.stages import run_stages

        return run_stages(self.stages, self.out, say=lambda text: None)

    def files(self) -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in sorted(self.out.rglob("*")) if p.is_file()}


def test_a_rerun_skips_finished_stages_and_touches_nothing(tmp_path):
    chain = Chain(tmp_path)
    chain.source.write_text("data\n")
    records = chain.run()
    assert chain.calls == [("a", False), ("b", False), ("c", False)]
    assert records["c"]["results"] == {"lines": 4} and records["c"]["status"] == "done"
    assert json.loads((chain.out / "stages" / "b.json").read_text())["outputs"] == {
        "result": str(chain.out / "b" / "result.txt")
    }
    before = chain.files()
    chain.calls.clear()
    again = chain.run()
    assert chain.calls == [] and again == records
    assert chain.files() == before  # no record, no output rewritten


def test_a_changed_input_or_setting_reruns_that_stage_and_the_later_ones(tmp_path):
    chain = Chain(tmp_path)
    chain.source.write_text("data\n")
    chain.run()
    a_output = (chain.out / "a" / "result.txt").stat().st_mtime_ns
    changed = Chain(tmp_path, setting=2)  # b's settings differ
    changed.run()
    assert changed.calls == [("b", False), ("c", False)]
    assert (chain.out / "a" / "result.txt").stat().st_mtime_ns == a_output
    changed.calls.clear()
    chain.source.write_text("other data\n")  # a's input file
    changed.run()
    assert changed.calls == [("a", False), ("b", False), ("c", False)]
    assert (chain.out / "c" / "result.txt").read_text() == "other data\na\nb\nc\n"


def test_an_interrupted_stage_resumes_and_a_removed_output_is_made_again(tmp_path):
    chain = Chain(tmp_path)
    chain.source.write_text("data\n")
    chain.fail = "b"
    with pytest.raises(RuntimeError, match="b was killed"):
        chain.run()
    assert json.loads((chain.out / "stages" / "b.json").read_text())["status"] == "running"
    assert not (chain.out / "stages" / "c.json").exists()
    chain.calls.clear()
    chain.run()
    assert chain.calls == [("b", True), ("c", False)]  # a stays done; b continues; c runs for the first time
    chain.calls.clear()
    (chain.out / "b" / "result.txt").unlink()
    chain.run()
    assert chain.calls == [("b", False), ("c", False)]


def test_the_plan_says_what_a_run_would_do_without_running_anything(tmp_path):
    from r1reward.trainer.stages import DONE, RESUME, RUN, plan

    chain = Chain(tmp_path)
    chain.source.write_text("data\n")
    assert [state for _, state, _ in plan(chain.stages, chain.out)] == [RUN, RUN, RUN]
    chain.fail = "b"
    with pytest.raises(RuntimeError):
        chain.run()
    rows = plan(chain.stages, chain.out)
    assert [state for _, state, _ in rows] == [DONE, RESUME, RUN]
    assert rows[2][2] == {"in": str(chain.out / "b" / "result.txt")}  # b's declared output
    assert chain.calls == [("a", False), ("b", False)]


def test_records_are_written_whole(tmp_path):
    from r1reward.trainer.stages import read_record, write_record

    path = tmp_path / "stages" / "seed-0" / "sft.json"
    write_record(path, {"status": "done"})
    assert read_record(path) == {"status": "done"} and os.listdir(path.parent) == ["sft.json"]
    path.write_text('{"status": "do')  # cut short: not done
    assert read_record(path) is None

"""`r1reward select-hard`: the paper's rule (`--rule teacher-tries`, the default: pairs the teacher needed
2+ tries for or failed, from `r1reward annotate`'s records) and the project's (`--rule model-samples`)."""

from __future__ import annotations

import pytest

from r1reward.cli import build_parser, main
from r1reward.data.dataset import load_preferences
from r1reward.data.jsonl import write_jsonl
from r1reward.errors import UserError
from r1reward.trainer.hard_examples import select_by_teacher_tries
from test_annotate import write_pairs

TRIES = {0: 1, 1: 2, 2: None, 3: 3, 4: 1, 5: None}


def annotations(tries: dict[int, int | None], flip: int | None = None) -> list[dict]:
    return [
        {"id": f"pair-{i}", "label": (1 + i % 2) if i != flip else 2 - i % 2, "model": "m", "tries": t, "traces": []}
        for i, t in tries.items()
    ]


def test_teacher_tries_keeps_the_pairs_with_two_or_more_tries_or_failed(tmp_path):
    records, _ = load_preferences(write_pairs(tmp_path, 6), "canonical", swap_seed=None, verbose=False)
    kept = select_by_teacher_tries(records, {a["id"]: a for a in annotations(TRIES)}, "here")
    assert [r.id for r in kept] == ["pair-1", "pair-2", "pair-3", "pair-5"]


def test_teacher_tries_refuses_unannotated_pairs_and_another_response_order(tmp_path):
    records, _ = load_preferences(write_pairs(tmp_path, 6), "canonical", swap_seed=None, verbose=False)
    partial = {a["id"]: a for a in annotations({0: 1, 1: 2})}
    with pytest.raises(UserError, match="4 of 6 pairs have no annotation in here"):
        select_by_teacher_tries(records, partial, "here")
    with pytest.raises(UserError, match="'pair-3' has label"):
        select_by_teacher_tries(records, {a["id"]: a for a in annotations(TRIES, flip=3)}, "here")


def test_the_command_defaults_to_the_papers_rule(tmp_path, capsys):
    data = write_pairs(tmp_path, 6)
    (tmp_path / "annotated").mkdir()
    write_jsonl(annotations(TRIES), tmp_path / "annotated" / "annotations.jsonl")
    out = tmp_path / "hard.parquet"
    args = ["select-hard", "--data", str(data), "--schema", "canonical", "--out", str(out)]
    assert main([*args, "--annotations", str(tmp_path / "annotated")]) == 0
    hard, _ = load_preferences(out, "r1reward-rl", swap_seed=None, verbose=False)
    assert [r.question for r in hard] == ["question 1", "question 2", "question 3", "question 5"]
    assert "kept 4 of 6 pairs" in capsys.readouterr().out

    assert main(args) == 2  # the default rule needs the annotations
    assert "--rule teacher-tries needs --annotations" in capsys.readouterr().err
    assert main([*args, "--rule", "model-samples"]) == 2  # the project's rule needs a model
    assert "--rule model-samples needs --model" in capsys.readouterr().err


def test_help_names_the_papers_rule_and_the_projects():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["select-hard"]
    rule = next(a for a in sub._actions if a.dest == "rule")
    assert rule.default == "teacher-tries" and rule.choices == ["teacher-tries", "model-samples"]
    assert "the paper's" in rule.help and "the project's own" in rule.help


def test_teacher_tries_accepts_pairs_annotate_asked_in_the_other_order(tmp_path):
    records, _ = load_preferences(write_pairs(tmp_path, 6), "canonical", swap_seed=None, verbose=False)
    entries = {a["id"]: a for a in annotations(TRIES)}
    entries["pair-3"] = {**entries["pair-3"], "label": 1, "swapped": True}  # file label 2, asked swapped
    assert [r.id for r in select_by_teacher_tries(records, entries, "here")] == ["pair-1", "pair-2", "pair-3", "pair-5"]

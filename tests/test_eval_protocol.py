"""`r1reward eval --protocol default|released`: resolving the settings (a pure function of the flags
and the checkpoint's generation_config.json), the chosen-first reordering, and one-line errors."""

from __future__ import annotations

import json

import pytest

from r1reward.cli import main
from r1reward.data.records import PreferenceRecord
from r1reward.errors import UserError
from r1reward.eval.benchmarks import BenchmarkRow
from r1reward.eval.protocol import EvalSettings, resolve_protocol
from r1reward.eval.runner import EvalOptions, chosen_first


def checkpoint(tmp_path, generation_config: dict | str | None):
    if generation_config is not None:
        text = generation_config if isinstance(generation_config, str) else json.dumps(generation_config)
        (tmp_path / "generation_config.json").write_text(text)
    return tmp_path


def test_default_is_todays_settings_and_flags_win(tmp_path):
    assert resolve_protocol("default", None) == EvalSettings(
        1.0, 1.0, 0, 1024, False, chosen_first=False, image_first=False
    )
    settings = resolve_protocol("default", None, temperature=0.0, max_tokens=77, swap=True)
    assert (settings.temperature, settings.max_tokens, settings.swap) == (0.0, 77, True)


def test_released_is_greedy_when_the_checkpoint_does_not_sample(tmp_path):
    model = checkpoint(tmp_path, {"do_sample": False, "temperature": 0.7, "top_p": 0.8})
    assert resolve_protocol("released", model) == EvalSettings(
        0.0, 1.0, 0, 4096, False, chosen_first=True, image_first=True
    )


def test_released_takes_the_checkpoints_sampling_values(tmp_path):
    # Qwen2.5-VL-7B-Instruct's own file samples with a near-greedy configuration like this one.
    model = checkpoint(
        tmp_path, {"do_sample": True, "temperature": 0.1, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.05}
    )
    settings = resolve_protocol("released", model)
    assert (settings.temperature, settings.top_p, settings.top_k, settings.max_tokens) == (0.1, 0.001, 1, 4096)
    assert settings.chosen_first and settings.image_first and not settings.swap
    # transformers' defaults fill what the file leaves out; explicit flags still win.
    model = checkpoint(tmp_path, {"do_sample": True})
    settings = resolve_protocol("released", model)
    assert (settings.temperature, settings.top_p, settings.top_k) == (1.0, 1.0, 50)
    settings = resolve_protocol("released", model, temperature=1.0, max_tokens=512)
    assert (settings.temperature, settings.max_tokens) == (1.0, 512)


def test_released_without_a_generation_config_is_greedy(tmp_path):
    assert resolve_protocol("released", checkpoint(tmp_path, None)).temperature == 0.0


@pytest.mark.parametrize(
    "model, message",
    [
        (None, "pass --model"),
        ("bad-json", "cannot read"),
        ("bad-value", "bad sampling value"),
    ],
)
def test_released_errors_are_one_line(tmp_path, model, message):
    if model == "bad-json":
        model = checkpoint(tmp_path, "{not json")
    elif model == "bad-value":
        model = checkpoint(tmp_path, {"do_sample": True, "temperature": "warm"})
    with pytest.raises(UserError, match=message) as err:
        resolve_protocol("released", model)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="--protocol"):
        resolve_protocol("greedy", None)


def test_chosen_first_reorders_label_2_pairs():
    record = PreferenceRecord("a", "q", [], "worse", "better", 2)
    rows = [
        BenchmarkRow(0, "a", "general", 2, record),
        BenchmarkRow(1, "b", "general", 1, record.swapped()),
        BenchmarkRow(2, "c", "other", 0, None, "bad-label: x"),
    ]
    out = chosen_first(rows)
    assert [(r.label, r.record.response_1 if r.record else None) for r in out] == [
        (1, "better"),
        (1, "better"),
        (0, None),
    ]
    assert out[0].index == 0 and out[0].category == "general"


def test_eval_command_stops_on_a_bad_generation_config_in_one_line(tmp_path, capsys):
    model = checkpoint(tmp_path, "{broken")
    data = tmp_path / "data.jsonl"
    data.write_text("")
    code = main(
        [
            "eval",
            "--benchmark",
            "vl-rewardbench",
            "--data",
            str(data),
            "--model",
            str(model),
            "--protocol",
            "released",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "generation_config.json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_eval_command_passes_the_protocol_and_leaves_unset_flags_to_it(monkeypatch, tmp_path):
    import r1reward.eval.runner as runner

    seen = {}

    def fake_run_eval(options: EvalOptions) -> dict:
        seen["options"] = options
        return {"benchmark": options.benchmark, "overall": 1.0, "correct": 1, "evaluated": 1, "macro": 1.0}

    monkeypatch.setattr(runner, "run_eval", fake_run_eval)
    assert (
        main(
            [
                "eval",
                "--benchmark",
                "multimodal-rewardbench",
                "--data",
                "d.json",
                "--model",
                "m",
                "--protocol",
                "released",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    options = seen["options"]
    assert options.protocol == "released" and options.temperature is None and options.max_tokens is None


QWEN_LIKE = {"do_sample": True, "temperature": 0.1, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.05}


def test_released_with_a_temperature_refuses_a_cut_to_one_token(tmp_path):
    model = checkpoint(tmp_path, QWEN_LIKE)
    with pytest.raises(UserError, match="top_k=1, top_p=0.001, so every sample would be the greedy") as err:
        resolve_protocol("released", model, temperature=1.0)
    assert "\n" not in str(err.value)
    # The checkpoint's own near-greedy setting, without --temperature, stays as the released scripts use it.
    assert resolve_protocol("released", model).top_k == 1
    # Saying how to sample is enough: the flags win.
    settings = resolve_protocol("released", model, temperature=1.0, top_p=1.0, top_k=0)
    assert (settings.temperature, settings.top_p, settings.top_k) == (1.0, 1.0, 0)
    assert resolve_protocol("released", model, temperature=0.7, top_k=20).top_k == 20
    # A checkpoint that does not cut samples at the given temperature as before.
    settings = resolve_protocol("released", checkpoint(tmp_path, {"do_sample": False}), temperature=1.0)
    assert (settings.temperature, settings.top_p, settings.top_k) == (1.0, 1.0, 0)


def test_eval_refuses_degenerate_votes_before_loading_anything(tmp_path, capsys):
    model = checkpoint(tmp_path, QWEN_LIKE)
    args = ["eval", "--benchmark", "vl-rewardbench", "--data", str(tmp_path / "none.jsonl"), "--model", str(model),
            "--protocol", "released", "--temperature", "1.0", "--k", "4", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--top-k 0 --top-p 1.0" in err[0]
    assert main([*args, "--top-k", "-1"]) == 2
    assert "--top-k must be >= 0" in capsys.readouterr().err

"""Bad input stops an evaluation before any model is loaded; skipping is explicit and counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from helpers import placeholder_images, run_cli
from r1reward.errors import UserError
from r1reward.eval.runner import EvalOptions, prepare_rows, run_eval
from r1reward.eval.score import load_pairs

NO_MODEL = "/nonexistent/model"  # loading it would fail with another message: proves nothing was loaded


def test_missing_images_stop_before_the_model_loads(tmp_path, benchmarks_dir):
    data = benchmarks_dir / "vl_rewardbench.jsonl"
    options = EvalOptions(
        "vl-rewardbench", str(data), str(tmp_path / "out"), model=NO_MODEL, image_root=str(tmp_path), limit=24
    )
    with pytest.raises(UserError) as info:
        run_eval(options)
    message = str(info.value)
    assert message.startswith(
        "24 of 24 rows cannot be evaluated (image-missing 24); first ids: "
        "'hallucination_pair-1003', 'hallucination_pair-10032'"
    )
    assert "--skip-missing-images" in message and "\n" not in message
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_a_few_missing_images_are_named(tmp_path, benchmarks_dir):
    data = benchmarks_dir / "vl_rewardbench.jsonl"
    missing = placeholder_images(tmp_path, data, limit=24, leave_out=2)
    options = EvalOptions(
        "vl-rewardbench", str(data), str(tmp_path / "out"), model=NO_MODEL, image_root=str(tmp_path), limit=24
    )
    with pytest.raises(UserError, match=r"^2 of 24 rows cannot be evaluated \(image-missing 2\)") as info:
        prepare_rows(options)
    assert all(repr(i) in str(info.value) for i in missing)
    options.skip_missing_images = True
    rows = prepare_rows(options)
    assert [r.id for r in rows if r.problem] == missing and len(rows) == 24
    assert all(Path(r.record.images[0]).is_file() for r in rows if not r.problem)


def test_mm_rlhf_video_rows_without_their_videos_need_skipping(tmp_path, benchmarks_dir, capsys):
    data = benchmarks_dir / "mm_rlhf_rewardbench.jsonl"
    placeholder_images(tmp_path, data)
    options = EvalOptions("mm-rlhf-rewardbench", str(data), str(tmp_path / "out"), image_root=str(tmp_path))
    with pytest.raises(UserError, match=r"^25 of 170 rows cannot be evaluated \(video-missing 25\)") as info:
        prepare_rows(options)
    assert "--skip-missing-images" in str(info.value) and "\n" not in str(info.value)
    options.skip_missing_images = True
    rows = prepare_rows(options)
    assert len(rows) == 170 and sum(bool(r.problem) for r in rows) == 25
    assert {r.category for r in rows if r.problem} == {"video"}
    assert "skipping 25 of 170 rows" in capsys.readouterr().out


def _image_and_video_rows(root: Path) -> Path:
    """An MM-RLHF-RewardBench-layout file: one image row, one video row (a folder of two frames)."""
    (root / "mcq").mkdir()
    Image.new("RGB", (30, 30), "red").save(root / "mcq" / "1.png")
    rows = [
        {"id": "i1", "image": "mcq/1.png", "prompt": "Colour?", "chosen": "red", "rejected": "blue"},
        {"id": "v1", "video": "video/v1", "prompt": "What moves?", "chosen": "a car", "rejected": "a cat"},
    ]
    data = root / "bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_mm_rlhf_video_rows_are_evaluated_when_their_frames_exist(tmp_path):
    data = _image_and_video_rows(tmp_path)
    options = EvalOptions("mm-rlhf-rewardbench", str(data), str(tmp_path / "out"))
    with pytest.raises(UserError, match=r"^1 of 2 rows cannot be evaluated \(video-missing 1\); first ids: 'v1'"):
        prepare_rows(options)
    (tmp_path / "video" / "v1").mkdir(parents=True)
    for n in range(2):
        Image.new("RGB", (30, 30), (100 * n, 0, 0)).save(tmp_path / "video" / "v1" / f"{n}.jpg")
    rows = prepare_rows(options)
    assert [(r.id, r.category, r.problem) for r in rows] == [("i1", "mcq", ""), ("v1", "video", "")]
    (tmp_path / "video" / "v1" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"^1 of 2 rows cannot be evaluated \(video-undecodable 1\)"):
        prepare_rows(options)


class RecordingEngine:
    """Stands in for the vLLM engine: records the prompts and answers "1" with a fixed prompt length."""

    def __init__(self) -> None:
        self.prompts: list[dict] = []

    def generate(self, prompts, n=1, **kwargs):
        self.prompts += prompts
        text = {"text": "<answer>1</answer>", "finish_reason": "stop"}
        return [{"prompt_token_ids": [0] * 9, "generations": [text] * n} for _ in prompts]


@pytest.mark.parametrize("with_video", [False, True])
def test_the_engine_takes_videos_only_for_video_rows(monkeypatch, tmp_path, tiny_model_dir, with_video):
    """Video input is enabled only when a video row will be judged, and both response orders of a row
    share its decoded frames."""
    from transformers import AutoProcessor

    import r1reward.eval.runner as runner

    data = _image_and_video_rows(tmp_path)
    if with_video:
        (tmp_path / "video" / "v1").mkdir(parents=True)
        for n in range(3):
            Image.new("RGB", (56, 56), (100 * n, 0, 0)).save(tmp_path / "video" / "v1" / f"{n}.jpg")
    engine, started = RecordingEngine(), {}

    def fake_start_engine(model, config, mm_pixels, workers, gpus_per_worker, max_videos=0):
        started["max_videos"] = max_videos
        return engine

    monkeypatch.setattr(runner, "start_engine", fake_start_engine)
    options = EvalOptions(
        "mm-rlhf-rewardbench", str(data), str(tmp_path / "out"), model="m", swap=True, skip_missing_images=True
    )
    metrics = run_eval(options, processor=AutoProcessor.from_pretrained(tiny_model_dir))
    assert started["max_videos"] == int(with_video)
    assert (
        metrics["evaluated"] == 1 + with_video
        and metrics["category_counts"].get("video", {}).get("total", 0) == with_video
    )
    if with_video:
        original, swapped = engine.prompts[2:]
        assert original["video"][0].shape == (2, 56, 56, 3)  # 3 frames: an even 2 of them
        assert swapped["video"] is original["video"] and swapped["prompt"] != original["prompt"]
        assert original["prompt"].count("<|video_pad|>") == 1 and original["images"] == []
    lines = (tmp_path / "out" / "generations.jsonl").read_text().splitlines()
    assert [json.loads(line)["prompt_tokens"] for line in lines] == [9] * (1 + with_video)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"video_fps": 0.0}, "--video-fps must be > 0, got 0.0"),
        ({"video_max_frames": 5}, "--video-max-frames must be an even number >= 2, got 5"),
    ],
)
def test_bad_video_options_are_one_line_errors(tmp_path, kwargs, message):
    options = EvalOptions("mm-rlhf-rewardbench", "d.jsonl", str(tmp_path / "o"), model=NO_MODEL, **kwargs)
    with pytest.raises(UserError, match="^" + re.escape(message) + "$"):
        run_eval(options)


def test_nothing_to_evaluate_and_bad_options_are_one_line_errors(tmp_path, benchmarks_dir):
    data = benchmarks_dir / "vl_rewardbench.jsonl"
    options = EvalOptions(
        "vl-rewardbench",
        str(data),
        str(tmp_path / "out"),
        model=NO_MODEL,
        image_root=str(tmp_path),
        limit=3,
        skip_missing_images=True,
    )
    with pytest.raises(UserError, match="^no row can be evaluated: 3 of 3 rows"):
        run_eval(options)
    with pytest.raises(UserError, match="--k must be at least 1, got 0; --workers must be at least 1"):
        run_eval(EvalOptions("vl-rewardbench", str(data), str(tmp_path / "o"), model=NO_MODEL, k=0, workers=0))
    with pytest.raises(UserError, match="unknown benchmark 'vlrb'"):
        prepare_rows(EvalOptions("vlrb", str(data), str(tmp_path / "o")))


def test_score_pairs_with_a_missing_image(tmp_path):
    Image.new("RGB", (30, 30), "red").save(tmp_path / "ok.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in [
                {"id": "a", "question": "q", "images": ["ok.png"], "response_1": "x", "response_2": "y", "label": 2},
                {"id": "b", "question": "q", "images": "gone.png", "response_1": "x", "response_2": "y"},
            ]
        )
    )
    with pytest.raises(UserError, match=r"^1 of 2 pairs cannot be judged \(line 2: image-missing"):
        load_pairs(pairs)
    rows = load_pairs(pairs, skip_missing_images=True)
    assert rows[0][0].label == 2 and rows[0][0].images == [str(tmp_path / "ok.png")]
    assert rows[1][0] is None and rows[1][1].startswith("image-missing") and rows[1][2] == "b"


@pytest.mark.slow
def test_rollout_group_keeps_the_input_order():
    """W workers as Ray actors (stand-ins for RolloutWorker): chunks come back in the input order."""
    import ray

    from r1reward.rollout.group import RolloutGroup

    class EchoWorker:
        def __init__(self, name: str) -> None:
            self.name = name

        def generate(self, prompts, n=1, temperature=None, top_p=None, max_tokens=None, seeds=None):
            return [
                {
                    "prompt_token_ids": [],
                    "generations": [
                        {
                            "text": f"{p['prompt']}|{self.name}|{seed}",
                            "token_ids": [],
                            "logprobs": [],
                            "finish_reason": "stop",
                        }
                    ]
                    * n,
                }
                for p, seed in zip(prompts, seeds or [None] * len(prompts))
            ]

        def generate_timed(self, prompts, **kwargs):  # what RolloutGroup calls: results and busy seconds
            return self.generate(prompts, **kwargs), 0.0

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=0)(EchoWorker)
        pool = RolloutGroup([actor.remote("w0"), actor.remote("w1"), actor.remote("w2")])
        out = pool.generate([{"prompt": str(i)} for i in range(7)], n=2, seeds=list(range(100, 107)))
        texts = [r["generations"][0]["text"] for r in out]
        assert texts == ["0|w0|100", "1|w0|101", "2|w0|102", "3|w1|103", "4|w1|104", "5|w2|105", "6|w2|106"]
        assert all(len(r["generations"]) == 2 for r in out)
        assert len(pool.generate([{"prompt": "only"}], n=1)) == 1  # fewer prompts than workers
        pool.close()
        assert pool.workers == []
    finally:
        ray.shutdown()


def test_eval_command_passes_every_option_to_run_eval(monkeypatch, tmp_path, capsys):
    import r1reward.eval.runner as runner

    seen = {}

    def fake_run_eval(options):
        seen["options"] = options
        return {"benchmark": options.benchmark, "overall": 0.5, "correct": 1, "evaluated": 2, "macro": 0.5}

    monkeypatch.setattr(runner, "run_eval", fake_run_eval)
    assert (
        run_cli(
            [
                "eval",
                "--benchmark",
                "mm-rlhf-rewardbench",
                "--data",
                "d.jsonl",
                "--image-root",
                "imgs",
                "--model",
                "m",
                "--k",
                "5",
                "--temperature",
                "0.7",
                "--swap",
                "--workers",
                "2",
                "--limit",
                "9",
                "--skip-missing-images",
                "--max-tokens",
                "77",
                "--video-fps",
                "1.5",
                "--video-max-frames",
                "16",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    expected = EvalOptions(
        "mm-rlhf-rewardbench",
        "d.jsonl",
        str(tmp_path),
        model="m",
        image_root="imgs",
        k=5,
        temperature=0.7,
        max_tokens=77,
        swap=True,
        workers=2,
        limit=9,
        skip_missing_images=True,
        video_fps=1.5,
        video_max_frames=16,
    )
    assert seen["options"] == expected
    assert "mm-rlhf-rewardbench: overall 50.00% (1/2); macro 50.00%" in capsys.readouterr().out

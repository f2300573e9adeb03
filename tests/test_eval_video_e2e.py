"""End to end on the CPU: `r1reward eval --benchmark mm-rlhf-rewardbench` with a video row, through vLLM
and the tiny random Qwen2.5-VL. The video reaches the engine as Qwen2.5-VL video input (its prompt holds
one token per merged patch of the sampled frames) and the row is scored and counted like an image row.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from helpers import run_cli, write_jsonl, write_video
from r1reward.data.records import PreferenceRecord
from r1reward.data.render import build_messages

pytestmark = pytest.mark.slow


def test_a_video_row_is_judged_and_counted(tiny_model_dir, tmp_path):
    from transformers import AutoProcessor

    (tmp_path / "long").mkdir()
    Image.new("RGB", (56, 56), "red").save(tmp_path / "long" / "1.png")
    (tmp_path / "video").mkdir()
    write_video(tmp_path / "video" / "clip.mp4", seconds=2.0, fps=8, size=(56, 56))
    rows = [
        {"id": "a", "image": "long/1.png", "prompt": "What colour?", "chosen": "Red.", "rejected": "Blue."},
        {"id": "b", "video": "video/clip.mp4", "prompt": "What happens?", "chosen": "Colours.", "rejected": "A dog."},
    ]
    data = write_jsonl(tmp_path / "bench.jsonl", rows)
    out = tmp_path / "out"
    argv = ["eval", "--benchmark", "mm-rlhf-rewardbench", "--data", str(data), "--model", str(tiny_model_dir)]
    argv += ["--k", "2", "--max-tokens", "16", "--max-pixels", str(64 * 28 * 28), "--out", str(out)]
    assert run_cli(argv + ["--video-fps", "4", "--video-max-frames", "6"]) == 0

    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(p["id"], p["category"], "skipped" in p, len(p["votes"])) for p in preds] == [
        ("a", "long", False, 2),
        ("b", "video", False, 2),
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated"] == 2 and not metrics.get("skipped")
    assert metrics["category_counts"]["video"] == {"correct": int(preds[1]["correct"]), "total": 1}
    assert metrics["acc_plus_counts"]["ids"] == 2
    assert metrics["run"]["video_fps"] == 4.0 and metrics["run"]["video_max_frames"] == 6

    # The engine saw the video: 2 s at 4 fps is 8 frames, capped to 6; Qwen2.5-VL pairs frames in time
    # and merges 2x2 patches of 14 pixels, so 6 frames of 56x56 are 3 x (56/28)^2 = 12 video tokens in
    # place of the one placeholder.
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    record = PreferenceRecord("b", rows[1]["prompt"], [], "Colours.", "A dog.", 1, is_video=True)
    text = processor.apply_chat_template(build_messages(record), tokenize=False, add_generation_prompt=True)
    generations = {g["id"]: g for g in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}
    assert generations["b"]["prompt_tokens"] == len(processor.tokenizer(text).input_ids) - 1 + 6 // 2 * (56 // 28) ** 2

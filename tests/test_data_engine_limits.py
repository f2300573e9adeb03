"""Rows the engine would refuse are skipped and counted at load and by check-data, not met mid-run.

vLLM refuses a prompt with more images than its ``limit_mm_per_prompt`` and one whose tokens (chat
template + text + image tokens) do not leave room for the generation; either fails a step's whole
``generate``. The loader counts the prompt as the engine sees it, images included.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
from PIL import Image

from r1reward.config.schema import Config
from r1reward.data.check import check_data, load_options
from r1reward.data.dataset import load_preferences
from r1reward.data.records import DataError, PreferenceRecord
from r1reward.data.render import MAX_IMAGES, count_prompt_tokens, encode_prompt


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def write_images(root: Path) -> None:
    for name, size in {
        "small.png": (8, 8),
        "wide.png": (300, 200),
        "huge.png": (2000, 1500),
        "thin.png": (900, 30),
    }.items():
        Image.new("RGB", size, "red").save(root / name)


def row(i: int, images: list[str], **overrides) -> dict:
    return {
        "id": f"r{i}",
        "question": f"Q{i}?",
        "images": images,
        "response_1": "a",
        "response_2": "b",
        "label": 1,
    } | overrides


def write_rows(root: Path, rows: list[dict]) -> Path:
    write_images(root)
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- the image limit ----------------------------------------------------------------------------------
def test_one_image_limit_for_the_engine_the_server_and_the_loader():
    from r1reward.rollout.worker import RolloutWorker
    from r1reward.serve import service

    assert inspect.signature(RolloutWorker.__init__).parameters["max_images"].default == MAX_IMAGES
    assert service.MAX_IMAGES == MAX_IMAGES
    assert "inspect" not in vars(service)  # the server reads the constant, not the worker's signature


def test_rows_over_the_image_limit_are_skipped_and_counted(tmp_path):
    path = write_rows(tmp_path, [row(0, ["small.png"] * MAX_IMAGES), row(1, ["small.png"] * (MAX_IMAGES + 1))])
    records, report = load_preferences(path, "canonical", swap_seed=None, verbose=False)
    assert [r.id for r in records] == ["r0"]
    assert dict(report.counts) == {"too-many-images": 1}
    assert f"{MAX_IMAGES + 1} images" in report.examples[0] and f"at most {MAX_IMAGES}" in report.examples[0]
    with pytest.raises(DataError, match=rf"pairs.jsonl:2: too-many-images: .*at most {MAX_IMAGES}"):
        load_preferences(path, "canonical", strict=True, verbose=False)

    result = check_data(path, "canonical", Config())
    assert (result["loaded"], result["skipped_by_reason"]) == (1, {"too-many-images": 1})


# --- prompt tokens as the engine counts them ----------------------------------------------------------
@pytest.mark.parametrize(
    "images", [[], ["small.png"], ["wide.png"], ["huge.png", "thin.png"], ["wide.png", "small.png", "huge.png"]]
)
@pytest.mark.parametrize("pixels", [(28 * 28 * 4, 28 * 28 * 64), (28 * 28 * 16, 28 * 28 * 640)])
def test_prompt_tokens_are_the_tokens_the_engine_sees(processor, tmp_path, images, pixels):
    write_images(tmp_path)
    record = PreferenceRecord("r", "What is shown? " * 5, [str(tmp_path / i) for i in images], "A cat.", "A dog.", 1)
    encoded = encode_prompt(processor, record, None, *pixels)
    assert count_prompt_tokens(processor, record, *pixels) == len(encoded["prompt_ids"])
    # Image tokens are part of it: more than the text alone whenever there is an image.
    text_only = len(processor.tokenizer(record.question + record.response_1 + record.response_2).input_ids)
    assert count_prompt_tokens(processor, record, *pixels) > text_only + 40 * len(images)


def limits(tiny_model_dir, **data) -> Config:
    config = Config()
    config.model.path = str(tiny_model_dir)
    config.data = dataclasses.replace(config.data, **data)
    return config


def test_prompts_the_engine_would_refuse_are_skipped_at_load_and_by_check_data(processor, tiny_model_dir, tmp_path):
    path = write_rows(tmp_path, [row(0, ["small.png"]), row(1, ["huge.png"]), row(2, ["wide.png"])])
    pixels = (Config().data.min_pixels, Config().data.max_pixels)
    counts = {
        r["id"]: count_prompt_tokens(
            processor, dataclasses.replace(_record(r), images=[tmp_path / i for i in r["images"]]), *pixels
        )
        for r in map(json.loads, path.read_text().splitlines())
    }
    # The text of every row is the same length: only the images tell them apart.
    assert counts["r0"] < counts["r2"] <= counts["r1"]
    limit = counts["r0"]  # the small image's prompt fits exactly

    for config in (
        limits(tiny_model_dir, max_prompt_tokens=limit),
        # max_model_len - max_new_tokens binds when it is lower than data.max_prompt_tokens
        dataclasses.replace(
            limits(tiny_model_dir),
            rollout=dataclasses.replace(Config().rollout, max_model_len=limit + 64, max_new_tokens=64),
        ),
    ):
        records, report = load_preferences(
            path, "canonical", swap_seed=None, verbose=False, **load_options(config, processor=processor)
        )
        assert [r.id for r in records] == ["r0"]
        assert dict(report.counts) == {"prompt-too-long": 2}
        assert f"prompt has {counts['r1']} tokens > {limit}" in report.examples[0]

        result = check_data(path, "canonical", config)
        assert (result["loaded"], result["skipped_by_reason"]) == (1, {"prompt-too-long": 2})
        assert result["prompt_tokens"] == {"limit": limit, "min": counts["r0"], "max": counts["r1"]}


def test_check_data_says_when_it_cannot_count_prompt_tokens(tmp_path):
    path = write_rows(tmp_path, [row(0, ["small.png"])])
    config = Config()
    config.model.path = str(tmp_path / "no-model")
    result = check_data(path, "canonical", config)
    assert result["loaded"] == 1
    assert result["prompt_tokens"]["limit"] == config.data.max_prompt_tokens
    assert "not counted" in result["prompt_tokens"]["unchecked"] and "no-model" in result["prompt_tokens"]["unchecked"]


def _record(raw: dict) -> PreferenceRecord:
    return PreferenceRecord(
        raw["id"], raw["question"], raw["images"], raw["response_1"], raw["response_2"], raw["label"]
    )

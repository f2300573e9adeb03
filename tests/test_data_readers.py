"""Readers: one small file per schema, the RL parquet round trip, and file-level errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from r1reward.data.prompt import format_prompt
from r1reward.data.readers import SCHEMAS, parse_filled_prompt, read_records
from r1reward.data.records import DataError


def png_bytes(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_all_schemas_registered():
    assert set(SCHEMAS) >= {"r1reward-rl", "mm-rlhf", "vl-rewardbench-hub", "multimodal-rewardbench", "canonical"}


# ------------------------------------------------------------------------------------ r1reward-rl


def rl_row(question: str, r1: str, r2: str, label: int, image: str, *, prompt_in_question: bool = True) -> dict:
    prompt = format_prompt(question, r1, r2)
    content = [{"type": "image", "image": image}, {"type": "text", "text": prompt}]
    message = [{"role": "user", "content": content}]
    return {
        "question": prompt if prompt_in_question else "",
        "message": json.dumps(message),
        "answer": [f"<answer>{label}</answer>"],
        "image": image,
    }


def test_parse_filled_prompt_inverts_format_prompt():
    parts = ("What is {x}?\n  ", "Line one  \n\nline two", "It is 2 ###### maybe")
    assert parse_filled_prompt(format_prompt(*parts)) == parts
    assert parse_filled_prompt("<image>\n" + format_prompt(*parts)) == parts  # leading text tolerated
    assert parse_filled_prompt("just a question") is None


def test_r1reward_rl_parquet_round_trip(tmp_path):
    rows = [
        rl_row("What colour is the shape?", "Red.", "Blue.", 2, "/data/img/0.png"),
        rl_row("How many?", "Three", "Two", 1, "/data/img/1.png", prompt_in_question=False),
    ]
    path = write_parquet(tmp_path / "train.parquet", rows)
    records = list(read_records(path, "r1reward-rl"))
    assert len(records) == 2
    first, second = records
    assert (first.question, first.response_1, first.response_2, first.label) == (
        "What colour is the shape?",
        "Red.",
        "Blue.",
        2,
    )
    assert first.images == ["/data/img/0.png"]
    assert (second.question, second.response_1, second.label) == ("How many?", "Three", 1)
    assert first.id != second.id and first.source == "train"


def test_r1reward_rl_image_column_fallback_and_base64(tmp_path):
    import base64

    buf = io.BytesIO()
    Image.effect_noise((32, 32), 64).save(buf, format="PNG")  # noise: too big to be mistaken for a path
    data = buf.getvalue()
    row = rl_row("Q", "a", "b", 1, "unused")
    row["message"] = json.dumps([{"role": "user", "content": [{"type": "text", "text": row["question"]}]}])
    row["image"] = base64.b64encode(data).decode()  # a bare base64 payload, as some dumps store it
    path = write_jsonl(tmp_path / "rl.jsonl", [row])
    (record,) = read_records(path, "r1reward-rl")
    assert record.images == [data]


def test_r1reward_rl_unparseable_prompt_is_a_row_error(tmp_path):
    row = {"question": "plain", "message": "[]", "answer": ["<answer>1</answer>"], "image": "x.png"}
    path = write_jsonl(tmp_path / "rl.jsonl", [row])
    with pytest.raises(DataError, match="rl.jsonl:1") as info:
        list(read_records(path, "r1reward-rl"))
    assert info.value.reason == "unparseable-prompt"


# ------------------------------------------------------------------------------------- mm-rlhf


def test_mm_rlhf_chosen_first_and_video_flag(tmp_path):
    rows = [
        {
            "id": "a",
            "prompt": "P",
            "chosen": "good",
            "rejected": "bad",
            "image": "long/1.png",
            "chosen_reason": "",
            "rejected_reason": "",
        },
        {
            "id": "b",
            "prompt": "V",
            "chosen": "good",
            "rejected": "bad",
            "video": "video/xyz",
            "chosen_reason": "",
            "rejected_reason": "",
        },
    ]
    image_row, video_row = read_records(write_jsonl(tmp_path / "mm.jsonl", rows), "mm-rlhf")
    assert (image_row.response_1, image_row.response_2, image_row.label) == ("good", "bad", 1)
    assert image_row.images == ["long/1.png"] and image_row.media == "long/1.png"
    assert not image_row.is_video
    assert video_row.is_video and video_row.images == [] and video_row.media == "video/xyz"


# --------------------------------------------------------------------------- vl-rewardbench-hub


@pytest.mark.parametrize("ranking,label", [([0, 1], 1), ([1, 0], 2), ([2, 5], 1), ([1, 1], 0)])
def test_vl_rewardbench_hub_ranking(tmp_path, ranking, label):
    data = png_bytes()
    rows = [
        {
            "id": "RLAIF-V-1",
            "query": "Q",
            "response": ["first", "second"],
            "image": {"bytes": data, "path": "img.png"},
            "human_ranking": ranking,
        }
    ]
    (record,) = read_records(write_parquet(tmp_path / "vl.parquet", rows), "vl-rewardbench-hub")
    assert record.label == label
    assert (record.response_1, record.response_2) == ("first", "second")
    assert record.images == [data] and record.media == "img.png"


# ----------------------------------------------------------------------- multimodal-rewardbench


def test_multimodal_rewardbench(tmp_path):
    rows = [
        {
            "ID": "math-1",
            "Text": "T",
            "Image": "imgs/1.png",
            "Output1": "x",
            "Output2": "y",
            "Better": "Output2",
            "Category": "reasoning",
        },
        {
            "ID": "pairs-2",
            "Text": "T",
            "Image": "imgs/2.png",
            "Output1": "x",
            "Output2": "y",
            "Better": "Output1",
            "Category": "safety",
        },
        {
            "ID": "c-3",
            "Text": "T",
            "Image": "imgs/3.png",
            "Output1": "x",
            "Output2": "y",
            "Better": "tie",
            "Category": "general",
        },
    ]
    records = list(read_records(write_jsonl(tmp_path / "mmrb.jsonl", rows), "multimodal-rewardbench"))
    assert [r.label for r in records] == [2, 1, 0]
    assert [r.category for r in records] == ["reasoning", "safety", "general"]
    assert records[0].images == ["imgs/1.png"]


# ------------------------------------------------------------------------------------ canonical


def test_canonical_jsonl_keeps_extra_target(tmp_path):
    rows = [
        {
            "id": "p0",
            "question": "Q",
            "images": ["img/0.png"],
            "response_1": "a",
            "response_2": "b",
            "label": 2,
            "source": "synthetic",
            "category": "colour",
            "target": "<think>t</think><answer>2</answer>",
        }
    ]
    (record,) = read_records(write_jsonl(tmp_path / "sft.jsonl", rows), "canonical")
    assert (record.label, record.source, record.category) == (2, "synthetic", "colour")
    assert record.images == ["img/0.png"]
    assert record.extra == {"target": "<think>t</think><answer>2</answer>"}


def test_canonical_parquet_directory_of_shards(tmp_path):
    base = {"question": "Q", "images": ["i.png"], "response_1": "a", "response_2": "b", "label": 1}
    write_parquet(tmp_path / "part-0.parquet", [{**base, "id": "x0"}, {**base, "id": "x1"}])
    write_parquet(tmp_path / "part-1.parquet", [{**base, "id": "x2"}])
    assert [r.id for r in read_records(tmp_path, "canonical")] == ["x0", "x1", "x2"]


# --------------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        list(read_records(tmp_path / "absent.jsonl", "canonical"))
    assert "absent.jsonl" in str(info.value)


@pytest.mark.parametrize("writer,name", [(write_jsonl, "x.jsonl"), (write_parquet, "x.parquet")])
def test_wrong_schema_names_missing_columns(tmp_path, writer, name):
    rows = [{"id": "1", "prompt": "P", "chosen": "a", "rejected": "b", "image": "i.png"}]
    path = writer(tmp_path / name, rows)
    with pytest.raises(DataError) as info:
        next(iter(read_records(path, "canonical")))
    message = str(info.value)
    assert str(path) in message
    for column in ("question", "images", "response_1", "response_2", "label"):
        assert column in message


def test_mm_rlhf_needs_image_or_video_column(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"id": "1", "prompt": "P", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="image\\|video"):
        list(read_records(path, "mm-rlhf"))


def test_unknown_schema_and_suffix(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"a": 1}])
    with pytest.raises(DataError, match="unknown schema"):
        list(read_records(path, "nope"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported"):
        list(read_records(tmp_path / "x.csv", "canonical"))

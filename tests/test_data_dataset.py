"""load_preferences: bad-row handling (default skip vs strict) and the balanced position swap."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from r1reward.data.dataset import PreferenceDataset, balanced_swap, load_preferences
from r1reward.data.prompt import format_prompt
from r1reward.data.records import DataError, PreferenceRecord


def write_png(path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def good_row(i: int, **overrides) -> dict:
    row = {
        "id": f"p{i}",
        "question": f"Question {i}?",
        "images": ["img.png"],
        "response_1": f"first {i}",
        "response_2": f"second {i}",
        "label": 1 + i % 2,
    }
    row.update(overrides)
    return row


def write_rows(tmp_path: Path, rows: list[dict]) -> Path:
    write_png(tmp_path / "img.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def count_question_chars(record: PreferenceRecord) -> int:
    return len(record.question)


BAD_ROWS = {
    "image-missing": {"images": ["absent.png"]},
    "image-undecodable": {"images": ["broken.png"]},
    "empty-response": {"response_2": "   "},
    "identical-responses": {"response_2": "first 1 "},
    "bad-label": {"label": 3},
    "prompt-too-long": {"question": "x" * 500},
    "missing-field": {"response_1": None},
}


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_bad_row_skipped_and_counted_by_default(tmp_path, reason, capsys):
    path = write_rows(tmp_path, [good_row(0), good_row(1, **BAD_ROWS[reason]), good_row(2)])
    records, report = load_preferences(
        path, "canonical", max_prompt_tokens=100, token_counter=count_question_chars, swap_seed=None
    )
    assert [r.id for r in records] == ["p0", "p2"]
    assert report.counts == {reason: 1}
    assert (report.rows, report.kept, report.skipped) == (3, 2, 1)
    assert report.examples == [report.examples[0]] and f"pairs.jsonl:2: {reason}" in report.examples[0]
    assert report.as_dict() == {"rows": 3, "kept": 2, "skipped": 1, f"skipped/{reason}": 1}
    assert f"{reason} 1" in capsys.readouterr().out


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_bad_row_raises_in_strict_mode(tmp_path, reason):
    path = write_rows(tmp_path, [good_row(0), good_row(1, **BAD_ROWS[reason])])
    with pytest.raises(DataError) as info:
        load_preferences(
            path, "canonical", strict=True, max_prompt_tokens=100, token_counter=count_question_chars, verbose=False
        )
    assert info.value.reason == reason
    assert f"{path}:2: {reason}" in str(info.value)


def test_video_row_skipped_unless_allowed(tmp_path):
    write_png(tmp_path / "i.png")
    rows = [
        {"id": "a", "prompt": "P", "chosen": "c", "rejected": "r", "image": "i.png"},
        {"id": "b", "prompt": "P", "chosen": "c", "rejected": "r", "video": "video/v1"},
    ]
    path = tmp_path / "mm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, report = load_preferences(path, "mm-rlhf", swap_seed=None, verbose=False)
    assert [r.id for r in records] == ["a"] and report.counts == {"video-unsupported": 1}
    records, report = load_preferences(path, "mm-rlhf", swap_seed=None, allow_video=True, verbose=False)
    assert [r.id for r in records] == ["a", "b"] and report.skipped == 0


def test_invalid_json_line_is_a_bad_row(tmp_path):
    path = write_rows(tmp_path, [good_row(0), good_row(1)])
    path.write_text(path.read_text() + '{"id": "p2", "question": "trunc\n')  # a truncated last line
    records, report = load_preferences(path, "canonical", swap_seed=None, verbose=False)
    assert [r.id for r in records] == ["p0", "p1"]
    assert report.counts == {"invalid-json": 1} and "pairs.jsonl:3: invalid-json" in report.examples[0]
    with pytest.raises(DataError, match="pairs.jsonl:3: invalid-json"):
        load_preferences(path, "canonical", strict=True, verbose=False)


def test_synthetic_files_agree_across_schemas(synthetic_dir):
    """The generator's RL parquet, canonical pairs and SFT file describe the same comparisons."""
    rl, rl_report = load_preferences(synthetic_dir / "train.parquet", "r1reward-rl", swap_seed=None, verbose=False)
    pairs, _ = load_preferences(synthetic_dir / "pairs.jsonl", "canonical", swap_seed=None, verbose=False)
    sft, _ = load_preferences(synthetic_dir / "sft.jsonl", "canonical", swap_seed=None, verbose=False)
    assert rl_report.skipped == 0 and len(rl) == len(pairs) == len(sft) > 0
    for a, b, c in zip(rl, pairs, sft):
        assert (a.question, a.response_1, a.response_2, a.label) == (b.question, b.response_1, b.response_2, b.label)
        assert a.images == b.images == c.images and Path(a.images[0]).is_file()
        assert c.extra["target"].endswith(f"<answer>{c.label}</answer>")


def test_unparseable_rl_prompt_is_a_bad_row(tmp_path):
    rows = [{"question": "no prompt here", "message": "[]", "answer": ["<answer>1</answer>"], "image": "i.png"}]
    path = tmp_path / "rl.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    records, report = load_preferences(path, "r1reward-rl", verbose=False)
    assert records == [] and report.counts == {"unparseable-prompt": 1}


def test_images_resolved_relative_to_file_or_image_root(tmp_path):
    path = write_rows(tmp_path, [good_row(0)])
    (record,), _ = load_preferences(path, "canonical", verbose=False)
    assert record.images == [str(tmp_path / "img.png")]
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_png(other / "img.png")
    (record,), _ = load_preferences(path, "canonical", image_root=other, verbose=False)
    assert record.images == [str(other / "img.png")]


def test_prompt_limit_needs_a_token_counter(tmp_path):
    path = write_rows(tmp_path, [good_row(0)])
    with pytest.raises(ValueError, match="token_counter"):
        load_preferences(path, "canonical", max_prompt_tokens=10)


def test_token_counter_sees_the_record(tmp_path):
    path = write_rows(tmp_path, [good_row(0), good_row(1)])
    seen: list[str] = []

    def counter(record: PreferenceRecord) -> int:
        seen.append(record.id)
        return len(format_prompt(record.question, record.response_1, record.response_2))

    records, _ = load_preferences(path, "canonical", max_prompt_tokens=10_000, token_counter=counter, verbose=False)
    assert seen == ["p0", "p1"] and len(records) == 2


# ------------------------------------------------------------------------------------- swapping


def make_records(labels: list[int]) -> list[PreferenceRecord]:
    return [PreferenceRecord(f"r{i}", "Q", [], f"a{i}", f"b{i}", label) for i, label in enumerate(labels)]


def winner(record: PreferenceRecord) -> str:
    return record.response_1 if record.label == 1 else record.response_2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 2]), max_size=60), st.integers(0, 2**32), st.integers(0, 5))
def test_balanced_swap_property(labels, seed, epoch):
    records = make_records(labels)
    out = balanced_swap(records, seed, epoch)
    n_two = sum(r.label == 2 for r in out)
    if len(labels) % 2 == 0:
        assert n_two == len(labels) // 2
    else:
        assert n_two in (len(labels) // 2, len(labels) // 2 + 1)
    assert [winner(r) for r in out] == [winner(r) for r in records]  # same preference, maybe swapped
    assert out == balanced_swap(records, seed, epoch)  # reproducible


def test_balanced_swap_depends_on_seed_and_epoch():
    records = make_records([1] * 100)
    base = [r.label for r in balanced_swap(records, 0, 0)]
    assert Counter(base) == {1: 50, 2: 50}
    assert [r.label for r in balanced_swap(records, 0, 1)] != base
    assert [r.label for r in balanced_swap(records, 1, 0)] != base
    assert [r.label for r in balanced_swap(records, 0, 0)] == base


def test_balanced_swap_rejects_bad_labels():
    with pytest.raises(DataError, match="r1"):
        balanced_swap(make_records([1, 0]), 0)


def test_load_preferences_swaps_by_default(tmp_path):
    path = write_rows(tmp_path, [good_row(i, label=1) for i in range(10)])
    records, _ = load_preferences(path, "canonical", verbose=False)
    assert Counter(r.label for r in records) == {1: 5, 2: 5}
    again, _ = load_preferences(path, "canonical", verbose=False)
    assert again == records
    other_epoch, _ = load_preferences(path, "canonical", epoch=1, verbose=False)
    assert Counter(r.label for r in other_epoch) == {1: 5, 2: 5}
    assert [r.label for r in other_epoch] != [r.label for r in records]


def test_preference_dataset_redraws_per_epoch(tmp_path):
    path = write_rows(tmp_path, [good_row(i, label=1) for i in range(20)])
    dataset = PreferenceDataset.from_file(path, "canonical", swap_seed=7, verbose=False)
    assert len(dataset) == 20 and dataset.report is not None and dataset.report.kept == 20
    epoch0 = [r.label for r in dataset]
    dataset.set_epoch(1)
    epoch1 = [r.label for r in dataset]
    assert Counter(epoch0) == Counter(epoch1) == {1: 10, 2: 10}
    assert epoch0 != epoch1
    dataset.set_epoch(0)
    assert [r.label for r in dataset] == epoch0
    assert isinstance(dataset[0], PreferenceRecord) and len(dataset[:3]) == 3

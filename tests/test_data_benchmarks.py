"""The two real benchmark files in /work/shared, with placeholder images written for their paths."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from r1reward.data.dataset import load_preferences
from r1reward.data.records import DataError

VL_REWARDBENCH = "vl_rewardbench.jsonl"
MM_RLHF_REWARDBENCH = "mm_rlhf_rewardbench.jsonl"


@pytest.fixture(scope="module")
def vl_rewardbench(benchmarks_dir) -> Path:
    return benchmarks_dir / VL_REWARDBENCH


@pytest.fixture(scope="module")
def mm_rlhf_rewardbench(benchmarks_dir) -> Path:
    return benchmarks_dir / MM_RLHF_REWARDBENCH


def _placeholder_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), "gray").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, vl_rewardbench, mm_rlhf_rewardbench) -> Path:
    """A folder holding a small PNG at every image path the benchmark files reference."""
    root = tmp_path_factory.mktemp("benchmark_images")
    data = _placeholder_png()
    for file in (vl_rewardbench, mm_rlhf_rewardbench):
        for line in file.read_text().splitlines():
            image = json.loads(line).get("image")
            if image:
                (root / image).parent.mkdir(parents=True, exist_ok=True)
                (root / image).write_bytes(data)
    return root


def _raw_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_vl_rewardbench_loads_all_1250_pairs(image_root, vl_rewardbench):
    records, report = load_preferences(vl_rewardbench, "mm-rlhf", image_root=image_root, swap_seed=None)
    assert len(records) == report.rows == report.kept == 1250
    assert report.skipped == 0
    raw = _raw_rows(vl_rewardbench)
    # Chosen first, label 1, ids and media kept for category counting; images resolved under image_root.
    assert all(r.label == 1 for r in records)
    assert [(r.id, r.response_1, r.response_2, r.media) for r in records] == [
        (row["id"], row["chosen"], row["rejected"], row["image"]) for row in raw
    ]
    assert records[0].images == [str(image_root / raw[0]["image"])]
    reasoning = sum(("mmmu" in r.id.lower() or "mathverse" in r.id.lower()) for r in records)
    assert reasoning == 318


def test_vl_rewardbench_swapped_is_balanced(image_root, vl_rewardbench):
    records, _ = load_preferences(vl_rewardbench, "mm-rlhf", image_root=image_root, verbose=False)
    assert Counter(r.label for r in records) == {1: 625, 2: 625}
    raw = _raw_rows(vl_rewardbench)
    for record, row in zip(records, raw):  # the chosen response is always the labelled one
        chosen = record.response_1 if record.label == 1 else record.response_2
        assert chosen == row["chosen"]


def test_mm_rlhf_rewardbench_skips_video_rows_by_default(image_root, mm_rlhf_rewardbench, capsys):
    records, report = load_preferences(mm_rlhf_rewardbench, "mm-rlhf", image_root=image_root, swap_seed=None)
    assert report.rows == 170
    assert len(records) == report.kept == 145
    assert report.counts == {"video-unsupported": 25}
    assert report.as_dict()["skipped/video-unsupported"] == 25
    assert "mm_rlhf_rewardbench.jsonl:146: video-unsupported" in report.examples[0]
    assert "video-unsupported 25" in capsys.readouterr().out
    categories = Counter(r.media.split("/")[0] for r in records)
    assert categories == {"mcq": 42, "long": 37, "short": 34, "safety": 32}


def test_mm_rlhf_rewardbench_with_video_allowed(image_root, mm_rlhf_rewardbench):
    records, report = load_preferences(
        mm_rlhf_rewardbench, "mm-rlhf", image_root=image_root, allow_video=True, swap_seed=None, verbose=False
    )
    assert len(records) == 170 and report.skipped == 0
    videos = [r for r in records if r.is_video]
    assert len(videos) == 25
    assert all(r.images == [] and r.media.startswith("video/") for r in videos)
    assert len({r.id for r in records}) == 46
    assert Counter(r.media.split("/")[0] for r in records)["video"] == 25


def test_mm_rlhf_rewardbench_strict_stops_at_first_video_row(image_root, mm_rlhf_rewardbench):
    with pytest.raises(DataError, match=r"mm_rlhf_rewardbench\.jsonl:146: video-unsupported") as info:
        load_preferences(mm_rlhf_rewardbench, "mm-rlhf", image_root=image_root, strict=True, verbose=False)
    assert info.value.reason == "video-unsupported"


def test_benchmark_without_images_reports_image_missing(tmp_path, mm_rlhf_rewardbench):
    records, report = load_preferences(mm_rlhf_rewardbench, "mm-rlhf", image_root=tmp_path, verbose=False)
    assert records == []
    assert report.counts == {"image-missing": 145, "video-unsupported": 25}

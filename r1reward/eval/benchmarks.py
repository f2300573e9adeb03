"""The three benchmarks of the paper: how to read each file and which category every row counts in.

Rows are read without touching images or videos (``read_benchmark``), so that ``eval-metrics`` works on
a machine without the benchmark media; ``check_rows`` then validates the media for an evaluation.
Category rules follow the released scripts (see /work/shared/notes/paper.md, "Benchmark counting rules").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from r1reward.data.dataset import validate_record
from r1reward.data.readers import iter_raw_rows, parse_row
from r1reward.data.records import DataError, PreferenceRecord
from r1reward.data.video import check_video
from r1reward.errors import UserError

VL_REWARDBENCH = "vl-rewardbench"
MULTIMODAL_REWARDBENCH = "multimodal-rewardbench"
MM_RLHF_REWARDBENCH = "mm-rlhf-rewardbench"
BENCHMARKS = (VL_REWARDBENCH, MULTIMODAL_REWARDBENCH, MM_RLHF_REWARDBENCH)

# The schema of the released file of each benchmark (VL-RewardBench also exists as "vl-rewardbench-hub").
DEFAULT_SCHEMA = {
    VL_REWARDBENCH: "mm-rlhf",
    MULTIMODAL_REWARDBENCH: "multimodal-rewardbench",
    MM_RLHF_REWARDBENCH: "mm-rlhf",
}

# Known categories in report order; a category not listed here is appended after them.
CATEGORY_ORDER = {
    VL_REWARDBENCH: ("general", "hallucination", "reasoning"),
    MULTIMODAL_REWARDBENCH: (
        "correctness",
        "preference",
        "knowledge",
        "reasoning/math",
        "reasoning/coding",
        "safety/bias",
        "safety/toxicity",
        "vqa",
    ),
    MM_RLHF_REWARDBENCH: ("mcq", "long", "short", "safety", "video"),
}


def vl_rewardbench_category(row_id: str, case_sensitive: bool = False) -> str:
    """VL-RewardBench's split by id. Case-insensitive is the benchmark's own split (183/749/318 on the
    1,250 pairs); case-sensitive is what the R1-Reward script does (484/448/318), because it misses
    the upper-case ``RLAIF-V-*``/``RLHF-V-*`` ids, which are hallucination pairs."""
    text = row_id if case_sensitive else row_id.lower()
    if "mmmu" in text or "mathverse" in text:
        return "reasoning"
    if "hallucination" in text or "rlhf" in text or "rlaif" in text:
        return "hallucination"
    return "general"


def multimodal_rewardbench_category(row_id: str, category: str) -> str:
    """The file's Category (e.g. "open_generation/correctness_task", "safety"), with safety split into
    bias (PAIRS ids) / toxicity and reasoning into math / coding by id, as the benchmark's script does."""
    name, lowered_id = category.strip().lower(), row_id.lower()
    if "safety" in name:
        return "safety/bias" if lowered_id.startswith("pairs") else "safety/toxicity"
    if "reasoning" in name:
        return "reasoning/math" if lowered_id.startswith("math") else "reasoning/coding"
    for known in ("correctness", "preference", "knowledge", "vqa"):
        if known in name:
            return known
    return name or "other"


def mm_rlhf_category(media: str) -> str:
    """MM-RLHF-RewardBench's category is the first folder of the image/video path (mcq/long/...)."""
    return media.replace("\\", "/").split("/")[0] or "other"


@dataclass(frozen=True)
class BenchmarkRow:
    index: int  # 0-based position among the file's rows; predictions are joined on it
    id: str
    category: str
    label: int
    record: PreferenceRecord | None  # None when the row itself could not be read
    problem: str = ""  # "<reason>: <detail>" when the row cannot be evaluated
    category_paper_script: str = ""  # VL-RewardBench only: the R1-Reward script's split

    @property
    def reason(self) -> str:
        return self.problem.split(":", 1)[0]


def _category(benchmark: str, record: PreferenceRecord) -> str:
    if benchmark == VL_REWARDBENCH:
        return vl_rewardbench_category(record.id)
    if benchmark == MULTIMODAL_REWARDBENCH:
        return multimodal_rewardbench_category(record.id, record.category)
    return mm_rlhf_category(record.media)


def check_benchmark_name(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise UserError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")


def read_benchmark(
    path: str | Path, benchmark: str, schema: str | None = None, limit: int | None = None
) -> list[BenchmarkRow]:
    """Every row of the file (the first ``limit`` with a limit), in order, with its category.

    A row that cannot be parsed is kept (``record`` None, ``problem`` set) so that positions still
    line up with the file; ``check_rows`` reports it with the other unusable rows."""
    check_benchmark_name(benchmark)
    schema = schema or DEFAULT_SCHEMA[benchmark]
    rows: list[BenchmarkRow] = []
    for ctx, raw in iter_raw_rows(path, schema):
        if limit is not None and len(rows) >= limit:
            break
        index = len(rows)
        try:
            record = parse_row(schema, raw, ctx)
        except DataError as exc:
            if not exc.reason:
                raise
            raw_id = raw.get("id", raw.get("ID")) if isinstance(raw, dict) else None
            rows.append(
                BenchmarkRow(
                    index,
                    str(raw_id) if raw_id is not None else f"<row {ctx.row}>",
                    "other",
                    0,
                    None,
                    f"{exc.reason}: {exc}",
                )
            )
            continue
        paper = vl_rewardbench_category(record.id, case_sensitive=True) if benchmark == VL_REWARDBENCH else ""
        rows.append(
            BenchmarkRow(
                index, record.id, _category(benchmark, record), record.label, record, category_paper_script=paper
            )
        )
    return rows


def check_rows(rows: list[BenchmarkRow], image_root: str | Path) -> list[BenchmarkRow]:
    """The rows with image and video paths made absolute (a video's in ``media``), and ``problem`` set
    on those that cannot be evaluated: missing or undecodable images or videos (of a video only the
    first frame is decoded here), bad labels, empty or identical responses (``validate_record``'s checks)."""
    checked = []
    for row in rows:
        if row.record is None or row.problem:
            checked.append(row)
            continue
        try:
            record = validate_record(row.record, image_root, allow_video=True)
            if record.is_video:
                record = replace(record, media=str(check_video(record.media, image_root)))
        except DataError as exc:
            if not exc.reason:
                raise
            checked.append(replace(row, problem=f"{exc.reason}: {exc}"))
            continue
        checked.append(replace(row, record=record))
    return checked


def describe_problems(rows: list[BenchmarkRow], first: int = 5) -> str:
    """One line: how many rows cannot be evaluated, by reason, and the first ids."""
    bad = [row for row in rows if row.problem]
    reasons: dict[str, int] = {}
    for row in bad:
        reasons[row.reason] = reasons.get(row.reason, 0) + 1
    by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    ids = ", ".join(repr(row.id) for row in bad[:first]) + (", ..." if len(bad) > first else "")
    return f"{len(bad)} of {len(rows)} rows cannot be evaluated ({by_reason}); first ids: {ids}"

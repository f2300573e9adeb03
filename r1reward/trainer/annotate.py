"""`r1reward annotate`: the paper's cold-start annotation (§3.2) with any OpenAI-compatible teacher.

Each pair is asked with the Table 1 prompt up to `tries` times until the teacher's `<answer>` matches the
label. As in the paper's data, the response order is first balanced so that half the pairs are asked
with label 2 (a seeded swap, the same on every rerun; `swap_seed=None` keeps the file's order): a file
that always puts the chosen response first would otherwise teach the cold start to answer 1.

Finished pairs go to OUT/annotations.jsonl one line each, as they finish (data/annotations.py); a rerun
reads it first and asks only for the pairs it lacks. The outputs are rebuilt from the whole file at the
end of every run:

- OUT/sft.jsonl: canonical rows with a `target` (the first right trace), what `r1reward sft` trains on;
- OUT/rl.parquet: the pairs that took 2+ tries or failed, in the R1-Reward RL layout;
- OUT/annotate_report.json: counts per difficulty, the SFT/RL split, requests and tokens.
"""

from __future__ import annotations

import json
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from r1reward.algo import parse_answer
from r1reward.data.annotations import (
    ANNOTATIONS_FILE,
    drop_cut_tail,
    first_right_trace,
    is_rl_pair,
    read_annotations,
    summarise,
    teacher_messages,
)
from r1reward.data.dataset import balanced_swap, load_preferences
from r1reward.data.jsonl import append_jsonl, write_jsonl
from r1reward.data.records import PreferenceRecord
from r1reward.data.writers import portable_image, write_records
from r1reward.errors import UserError
from r1reward.trainer.teacher import TeacherClient, TeacherUnavailable
from r1reward.waits import WaitError


def annotate_pair(client: TeacherClient, record: PreferenceRecord, tries: int, swapped: bool) -> dict[str, Any]:
    """Ask until a try is right or `tries` are spent; every trace is kept. `swapped`: the record's responses
    are in the other order than in the data file (the label is the asked order's)."""
    messages = teacher_messages(record)
    entry = {"id": record.id, "label": record.label, "swapped": swapped, "model": client.model, "tries": None}
    traces = entry["traces"] = []
    for attempt in range(1, tries + 1):
        reply = client.chat(messages, f"pair {record.id!r}, try {attempt}")
        answer = parse_answer(reply.text)
        traces.append({"text": reply.text, "answer": answer, "right": answer == record.label, "usage": reply.usage})
        if answer == record.label:
            entry["tries"] = attempt
            break
    return entry


def annotate(
    data: str | Path,
    schema: str,
    out: Path,
    client: TeacherClient,
    tries: int = 3,
    concurrency: int = 4,
    image_root: str | Path | None = None,
    progress: bool = True,
    swap_seed: int | None = 0,
) -> dict[str, Any]:
    """Annotate every pair of `data` not yet in OUT/annotations.jsonl; write the outputs; return the report."""
    from tqdm import tqdm

    if tries < 1 or concurrency < 1:
        raise UserError(f"--tries and --concurrency must be at least 1, got {tries} and {concurrency}")
    in_file, _ = load_preferences(data, schema, image_root=image_root, swap_seed=None, unique_ids=True)
    if not in_file:
        raise UserError(f"no usable pairs in {data} (schema {schema})")
    records = in_file if swap_seed is None else balanced_swap(in_file, swap_seed)
    swapped = {r.id: r.label != f.label for r, f in zip(records, in_file)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / ANNOTATIONS_FILE
    drop_cut_tail(log)
    done = read_annotations(log)
    other = next((e["model"] for e in done.values() if e.get("model") != client.model), None)
    if other is not None:
        raise UserError(f"{log} holds annotations by {other!r}, not {client.model!r}: use another --out")
    moved = next((r for r in records if r.id in done and done[r.id].get("label") != r.label), None)
    if moved is not None:
        raise UserError(
            f"{log}: pair {moved.id!r} was asked in the other response order (another --data or --swap-seed): "
            "use another --out"
        )
    pending = [r for r in records if r.id not in done]
    # The longest one pair can take: every try's every attempt timing out, then the longest backoff.
    pair_bound_s = tries * client.max_attempts * (client.timeout_s + client.max_backoff_s) + 30
    errors: list[str] = []
    bar = tqdm(
        total=len(records),
        initial=len(records) - len(pending),
        desc="annotate",
        unit="pair",
        disable=not progress,
        dynamic_ncols=True,
    )
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher")
    try:
        running: dict[Future, PreferenceRecord] = {
            pool.submit(annotate_pair, client, r, tries, swapped[r.id]): r for r in pending
        }
        while running:
            finished, _ = wait(running, timeout=pair_bound_s, return_when=FIRST_COMPLETED)
            if not finished:
                ids = ", ".join(repr(r.id) for r in list(running.values())[:5])
                raise WaitError(f"annotate: no pair finished within {pair_bound_s:.0f} s (waiting on {ids})")
            for future in finished:
                record = running.pop(future)
                try:
                    entry = future.result()
                except TeacherUnavailable as exc:
                    errors.append(str(exc))
                    continue
                append_jsonl(entry, log)  # one line per finished pair, flushed before the next is recorded
                done[record.id] = entry
                bar.update(1)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    report = write_outputs(records, done, out, tries)
    report.update(teacher={"url": client.url, "model": client.model}, errors=len(errors), asked_this_run=len(pending))
    if errors:
        report["first_error"] = errors[0]
    (out / "annotate_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def write_outputs(
    records: list[PreferenceRecord], done: dict[str, dict[str, Any]], out: Path, tries: int
) -> dict[str, Any]:
    """The SFT and RL sets from the finished pairs (in the data file's order), and their summary."""
    finished = [(r, done[r.id]) for r in records if r.id in done]
    sft = []
    for record, entry in finished:
        target = first_right_trace(entry)
        if target is not None:
            sft.append(
                {
                    "id": record.id,
                    "question": record.question,
                    "images": [portable_image(s, out) for s in record.images],
                    "response_1": record.response_1,
                    "response_2": record.response_2,
                    "label": record.label,
                    "source": record.source,
                    "category": record.category,
                    "target": target,
                    "teacher_tries": entry["tries"],
                }
            )
    write_jsonl(sft, out / "sft.jsonl")
    write_records([r for r, entry in finished if is_rl_pair(entry)], out / "rl.parquet")
    return {**summarise([e for _, e in finished], tries), "total_pairs": len(records)}

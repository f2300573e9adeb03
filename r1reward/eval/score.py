"""``r1reward score``: judge every pair of a canonical-schema JSONL file with a trained model.

Input rows: ``id``, ``question``, ``images`` (a path or a list), ``response_1``, ``response_2`` and,
optionally, ``label`` (1/2). Output: one JSONL line per input row, in order, with ``winner``,
``vote_share``, ``votes`` and the ``reasoning``; with a label also ``label`` and ``correct``.
Rows whose images are missing stop the run before generating, unless ``skip_missing_images``
(they then get a line with ``skipped`` set).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from r1reward.data.images import check_image, resolve_source
from r1reward.data.jsonl import read_jsonl, write_jsonl
from r1reward.data.readers import RowContext, parse_row
from r1reward.data.records import DataError, PreferenceRecord
from r1reward.errors import UserError
from r1reward.eval.api import Pair, RewardModel

PairRow = tuple[PreferenceRecord | None, str, str]


def read_pairs(path: str | Path, image_root: str | Path | None) -> list[PairRow]:
    """(record with absolute image paths, "", id) per row, or (None, problem, id) for a row that cannot
    be judged."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    out: list[PairRow] = []
    for line, raw in enumerate(read_jsonl(path), start=1):
        # The label is optional here (the canonical schema requires it): 0 stands for "none given".
        raw = {"label": 0, **raw}
        try:
            record = parse_row("canonical", raw, RowContext(path, line))
            for source in record.images:
                check_image(source, root)
            out.append((replace(record, images=[resolve_source(s, root) for s in record.images]), "", record.id))
        except DataError as exc:
            if not exc.reason:
                raise
            out.append((None, f"{exc.reason}: {exc}", str(raw.get("id", ""))))
    return out


def load_pairs(
    path: str | Path, image_root: str | Path | None = None, skip_missing_images: bool = False
) -> list[PairRow]:
    """read_pairs, stopping with a one-line error on rows that cannot be judged unless told to skip them."""
    rows = read_pairs(path, image_root)
    bad = [(line, problem) for line, (_, problem, _) in enumerate(rows, start=1) if problem]
    if bad and not skip_missing_images:
        first = "; ".join(f"line {line}: {problem[:120]}" for line, problem in bad[:3])
        raise UserError(
            f"{len(bad)} of {len(rows)} pairs cannot be judged ({first}); "
            "pass --skip-missing-images to judge the others"
        )
    return rows


def score_pairs(model: RewardModel, rows: list[PairRow], out_path: str | Path, k: int = 1) -> dict[str, Any]:
    """Judge the pairs (from load_pairs), write the output JSONL; returns a summary (pairs, judged,
    skipped, accuracy over the labelled ones)."""
    todo = [record for record, _, _ in rows if record is not None]
    comparisons = iter(model.compare_pairs([Pair(r.question, r.images, r.response_1, r.response_2) for r in todo], k=k))
    lines, labelled, correct = [], 0, 0
    for record, problem, row_id in rows:
        if record is None:
            lines.append({"id": row_id, "skipped": problem})
            continue
        c = next(comparisons)
        line = {
            "id": record.id,
            "winner": c.winner,
            "vote_share": c.vote_share,
            "votes": list(c.votes),
            "reasoning": c.reasoning,
        }
        if record.label in (1, 2):
            line.update(label=record.label, correct=c.winner == record.label)
            labelled += 1
            correct += line["correct"]
        lines.append(line)
    write_jsonl(lines, out_path)
    return {
        "pairs": len(rows),
        "judged": len(todo),
        "skipped": len(rows) - len(todo),
        "labelled": labelled,
        "accuracy": correct / labelled if labelled else None,
    }

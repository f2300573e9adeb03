"""Teacher annotations (the paper's cold start, §3.2): one append-only JSON line per preference pair.

A teacher answers each pair with the Table 1 prompt up to N times; the number of tries it needed is the
pair's difficulty ("failed" when no try was right). The SFT set is the first right trace of each pair;
the RL set is what the paper keeps for RL: the pairs that took 2 or more tries, or failed.

One line per finished pair, written once: a killed run leaves at most a cut last line, and a rerun
skips every pair that has a line (``done_ids``), so no pair is paid for twice.
"""

from __future__ import annotations

import base64
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from r1reward.data.images import decode_base64_string
from r1reward.data.jsonl import iter_jsonl
from r1reward.data.prompt import format_prompt
from r1reward.data.records import ImageSource, PreferenceRecord

ANNOTATIONS_FILE = "annotations.jsonl"
FAILED = "failed"


def difficulty(entry: dict[str, Any]) -> str:
    """ "1".."N": the tries the teacher needed; "failed": none of its tries was right."""
    return str(entry["tries"]) if entry.get("tries") else FAILED


def is_rl_pair(entry: dict[str, Any]) -> bool:
    """The paper's rule for the RL set: the teacher needed 2 or more tries, or failed."""
    return not entry.get("tries") or entry["tries"] >= 2


def first_right_trace(entry: dict[str, Any]) -> str | None:
    return next((t["text"] for t in entry.get("traces", []) if t.get("right")), None)


def image_data_uri(source: ImageSource) -> str:
    """The image as a ``data:`` URI with its original bytes (what an OpenAI-compatible vision API takes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        embedded = decode_base64_string(str(source))
        data = embedded if embedded is not None else Path(source).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        kind = (image.format or "png").lower()
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def teacher_messages(record: PreferenceRecord) -> list[dict[str, Any]]:
    """One user turn as the released training data has it: the filled Table 1 prompt, then the image(s),
    in the OpenAI chat format."""
    content: list[dict[str, Any]] = [
        {"type": "text", "text": format_prompt(record.question, record.response_1, record.response_2)}
    ]
    content += [{"type": "image_url", "image_url": {"url": image_data_uri(s)}} for s in record.images]
    return [{"role": "user", "content": content}]


def read_annotations(path: str | Path) -> dict[str, dict[str, Any]]:
    """The finished pairs of an annotations file by id (the first line of an id wins). A cut line, as a
    kill leaves at the end, is not a finished pair."""
    path = Path(path)
    if not path.is_file():
        return {}
    done: dict[str, dict[str, Any]] = {}
    for _, row in iter_jsonl(path):
        if isinstance(row, dict) and "id" in row:
            done.setdefault(str(row["id"]), row)
    return done


def drop_cut_tail(path: str | Path) -> None:
    """Cut a last line that a kill left without its newline, so the next appended line starts clean."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        data = path.read_bytes()
        handle.truncate(data.rfind(b"\n") + 1)


def summarise(entries: list[dict[str, Any]], tries: int) -> dict[str, Any]:
    """Counts per difficulty, the SFT/RL split and the tokens used."""
    by_difficulty = Counter(difficulty(e) for e in entries)
    tries = max([tries, *(e["tries"] for e in entries if e.get("tries"))])  # an earlier run may have allowed more
    tokens = Counter()
    for entry in entries:
        for trace in entry.get("traces", []):
            tokens.update({k: int(v) for k, v in (trace.get("usage") or {}).items() if k.endswith("_tokens")})
    return {
        "pairs": len(entries),
        "difficulty": {key: by_difficulty.get(key, 0) for key in [*map(str, range(1, tries + 1)), FAILED]},
        "sft_pairs": sum(first_right_trace(e) is not None for e in entries),
        "rl_pairs": sum(is_rl_pair(e) for e in entries),
        "requests": sum(len(e.get("traces", [])) for e in entries),
        "tokens": {
            "prompt": tokens.get("prompt_tokens", 0),
            "completion": tokens.get("completion_tokens", 0),
            "total": tokens.get("total_tokens", 0),
        },
    }

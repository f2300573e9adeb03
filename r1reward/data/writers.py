"""Writing preference rows in the R1-Reward RL parquet schema (`question`, `message`, `answer`, `image`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from r1reward.data.prompt import format_prompt
from r1reward.data.records import PreferenceRecord


def rl_row(record: PreferenceRecord, image: str) -> dict:
    """One row: the filled Table 1 prompt, the chat message with the image path, the answer tag."""
    prompt = format_prompt(record.question, record.response_1, record.response_2)
    message = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
    return {"question": prompt, "message": json.dumps(message), "answer": [f"<answer>{record.label}</answer>"],
            "image": image}


def write_rl_parquet(rows: Iterable[dict], path: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("question", pa.string()), ("message", pa.string()),
                        ("answer", pa.list_(pa.string())), ("image", pa.string())])
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path)
    return Path(path)

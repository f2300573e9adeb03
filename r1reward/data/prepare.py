"""``r1reward prepare-data``: any supported preference file -> ``OUT/train.parquet`` + ``OUT/images/``.

The output is the project's own R1-Reward RL layout (``r1reward.data.writers``) with every image saved
as a file and named by a path relative to the parquet file, so the folder can be moved, mounted
elsewhere on a cluster, and loaded from any working directory without ``data.image_path_map``. Rows go
through the training loader first (same checks as ``check-data``); the ones it would skip are left out
and counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from r1reward.config.schema import Config
from r1reward.data.check import load_options
from r1reward.data.dataset import BadRowReport, iter_preferences
from r1reward.data.images import decode_base64_string
from r1reward.data.records import DataError, ImageSource, PreferenceRecord
from r1reward.data.writers import rl_row, write_rl_parquet

IMAGES_DIR = "images"
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def _image_bytes(source: ImageSource) -> bytes:
    """The encoded file behind a validated source (records from the loader carry absolute paths)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    embedded = decode_base64_string(str(source))
    return embedded if embedded is not None else Path(source).read_bytes()


def save_image(source: ImageSource, images_dir: Path) -> str:
    """Save the image's original bytes (no re-encoding, no quality loss) under a content-hash name, so a
    picture shared by many rows is stored once. Returns its path relative to the output folder."""
    data = _image_bytes(source)
    with Image.open(io.BytesIO(data)) as image:
        suffix = _EXTENSIONS.get(image.format or "", f".{(image.format or 'img').lower()}")
    name = hashlib.sha256(data).hexdigest()[:20] + suffix
    target = images_dir / name
    if not target.exists():
        partial = target.with_name(f".{name}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)  # an interrupted run leaves no truncated image under the final name
    return f"{IMAGES_DIR}/{name}"


def output_row(record: PreferenceRecord, images: list[str]) -> dict[str, Any]:
    """The writer's RL row; a record with several images lists them all in the message, images first."""
    row = rl_row(record, images[0] if images else "")
    if len(images) > 1:
        message = json.loads(row["message"])
        texts = [part for part in message[0]["content"] if part.get("type") == "text"]
        message[0]["content"] = [{"type": "image", "image": image} for image in images] + texts
        row["message"] = json.dumps(message)
    return row


def prepare_data(path: str | Path, schema: str, out_dir: str | Path, config: Config,
                 image_root: str | Path | None = None) -> dict[str, Any]:
    """Convert ``path`` (read as ``schema``) into ``out_dir``; returns what was converted and skipped.

    Writes ``out_dir/train.parquet`` only when at least one row converts.
    """
    out = Path(out_dir)
    images_dir = out / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    report = BadRowReport(str(path))
    rows: list[dict[str, Any]] = []
    written: set[str] = set()
    for record in iter_preferences(path, schema, report, **load_options(config, image_root)):
        try:
            images = [save_image(source, images_dir) for source in record.images]
        except (OSError, DataError) as exc:  # e.g. the file vanished or a disk error after validation
            raise DataError(f"cannot save the images of row {record.id} to {images_dir}: {exc}") from exc
        written.update(images)
        rows.append(output_row(record, images))
    target = out / "train.parquet"
    if rows:
        partial = out / ".train.parquet.partial"
        write_rl_parquet(rows, partial)
        os.replace(partial, target)
    labels = [row["answer"][0] for row in rows]
    return {
        "data": str(path),
        "schema": schema,
        "out": str(target) if rows else None,
        "rows": report.rows,
        "converted": len(rows),
        "skipped": report.skipped,
        "skipped_by_reason": dict(sorted(report.counts.items())),
        "labels": {"1": labels.count("<answer>1</answer>"), "2": labels.count("<answer>2</answer>")},
        "images_written": len(written),
        "first_bad_rows": list(report.examples),
    }

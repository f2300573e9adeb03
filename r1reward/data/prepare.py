"""``r1reward prepare-data``: any supported preference file -> ``OUT/train.parquet`` + ``OUT/images/``.

The output is the project's own R1-Reward RL layout (``r1reward.data.writers``) with every image saved
as a file and named by a path relative to the parquet file, so the folder can be moved, mounted
elsewhere on a cluster, and loaded from any working directory without ``data.image_path_map``. Rows go
through the training loader first (same checks as ``check-data``); the ones it would skip are left out
and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1reward.config.schema import Config
from r1reward.data.check import load_options, model_processor
from r1reward.data.dataset import BadRowReport, iter_preferences
from r1reward.data.records import DataError
from r1reward.data.writers import IMAGES_DIR, rl_row, save_image, write_rl_parquet


def prepare_data(
    path: str | Path, schema: str, out_dir: str | Path, config: Config, image_root: str | Path | None = None
) -> dict[str, Any]:
    """Convert ``path`` (read as ``schema``) into ``out_dir``; returns what was converted and skipped.

    Writes ``out_dir/train.parquet`` only when at least one row converts.
    """
    out = Path(out_dir)
    images_dir = out / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    report = BadRowReport(str(path))
    rows: list[dict[str, Any]] = []
    written: set[str] = set()
    options = load_options(config, image_root, model_processor(config)[0])
    for record in iter_preferences(path, schema, report, **options):
        try:
            images = [save_image(source, images_dir) for source in record.images]
        except (OSError, DataError) as exc:  # e.g. the file vanished or a disk error after validation
            raise DataError(f"cannot save the images of row {record.id} to {images_dir}: {exc}") from exc
        written.update(images)
        rows.append(rl_row(record, images))
    target = out / "train.parquet"
    if rows:
        write_rl_parquet(rows, target)
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

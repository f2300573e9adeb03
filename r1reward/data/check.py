"""``r1reward check-data``: what training/evaluation would make of a data file, as one JSON object.

The rows go through the loader training uses (``iter_preferences``, the streaming core of
``load_preferences``: same parsing, path map, image checks and bad-row reasons), so a file that checks
clean here loads the same way in a run. Only the prompt-length check is left out: it needs the model's
tokenizer.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from r1reward.config.schema import Config
from r1reward.data.dataset import BadRowReport, iter_preferences


def load_options(config: Config, image_root: str | Path | None = None) -> dict[str, Any]:
    """The loader's options from the config's data section, as training passes them."""
    root = image_root if image_root is not None else config.data.image_root
    return {"image_root": root, "image_path_map": dict(config.data.image_path_map)}


def check_data(path: str | Path, schema: str, config: Config, image_root: str | Path | None = None) -> dict[str, Any]:
    """Counts for ``path`` read as ``schema``: rows, loaded, skipped by reason, labels, images per row.

    A missing file or one that does not match the schema raises DataError (one line), as in training.
    """
    report = BadRowReport(str(path))
    labels: Counter = Counter()
    n_images: list[int] = []
    # Records are counted and dropped one by one: a released shard with embedded images is GBs.
    for record in iter_preferences(path, schema, report, **load_options(config, image_root)):
        labels[record.label] += 1
        n_images.append(len(record.images))
    images = None
    if n_images:
        images = {"min": min(n_images), "mean": round(sum(n_images) / len(n_images), 3), "max": max(n_images)}
    return {
        "data": str(path),
        "schema": schema,
        "rows": report.rows,
        "loaded": report.kept,
        "skipped": report.skipped,
        "skipped_by_reason": dict(sorted(report.counts.items())),
        "labels": {"1": labels[1], "2": labels[2]},
        "images_per_row": images,
        "first_bad_rows": list(report.examples),
    }

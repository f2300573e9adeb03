"""``r1reward check-data``: what training/evaluation would make of a data file, as one JSON object.

The rows go through the loader training uses (``iter_preferences``, the streaming core of
``load_preferences``: same parsing, path map, image checks, prompt-length check and bad-row reasons), so
a file that checks clean here loads the same way in a run. Prompt lengths need the processor of
``model.path``; without one they are reported as not counted.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from r1reward.config.schema import Config
from r1reward.data.dataset import BadRowReport, iter_preferences
from r1reward.data.render import count_prompt_tokens


def prompt_token_limit(config: Config) -> int:
    """The longest prompt a run takes: data.max_prompt_tokens, leaving room for rollout.max_new_tokens
    in the engine's context (vLLM refuses a longer one)."""
    return min(config.data.max_prompt_tokens, config.rollout.max_model_len - config.rollout.max_new_tokens)


def load_options(config: Config, image_root: str | Path | None = None, processor: Any = None) -> dict[str, Any]:
    """The loader's options from the config, as training passes them. With the model's ``processor``,
    prompts are measured as the engine sees them (chat template, text and image tokens)."""
    root = image_root if image_root is not None else config.data.image_root
    options: dict[str, Any] = {"image_root": root, "image_path_map": dict(config.data.image_path_map)}
    if processor is not None:
        options["max_prompt_tokens"] = prompt_token_limit(config)
        options["token_counter"] = partial(
            count_prompt_tokens, processor, min_pixels=config.data.min_pixels, max_pixels=config.data.max_pixels
        )
    return options


def model_processor(config: Config) -> tuple[Any, str]:
    """(the processor of ``model.path``, "") from local files, or (None, why it cannot be loaded)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(config.model.path, local_files_only=True), ""
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"not counted: cannot load the processor of model.path {config.model.path}: {reason}"


def check_data(path: str | Path, schema: str, config: Config, image_root: str | Path | None = None) -> dict[str, Any]:
    """Counts for ``path`` read as ``schema``: rows, loaded, skipped by reason, labels, images per row.

    A missing file or one that does not match the schema raises DataError (one line), as in training.
    """
    report = BadRowReport(str(path))
    labels: Counter = Counter()
    n_images: list[int] = []
    processor, unchecked = model_processor(config)
    options = load_options(config, image_root, processor)
    n_tokens: list[int] = []  # of every row measured, the ones then skipped as too long included
    if processor is not None:
        count = options["token_counter"]

        def measured(record: Any) -> int:
            n_tokens.append(count(record))
            return n_tokens[-1]

        options["token_counter"] = measured
    # Records are counted and dropped one by one: a released shard with embedded images is GBs.
    for record in iter_preferences(path, schema, report, **options):
        labels[record.label] += 1
        n_images.append(len(record.images))
    tokens: dict[str, Any] = {"limit": prompt_token_limit(config)}
    if processor is None:
        tokens["unchecked"] = unchecked
    elif n_tokens:
        tokens.update(min=min(n_tokens), max=max(n_tokens))
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
        "cleaned_by_reason": dict(sorted(report.cleaned.items())),
        "labels": {"1": labels[1], "2": labels[2]},
        "images_per_row": images,
        "prompt_tokens": tokens,
        "first_bad_rows": list(report.examples),
    }

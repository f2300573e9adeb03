"""Loading preference files into validated records, with bad-row accounting and position swapping.

Real preference data has broken rows (missing images, empty or identical responses, ...). By default
they are skipped and counted by reason, so that one bad row does not stop a 200K-pair run; ``strict``
turns the first one into an error that names the file, row and reason.

Position swap: the paper balances the answers 1 and 2 exactly 1:1 in training, otherwise the model can
learn "the first response is better" (MM-RLHF rows always list the chosen response first).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from r1reward.data.images import check_image, map_path, resolve_source
from r1reward.data.prompt import neutralize_special_tokens
from r1reward.data.readers import IMAGE_FALLBACK, RowContext, iter_raw_rows, parse_row
from r1reward.data.records import LABELS, DataError, PreferenceRecord
from r1reward.data.render import MAX_IMAGES

TokenCounter = Callable[[PreferenceRecord], int]
_MAX_EXAMPLES = 5


@dataclass
class BadRowReport:
    """What load_preferences read, kept and skipped (by reason), with the first few bad rows."""

    path: str
    rows: int = 0
    kept: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # "file:row: reason: detail"
    cleaned: Counter = field(default_factory=Counter)  # kept rows whose text was changed, by reason

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def add(self, ctx: RowContext, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"{ctx.path}:{ctx.row}: {reason}: {detail[:200]}")

    def as_dict(self) -> dict[str, int]:
        """Flat counts for metrics, e.g. {"rows": 170, "kept": 145, "skipped/video-unsupported": 25}."""
        out = {"rows": self.rows, "kept": self.kept, "skipped": self.skipped}
        out.update({f"skipped/{reason}": n for reason, n in sorted(self.counts.items())})
        out.update({f"cleaned/{reason}": n for reason, n in sorted(self.cleaned.items())})
        return out

    def summary(self) -> str:
        text = f"Loaded {self.kept} of {self.rows} rows from {self.path}"
        if self.cleaned:
            text += "; cleaned " + ", ".join(f"{reason} {n}" for reason, n in self.cleaned.most_common())
        if not self.skipped:
            return text + "; no bad rows."
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.counts.most_common())
        return f"{text}; skipped {self.skipped} ({reasons}). First bad rows: " + "; ".join(self.examples)


def _bad(reason: str, detail: str) -> DataError:
    return DataError(detail, reason=reason)


def neutralize_record(record: PreferenceRecord) -> tuple[PreferenceRecord, int]:
    """The record with special-token strings in its texts neutralised (see data/prompt.py), and how many."""
    texts = {
        name: neutralize_special_tokens(getattr(record, name)) for name in ("question", "response_1", "response_2")
    }
    count = sum(n for _, n in texts.values())
    return (dataclasses.replace(record, **{k: t for k, (t, _) in texts.items()}) if count else record), count


def _usable_images(record: PreferenceRecord, image_root: str | Path, path_map: Mapping[str, str] | None) -> list:
    """The record's images (paths rewritten by ``path_map``) if they all open, else its fallback images
    (the R1-Reward RL ``image`` column) if those do. Raises the first image's DataError otherwise."""
    images = [map_path(s, path_map) for s in record.images]
    fallback = [map_path(s, path_map) for s in record.extra.get(IMAGE_FALLBACK) or []]
    try:
        for source in images:
            check_image(source, image_root)  # raises DataError with image-missing / image-undecodable
        return images
    except DataError as exc:
        if len(fallback) != len(images):
            raise
        try:
            for source in fallback:
                check_image(source, image_root)
        except DataError as second:
            # A missing path with a corrupt embedded image is a corrupt image: name the actual problem.
            reason = second.reason if exc.reason == "image-missing" else exc.reason
            raise DataError(f"{exc}; the image column fails too: {second}", reason=reason) from exc
        return fallback


def validate_record(
    record: PreferenceRecord,
    image_root: str | Path,
    *,
    allow_video: bool = False,
    require_images: bool = True,
    max_prompt_tokens: int | None = None,
    token_counter: TokenCounter | None = None,
    image_path_map: Mapping[str, str] | None = None,
) -> PreferenceRecord:
    """The record with its image paths rewritten by ``image_path_map`` (longest prefix first) and made
    absolute, or DataError with the first problem's reason."""
    if record.is_video and not allow_video:
        raise _bad("video-unsupported", f"video input is not supported yet: {record.media}")
    if record.label not in LABELS:
        raise _bad("bad-label", f"label must be 1 or 2, got {record.label!r}")
    if not record.response_1.strip() or not record.response_2.strip():
        raise _bad("empty-response", "a response is empty")
    if record.response_1.strip() == record.response_2.strip():
        raise _bad("identical-responses", "the two responses are identical")
    if require_images and not record.images and not record.is_video:
        raise _bad("image-missing", "the row has no image")
    if len(record.images) > MAX_IMAGES:
        raise _bad("too-many-images", f"{len(record.images)} images, the engine takes at most {MAX_IMAGES} per prompt")
    images = _usable_images(record, image_root, image_path_map)
    # The fallback has served its purpose: dropping it keeps embedded bytes out of memory.
    extra = {k: v for k, v in record.extra.items() if k != IMAGE_FALLBACK}
    record = dataclasses.replace(record, images=[resolve_source(s, image_root) for s in images], extra=extra)
    # Last, because counting tokens can be the most expensive check.
    if max_prompt_tokens is not None and token_counter is not None:
        n_tokens = token_counter(record)
        if n_tokens > max_prompt_tokens:
            raise _bad("prompt-too-long", f"prompt has {n_tokens} tokens > {max_prompt_tokens}")
    return record


def balanced_swap(records: Sequence[PreferenceRecord], seed: int, epoch: int = 0) -> list[PreferenceRecord]:
    """Swap response order so that exactly half of the records have label 2 (one more/less if odd).

    A seeded permutation (seed, epoch) picks which records should end up with label 2; each record is
    swapped iff its current label differs from that target. Same inputs, seed and epoch, same output.
    """
    bad = [r.id for r in records if r.label not in LABELS]
    if bad:
        raise DataError(f"cannot balance records with labels outside 1/2, e.g. id {bad[0]!r}")
    rng = random.Random(f"r1reward-swap:{seed}:{epoch}")
    n_label_2 = len(records) // 2 + (rng.random() < 0.5 if len(records) % 2 else 0)
    order = list(range(len(records)))
    rng.shuffle(order)
    want_label_2 = set(order[:n_label_2])
    return [r.swapped() if (r.label == 2) != (i in want_label_2) else r for i, r in enumerate(records)]


def iter_preferences(
    path: str | Path,
    schema: str,
    report: BadRowReport,
    image_root: str | Path | None = None,
    strict: bool = False,
    max_prompt_tokens: int | None = None,
    token_counter: TokenCounter | None = None,
    allow_video: bool = False,
    *,
    require_images: bool = True,
    image_path_map: Mapping[str, str] | None = None,
    unique_ids: bool = False,
) -> Iterator[PreferenceRecord]:
    """The validated records of a file/directory one at a time, in file order, counting into ``report``.

    The streaming core of ``load_preferences`` (same checks), for tools that must not hold a multi-GB
    set with embedded images in memory (check-data, prepare-data). With ``unique_ids`` (training) a row
    whose id was already kept is skipped as ``duplicate-id``; benchmarks keep theirs (VL-RewardBench
    repeats 25 ids for different pairs).
    """
    if max_prompt_tokens is not None and token_counter is None:
        raise ValueError("max_prompt_tokens needs a token_counter(record) -> int")
    kept_ids: set[str] = set()  # a second row with a kept row's id is a duplicate (the first one wins)
    for ctx, row in iter_raw_rows(path, schema):
        report.rows += 1
        try:
            record, special_tokens = neutralize_record(parse_row(schema, row, ctx))
            record = validate_record(
                record,
                image_root if image_root is not None else ctx.path.parent,
                allow_video=allow_video,
                require_images=require_images,
                max_prompt_tokens=max_prompt_tokens,
                token_counter=token_counter,
                image_path_map=image_path_map,
            )
            if unique_ids and record.id in kept_ids:
                raise _bad("duplicate-id", f"id {record.id!r} was already read")
        except DataError as exc:
            if not exc.reason:  # not a per-row problem (e.g. the file itself): always fatal
                raise
            if strict:
                raise DataError(f"{ctx.path}:{ctx.row}: {exc.reason}: {exc}", reason=exc.reason) from exc
            report.add(ctx, exc.reason, str(exc))
            continue
        report.kept += 1
        if special_tokens:
            report.cleaned["special-tokens"] += 1
        kept_ids.add(record.id)
        yield record


def load_preferences(
    path: str | Path,
    schema: str,
    image_root: str | Path | None = None,
    strict: bool = False,
    max_prompt_tokens: int | None = None,
    token_counter: TokenCounter | None = None,
    allow_video: bool = False,
    swap_seed: int | None = 0,
    *,
    epoch: int = 0,
    require_images: bool = True,
    verbose: bool = True,
    image_path_map: Mapping[str, str] | None = None,
    unique_ids: bool = False,
) -> tuple[list[PreferenceRecord], BadRowReport]:
    """Read, validate and (unless ``swap_seed`` is None) position-swap the records of a file/directory.

    Image paths are first rewritten by ``image_path_map`` (``data.image_path_map``: prefix -> prefix),
    then relative ones are resolved against ``image_root``, by default the data file's directory;
    returned records carry absolute paths. Benchmarks should pass ``swap_seed=None`` to keep the chosen
    response first, as the released evaluation does. A missing file or a file that does not match the
    schema raises DataError at once, whatever ``strict`` says.
    """
    report = BadRowReport(str(path))
    records = list(
        iter_preferences(
            path,
            schema,
            report,
            image_root,
            strict,
            max_prompt_tokens,
            token_counter,
            allow_video,
            require_images=require_images,
            image_path_map=image_path_map,
            unique_ids=unique_ids,
        )
    )
    if verbose:
        print(report.summary(), flush=True)
    if swap_seed is not None:
        records = balanced_swap(records, swap_seed, epoch)
    return records, report


class PreferenceDataset(Sequence[PreferenceRecord]):
    """Validated records whose response order is re-drawn each epoch (``set_epoch``)."""

    def __init__(
        self,
        records: Sequence[PreferenceRecord],
        swap_seed: int | None = 0,
        report: BadRowReport | None = None,
    ) -> None:
        self.base_records = list(records)  # as read: the swap is always drawn from these
        self.swap_seed = swap_seed
        self.report = report
        self.epoch = 0
        self._records = self._arrange(0)

    @classmethod
    def from_file(cls, path: str | Path, schema: str, swap_seed: int | None = 0, **kwargs) -> PreferenceDataset:
        """load_preferences(path, schema, **kwargs) wrapped in a dataset; swapping happens per epoch."""
        records, report = load_preferences(path, schema, swap_seed=None, **kwargs)
        return cls(records, swap_seed, report)

    def _arrange(self, epoch: int) -> list[PreferenceRecord]:
        if self.swap_seed is None:
            return list(self.base_records)
        return balanced_swap(self.base_records, self.swap_seed, epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._records = self._arrange(epoch)

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> PreferenceRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[PreferenceRecord]: ...
    def __getitem__(self, index: int | slice) -> PreferenceRecord | list[PreferenceRecord]:
        return self._records[index]

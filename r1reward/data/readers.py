"""Readers that turn the preference files we meet into PreferenceRecords, one schema each.

Files are streamed (JSONL line by line, parquet in record batches) so that the multi-GB R1-Reward-RL
shards never sit in memory whole; a .json file holding one array (Multimodal RewardBench's
``all_data.json``) is read whole. A schema declares the columns it needs; a file that lacks them fails
at once with DataError. Problems with a single row are raised as DataError with a ``reason``, so that
``load_preferences`` can count and skip them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from r1reward.data.images import decode_base64_string, is_embedded
from r1reward.data.jsonl import iter_jsonl
from r1reward.data.prompt import EVALUATOR_PROMPT
from r1reward.data.records import DataError, ImageSource, PreferenceRecord

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
# extra[IMAGE_FALLBACK]: the images to use instead of ``images`` when those cannot be opened. The R1-Reward
# RL rows name their authors' paths in the message but carry the image itself in the ``image`` column.
IMAGE_FALLBACK = "image_fallback"
_PARQUET_BATCH_ROWS = 64  # rows may carry embedded images, so keep batches small


@dataclass(frozen=True)
class RowContext:
    path: Path  # the data file the row came from
    row: int  # 1-based row number in that file (the line number for JSONL)


@dataclass(frozen=True)
class Schema:
    name: str
    required: tuple[str, ...]
    parse: Callable[[dict[str, Any], RowContext], PreferenceRecord]
    # Groups of which at least one column must be present (e.g. image or video).
    one_of: tuple[tuple[str, ...], ...] = ()

    def missing(self, columns: set[str]) -> list[str]:
        gaps = [c for c in self.required if c not in columns]
        gaps += ["|".join(group) for group in self.one_of if not columns.intersection(group)]
        return gaps


SCHEMAS: dict[str, Schema] = {}  # filled at the bottom of this module


def get_schema(name: str) -> Schema:
    if name not in SCHEMAS:
        raise DataError(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}")
    return SCHEMAS[name]


def data_files(path: str | Path) -> list[Path]:
    """The data files behind ``path``: the file itself, or a directory's *.jsonl/*.parquet files (shards)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in DATA_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"no .jsonl, .json or .parquet files in directory {path}")
        return files
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix not in DATA_SUFFIXES:
        raise DataError(f"unsupported data file type {path.suffix!r} (want .jsonl, .json or .parquet): {path}")
    return [path]


def _iter_jsonl(path: Path, schema: Schema) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    checked = False
    for line_no, row in iter_jsonl(path):  # a bad line (e.g. a truncated last one) is one bad row
        if not checked and not isinstance(row, DataError):
            _check_columns(path, schema, set(row))  # JSONL has no header: the first row stands for the columns
            checked = True
        yield line_no, row


def _iter_json(path: Path, schema: Schema) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """A .json file: one JSON array of row objects (read whole), or JSON lines under a .json name."""
    with path.open(encoding="utf-8") as handle:
        head = handle.read(4096).lstrip()
    if not head.startswith("["):  # many hub files named .json are JSON lines
        yield from _iter_jsonl(path, schema)
        return
    try:
        with path.open(encoding="utf-8") as handle:
            rows = json.load(handle)
    except json.JSONDecodeError as exc:  # a broken array cannot be split into rows: the file is bad
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    objects = [row for row in rows if isinstance(row, dict)]
    if objects:
        _check_columns(path, schema, set(objects[0]))
    for row_no, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            yield row_no, row
        else:
            yield row_no, DataError(f"not a JSON object: {type(row).__name__}", reason="invalid-json")


def _iter_parquet(path: Path, schema: Schema) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-parquet files
        raise DataError(f"cannot read parquet file {path}: {exc}") from exc
    _check_columns(path, schema, set(parquet.schema_arrow.names))
    row_no = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def _check_columns(path: Path, schema: Schema, columns: set[str]) -> None:
    missing = schema.missing(columns)
    if missing:
        raise DataError(
            f"{path} does not match schema {schema.name!r}: missing columns {missing}; found {sorted(columns)}"
        )


_ROW_READERS = {".jsonl": _iter_jsonl, ".json": _iter_json, ".parquet": _iter_parquet}


def read_rows(file: str | Path, schema: str) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """(1-based row number, raw row) of one data file, the reader picked by its suffix."""
    file = Path(file)
    if file.suffix not in _ROW_READERS:
        raise DataError(f"unsupported data file type {file.suffix!r} (want .jsonl, .json or .parquet): {file}")
    return _ROW_READERS[file.suffix](file, get_schema(schema))


def iter_raw_rows(path: str | Path, schema: str) -> Iterator[tuple[RowContext, dict[str, Any] | DataError]]:
    """(context, raw row) for every row of every file behind ``path``; an unreadable row is a DataError."""
    get_schema(schema)  # an unknown schema fails before any file is opened
    for file in data_files(path):
        for row_no, row in read_rows(file, schema):
            yield RowContext(file, row_no), row


def parse_row(schema: str, row: dict[str, Any] | DataError, ctx: RowContext) -> PreferenceRecord:
    """One raw row as a record. Raises DataError with a reason for a row that cannot be read."""
    if isinstance(row, DataError):
        raise row
    spec = get_schema(schema)
    missing = spec.missing({k for k, v in row.items() if v is not None})
    if missing:
        raise DataError(f"row lacks {missing}", reason="missing-field")
    return spec.parse(row, ctx)


def read_records(path: str | Path, schema: str) -> Iterator[PreferenceRecord]:
    """Stream the records of a file, unvalidated. A row that cannot be parsed raises DataError."""
    for ctx, row in iter_raw_rows(path, schema):
        try:
            yield parse_row(schema, row, ctx)
        except DataError as exc:
            raise DataError(f"{ctx.path}:{ctx.row}: {exc.reason}: {exc}", reason=exc.reason) from exc


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _image_value(value: Any) -> ImageSource | None:
    """Normalise the ways datasets store one image: a path, bytes, base64 text, or {"bytes", "path"}."""
    if value is None:
        return None
    if isinstance(value, dict):  # the Hugging Face `Image` feature as stored in parquet
        return _image_value(value.get("bytes")) or _image_value(value.get("path"))
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) if value else None
    text = str(value).strip()
    if not text:
        return None
    embedded = decode_base64_string(text)
    return embedded if embedded is not None else text


def _images(value: Any) -> list[ImageSource]:
    source = _image_value(value)
    return [] if source is None else [source]


def _image_list(value: Any) -> list[ImageSource]:
    """One image or a list of them (a column may hold either)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [s for s in map(_image_value, values) if s is not None]


def _media_string(value: Any) -> str:
    if isinstance(value, dict):
        return _text(value.get("path"))
    return value if isinstance(value, str) and not is_embedded(value) else ""


def _label(value: Any) -> int:
    """An integer label, or 0 (a bad label) when the value is not an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool):  # bool is an int subclass, but True is no label
        return 0
    try:
        return int(str(value).strip())
    except ValueError:
        return 0


_Q_HEAD, _, _rest = EVALUATOR_PROMPT.partition("{question}")
_R1_SEP, _, _rest = _rest.partition("{answer1}")
_R2_SEP, _, _TAIL = _rest.partition("{answer2}")


_LOOSE_QUESTION = re.compile(r"#+\s*\[Question\]:[ \t]*\n")
_LOOSE_RESPONSE_1 = re.compile(r"\s*#+\s*\[Response 1\]:[ \t]*\n")
_LOOSE_RESPONSE_2 = re.compile(r"\s*#+\s*\[Response 2\]:[ \t]*\n")
_LOOSE_TAIL = re.compile(r"\s*#+\s*\*\*Output Format")


def _parse_prompt_sections(text: str) -> tuple[str, str, str] | None:
    """The three sections by their ``###### [..]:`` headings alone, for prompts whose preamble or
    spacing differs from ours (responses lose their trailing whitespace)."""
    start = _LOOSE_QUESTION.search(text)
    if start is None:
        return None
    rest = text[start.end() :]
    r1 = _LOOSE_RESPONSE_1.search(rest)
    if r1 is None:
        return None
    question, rest = rest[: r1.start()], rest[r1.end() :]
    r2 = list(_LOOSE_RESPONSE_2.finditer(rest))
    if not r2:
        return None
    response_1, rest = rest[: r2[-1].start()], rest[r2[-1].end() :]
    tail = list(_LOOSE_TAIL.finditer(rest))
    return question, response_1, rest[: tail[-1].start()] if tail else rest.rstrip()


def parse_filled_prompt(text: str) -> tuple[str, str, str] | None:
    """(question, response_1, response_2) from a filled Table-1 prompt, or None if ``text`` is not one.

    Responses could in principle contain the markers; we split at the first response-1 marker and the
    last response-2 marker, so only text that itself forges the markers is ambiguous. A prompt that is
    not byte-identical to ours is split by its section headings.
    """
    start, end = text.find(_Q_HEAD), text.rfind(_TAIL)
    if start < 0 or end < 0:
        return _parse_prompt_sections(text)
    body = text[start + len(_Q_HEAD) : end]
    question, sep1, responses = body.partition(_R1_SEP)
    response_1, sep2, response_2 = responses.rpartition(_R2_SEP)
    if not sep1 or not sep2:
        return _parse_prompt_sections(text)
    return question, response_1, response_2


def _message_parts(message: Any) -> tuple[list[str], list[str], list[str]]:
    """(texts, image values, video values) of a JSON chat list, in order."""
    try:
        chat = json.loads(message) if isinstance(message, str) else message
    except json.JSONDecodeError as exc:
        raise DataError(f"message is not valid JSON: {exc}", reason="unparseable-message") from exc
    texts, images, videos = [], [], []
    for turn in chat if isinstance(chat, list) else []:
        content = turn.get("content") if isinstance(turn, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(_text(part.get("text")))
            elif isinstance(part, dict) and part.get("type") in ("image", "image_url"):
                value = part.get("image") or part.get("image_url")
                images.append(value.get("url") if isinstance(value, dict) else value)
            elif isinstance(part, dict) and part.get("type") in ("video", "video_url"):
                value = part.get("video") or part.get("video_url")
                videos.append(_text(value.get("url") if isinstance(value, dict) else value))
    return texts, images, videos


def _parse_r1reward_rl(row: dict[str, Any], ctx: RowContext) -> PreferenceRecord:
    texts, message_images, videos = _message_parts(row["message"])
    # Our writer puts the filled prompt in `question`; the released set has the bare question there and
    # the filled prompt in the message's text part.
    parsed = next(filter(None, map(parse_filled_prompt, [_text(row["question"]), *texts])), None)
    if parsed is None:
        raise DataError("no filled Table-1 prompt in question or message", reason="unparseable-prompt")
    answer = row["answer"]
    answer_text = " ".join(map(str, answer)) if isinstance(answer, (list, tuple)) else _text(answer)
    match = re.search(r"<answer>(.*?)</answer>", answer_text, re.DOTALL)
    images = [s for s in map(_image_value, message_images) if s is not None]
    column = _image_list(row.get("image"))
    extra = {}
    if not images:
        images = column
    elif column and column != images:
        # The message's paths are tried first (a local file keeps no bytes in memory); the image column,
        # often the embedded image, stands in when they cannot be opened (see validate_record).
        extra[IMAGE_FALLBACK] = column
    # A video row (no images, a video part) is read so that the loader can skip it by name.
    is_video = bool(videos) and not images
    return PreferenceRecord(
        id=_text(row.get("id")) or f"{ctx.path.stem}-{ctx.row}",
        question=parsed[0],
        images=images,
        response_1=parsed[1],
        response_2=parsed[2],
        label=_label(match.group(1) if match else answer_text),
        source=ctx.path.stem,
        media=videos[0] if is_video else next((s for s in images if isinstance(s, str)), ""),
        extra=extra,
        is_video=is_video,
    )


def _parse_mm_rlhf(row: dict[str, Any], ctx: RowContext) -> PreferenceRecord:
    image, video = row.get("image"), row.get("video")
    is_video = image is None and video is not None
    # The chosen response goes first (as in the released evaluation); position swapping balances it.
    return PreferenceRecord(
        id=_text(row["id"]),
        question=_text(row["prompt"]),
        images=_images(image),
        response_1=_text(row["chosen"]),
        response_2=_text(row["rejected"]),
        label=1,
        source=ctx.path.stem,
        media=_media_string(video if is_video else image),
        is_video=is_video,
    )


def _parse_vl_rewardbench_hub(row: dict[str, Any], ctx: RowContext) -> PreferenceRecord:
    responses, ranking = row["response"], row["human_ranking"]
    if not isinstance(responses, (list, tuple)) or len(responses) != 2:
        raise DataError(f"response must hold exactly two responses, got {responses!r:.80}", reason="bad-row")
    # human_ranking gives each response's rank (lower is better): [0, 1] means response 0 wins.
    label = 0
    if isinstance(ranking, (list, tuple)) and len(ranking) == 2 and ranking[0] != ranking[1]:
        label = 1 if ranking[0] < ranking[1] else 2
    return PreferenceRecord(
        id=_text(row["id"]),
        question=_text(row["query"]),
        images=_images(row["image"]),
        response_1=_text(responses[0]),
        response_2=_text(responses[1]),
        label=label,
        source=ctx.path.stem,
        media=_media_string(row["image"]),
    )


def _parse_multimodal_rewardbench(row: dict[str, Any], ctx: RowContext) -> PreferenceRecord:
    label = {"Output1": 1, "Output2": 2}.get(_text(row["Better"]).strip(), 0)
    # all_data.json has Category at the top level; the judge-output files nest it under Meta.
    meta = row.get("Meta")
    category = row.get("Category") or (meta.get("Category") if isinstance(meta, dict) else None)
    return PreferenceRecord(
        id=_text(row["ID"]),
        question=_text(row["Text"]),
        images=_images(row["Image"]),
        response_1=_text(row["Output1"]),
        response_2=_text(row["Output2"]),
        label=label,
        source=ctx.path.stem,
        category=_text(category),
        media=_media_string(row["Image"]),
    )


_CANONICAL = ("id", "question", "images", "response_1", "response_2", "label", "source", "category")


def _parse_canonical(row: dict[str, Any], ctx: RowContext) -> PreferenceRecord:
    raw_images = row["images"]
    raw_images = [raw_images] if isinstance(raw_images, (str, bytes, dict)) else list(raw_images)
    images = [s for s in map(_image_value, raw_images) if s is not None]
    return PreferenceRecord(
        id=_text(row["id"]),
        question=_text(row["question"]),
        images=images,
        response_1=_text(row["response_1"]),
        response_2=_text(row["response_2"]),
        label=_label(row["label"]),
        source=_text(row.get("source")) or ctx.path.stem,
        category=_text(row.get("category")),
        media=next((s for s in images if isinstance(s, str)), ""),
        # Anything else (the SFT file's "target") rides along; it refers to this row's response order.
        extra={k: v for k, v in row.items() if k not in _CANONICAL},
    )


SCHEMAS.update(
    {
        schema.name: schema
        for schema in (
            Schema("r1reward-rl", ("question", "message", "answer"), _parse_r1reward_rl),
            Schema("mm-rlhf", ("id", "prompt", "chosen", "rejected"), _parse_mm_rlhf, (("image", "video"),)),
            Schema(
                "vl-rewardbench-hub", ("id", "query", "response", "image", "human_ranking"), _parse_vl_rewardbench_hub
            ),
            Schema(
                "multimodal-rewardbench",
                ("ID", "Text", "Image", "Output1", "Output2", "Better"),
                _parse_multimodal_rewardbench,
            ),
            Schema("canonical", ("id", "question", "images", "response_1", "response_2", "label"), _parse_canonical),
        )
    }
)

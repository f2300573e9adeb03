"""Writing preference rows in the R1-Reward RL parquet schema (`question`, `message`, `answer`, `image`).

The path contract: every image a written file names is either absolute or relative to the file itself,
and readers resolve relative paths against the file's folder. So a written set loads the same from any
working directory, and can be moved as a folder. Images that a record carries embedded (bytes, base64)
are saved under ``images/`` beside the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from r1reward.data.images import decode_base64_string, is_embedded
from r1reward.data.prompt import format_prompt
from r1reward.data.records import ImageSource, PreferenceRecord

IMAGES_DIR = "images"
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def rl_row(record: PreferenceRecord, images: str | list[str]) -> dict:
    """One row: the filled Table 1 prompt, the chat message (text first, then the images, as in the
    released training data), the answer tag; ``image`` holds the first image."""
    images = [images] if isinstance(images, str) else list(images)
    prompt = format_prompt(record.question, record.response_1, record.response_2)
    content = [{"type": "text", "text": prompt}] + [{"type": "image", "image": image} for image in images]
    return {
        "question": prompt,
        "message": json.dumps([{"role": "user", "content": content}]),
        "answer": [f"<answer>{record.label}</answer>"],
        "image": images[0] if images else "",
    }


def write_rl_parquet(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows atomically (a temporary file, then a rename): a crash never leaves half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("question", pa.string()), ("message", pa.string()), ("answer", pa.list_(pa.string())), ("image", pa.string())]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), partial)
    os.replace(partial, path)
    return path


def _image_bytes(source: ImageSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    embedded = decode_base64_string(str(source))
    return embedded if embedded is not None else Path(source).read_bytes()


def save_image(source: ImageSource, images_dir: Path) -> str:
    """Save the image's original bytes (no re-encoding) under a content-hash name, so a picture shared by
    many rows is stored once. Returns its path relative to ``images_dir``'s parent."""
    data = _image_bytes(source)
    with Image.open(io.BytesIO(data)) as image:
        suffix = _EXTENSIONS.get(image.format or "", f".{(image.format or 'img').lower()}")
    name = hashlib.sha256(data).hexdigest()[:20] + suffix
    images_dir.mkdir(parents=True, exist_ok=True)
    target = images_dir / name
    if not target.exists():
        partial = target.with_name(f".{name}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)  # an interrupted run leaves no truncated image under the final name
    return f"{images_dir.name}/{name}"


def portable_image(source: ImageSource, out_dir: str | Path) -> str:
    """How a file written in ``out_dir`` names ``source``: a path relative to ``out_dir`` (a relative
    ``source`` is taken relative to the working directory), or a saved copy of an embedded image."""
    if is_embedded(source):
        return save_image(source, Path(out_dir) / IMAGES_DIR)
    return os.path.relpath(os.path.abspath(str(source)), os.path.abspath(out_dir))


def write_records(records: Iterable[PreferenceRecord], path: str | Path) -> Path:
    """Records (as loaded: absolute or working-directory-relative image paths) as an RL parquet that
    follows the path contract."""
    out_dir = Path(path).parent
    return write_rl_parquet((rl_row(r, [portable_image(s, out_dir) for s in r.images]) for r in records), path)

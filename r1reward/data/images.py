"""Opening images from the sources records carry: paths, raw bytes or base64 data URIs. Never the network."""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from r1reward.data.records import DataError, ImageSource

_DATA_URI = re.compile(r"^data:(image/[\w.+-]+)?(;[\w-]+=[\w.-]+)*;base64,", re.IGNORECASE)
# A bare base64 payload (as some datasets store images in a string column): long, base64 alphabet only.
_BARE_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")
_BARE_BASE64_MIN_CHARS = 512
# Shorter bare base64 still counts when it starts like an encoded image file (PNG, JPEG, GIF, WebP, TIFF):
# small images in a string column must not be mistaken for paths.
_BASE64_IMAGE_PREFIXES = ("iVBORw0KGgo", "/9j/", "R0lGOD", "UklGR", "SUkqA", "TU0AK")


def _is_base64_text(text: str) -> bool:
    if _DATA_URI.match(text):
        return True
    if not _BARE_BASE64.match(text):
        return False
    return len(text) >= _BARE_BASE64_MIN_CHARS or (
        text.startswith(_BASE64_IMAGE_PREFIXES) and len("".join(text.split())) % 4 == 0
    )


def is_embedded(source: ImageSource) -> bool:
    """True for sources that carry the image itself (bytes, data URI, base64 text) rather than a path."""
    return isinstance(source, (bytes, bytearray, memoryview)) or (isinstance(source, str) and _is_base64_text(source))


def decode_base64_string(text: str) -> bytes | None:
    """The bytes of a data URI or of a long bare base64 string; None when ``text`` is neither (a path)."""
    if not _is_base64_text(text):
        return None
    match = _DATA_URI.match(text)
    payload = text[match.end() :] if match else text
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"invalid base64 image data: {exc}", reason="image-undecodable") from exc


def map_path(source: ImageSource, path_map: Mapping[str, str] | None) -> ImageSource:
    """``source`` with its longest matching prefix in ``path_map`` rewritten (``data.image_path_map``).

    Released files carry their authors' absolute paths (e.g. /mmu_mllm_hdd/...); the map points them
    at a local copy. Embedded images pass through unchanged.
    """
    if not path_map or not isinstance(source, (str, Path)) or is_embedded(str(source)):
        return source
    text = str(source)
    prefix = max((p for p in path_map if p and text.startswith(p)), key=len, default=None)
    return text if prefix is None else path_map[prefix] + text[len(prefix) :]


def resolve_path(source: str | Path, image_root: str | Path | None = None, kind: str = "image") -> Path:
    """An image (or video: ``kind``) path made absolute: relative paths are taken relative to
    ``image_root`` when given, then to the working directory, so that records stay valid wherever they
    are used later."""
    text = str(source)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
        raise DataError(f"{kind} URLs are not supported (no network access): {text[:200]}", reason=f"{kind}-missing")
    path = Path(text).expanduser()
    if not path.is_absolute() and image_root is not None:
        path = Path(image_root).expanduser() / path
    return path.absolute()


def resolve_source(source: ImageSource, image_root: str | Path | None = None) -> ImageSource:
    """Relative paths become absolute path strings; embedded images are returned unchanged."""
    if is_embedded(source):
        return source
    return str(resolve_path(source, image_root))  # type: ignore[arg-type]


def _open(source: ImageSource, image_root: str | Path | None) -> tuple[Image.Image, str]:
    """Open lazily (header only) and return the image with a short description for error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), f"<{len(source)} bytes>"
    elif isinstance(source, (str, Path)):
        embedded = decode_base64_string(source) if isinstance(source, str) else None
        if embedded is not None:
            data, where = embedded, "<base64 image>"
        else:
            path = resolve_path(source, image_root)
            if not path.is_file():
                raise DataError(f"image not found: {path}", reason="image-missing")
            data, where = path.read_bytes(), str(path)
    else:
        raise DataError(f"unsupported image source type {type(source).__name__}", reason="image-missing")
    try:
        return Image.open(io.BytesIO(data)), where
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {where}: {exc}", reason="image-undecodable") from exc


def load_image(source: ImageSource | Image.Image, image_root: str | Path | None = None) -> Image.Image:
    """The image as a fully decoded RGB PIL image. Raises DataError (reason image-missing/-undecodable).
    A PIL image is taken as it is (API users pass them directly; records carry paths or bytes)."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    image, where = _open(source, image_root)
    try:
        image.load()
        # Palette/alpha/greyscale images all become 3-channel RGB, which is what the vision tower takes.
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {where}: {exc}", reason="image-undecodable") from exc


def image_size(source: ImageSource | Image.Image, image_root: str | Path | None = None) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding its pixels."""
    if isinstance(source, Image.Image):
        return source.size
    return _open(source, image_root)[0].size


def check_image(source: ImageSource, image_root: str | Path | None = None) -> None:
    """Cheap validity check for load-time filtering: the file exists and its header/structure is sound.

    Uses PIL's verify() instead of a full decode so that validating a 200K-pair dataset stays fast.
    """
    image, where = _open(source, image_root)
    try:
        image.verify()
    except Exception as exc:  # verify() raises a variety of exception types for corrupt files
        raise DataError(f"cannot decode image {where}: {exc}", reason="image-undecodable") from exc


# --- images from untrusted requests (r1reward serve) --------------------------------------------------------
SAFE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # GIF: its first frame
NOT_ALLOWED = "no such image under the server's --image-root (paths elsewhere are refused)"


@dataclass(frozen=True)
class ImagePolicy:
    """What a client may make the server open. Paths: only files under ``roots`` (none: no paths at all),
    relative ones taken from the first root; every image at most ``max_bytes`` and ``max_pixels``, in
    one of ``formats``."""

    roots: tuple[Path, ...] = ()
    max_bytes: int = 20 * 2**20
    max_pixels: int = 25_000_000
    formats: tuple[str, ...] = SAFE_FORMATS

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", tuple(Path(root).resolve() for root in self.roots))


class ImageRefused(DataError):
    """An image a policy refuses: the message is what the client reads, ``detail`` what the server logs
    (it may name paths and exception text)."""

    def __init__(self, message: str, detail: str, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.detail = " ".join(detail.split())


def _read_allowed(text: str, policy: ImagePolicy) -> bytes:
    """The bytes of a file under one of the policy's roots; one generic refusal for anything else, so
    that a reply says nothing about what exists outside them."""

    def refuse(why: str) -> ImageRefused:
        return ImageRefused(NOT_ALLOWED, f"image path {text!r} refused: {why}", "image-missing")

    if not policy.roots:
        raise refuse("no --image-root allows server paths")
    try:
        path = Path(text)
        path = (path if path.is_absolute() else policy.roots[0] / path).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a link loop, a name too long
        raise refuse(f"{type(exc).__name__}: {exc}") from None
    if not any(path.is_relative_to(root) for root in policy.roots):
        raise refuse(f"{path} is outside every --image-root")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it (not a regular file).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise refuse(f"{type(exc).__name__}: {exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise refuse(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as file:
        if info.st_size > policy.max_bytes:
            raise _too_large(info.st_size, policy)
        data = file.read(policy.max_bytes + 1)  # the file may have grown since fstat
    if len(data) > policy.max_bytes:
        raise _too_large(len(data), policy)
    return data


def _too_large(size: int, policy: ImagePolicy) -> ImageRefused:
    return ImageRefused(
        f"image larger than --max-image-mb {policy.max_bytes / 2**20:g}", f"image of {size} bytes", "image-too-large"
    )


def load_untrusted_image(source: str, policy: ImagePolicy) -> Image.Image:
    """A client's image (a path under the policy's roots, base64 or a data URI) as RGB, within the policy's
    bounds; ImageRefused otherwise, whose message names no path and carries no exception text."""
    undecodable = "not a decodable image in an allowed format (" + ", ".join(policy.formats) + ")"
    if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE):
        raise ImageRefused("image URLs are not supported (no network access)", "image URL", "image-missing")
    try:
        data = decode_base64_string(source)
    except DataError as exc:
        raise ImageRefused("invalid base64 image data", str(exc), "image-undecodable") from None
    if data is None:
        data = _read_allowed(source, policy)
    elif len(data) > policy.max_bytes:
        raise _too_large(len(data), policy)
    try:
        image = Image.open(io.BytesIO(data), formats=list(policy.formats))
    except Image.DecompressionBombError as exc:  # PIL's own bound, above ours unless raised
        raise _too_many_pixels(policy, str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRefused(undecodable, f"{type(exc).__name__}: {exc}", "image-undecodable") from None
    width, height = image.size
    if width * height > policy.max_pixels:  # checked on the header, before any pixel is decoded
        raise _too_many_pixels(policy, f"{width} x {height} pixels")
    try:
        image.load()  # a GIF's first frame
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRefused(undecodable, f"{type(exc).__name__}: {exc}", "image-undecodable") from None


def _too_many_pixels(policy: ImagePolicy, detail: str) -> ImageRefused:
    return ImageRefused(f"image has more pixels than --max-image-pixels {policy.max_pixels}", detail, "image-too-large")

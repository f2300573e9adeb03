"""Reading a video for the model: frames sampled at an fps, an even count, each resized like an image.

A video is a file (decoded with PyAV) or a folder of frame images, which is how MM-RLHF-RewardBench ships
its videos and how its released evaluation reads them (a fixed number of frames spread evenly over the
folder). Qwen2.5-VL pairs frames in time (temporal patch 2), so a video always has an even number of
frames; the engine gets them with the metadata its processor needs to place them in time.

Defaults: the released MM-RLHF-RewardBench evaluation takes 32 frames of each folder (``sample_frames``)
and gives frames the processor's image bounds; it sets no fps, because its videos are folders. The fps
for video files, the minimum frame count and the total pixel budget are ours, taken from qwen-vl-utils'
defaults for Qwen2.5-VL (FPS 2.0, FPS_MIN_FRAMES 4, VIDEO_TOTAL_PIXELS 128000 * 28 * 28 * 0.9).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from r1reward.data.images import load_image, resolve_path
from r1reward.data.records import DataError, ImageSource, PreferenceRecord
from r1reward.data.render import MAX_PIXELS, MIN_PIXELS, render_prompt, target_size

VIDEO_FPS = 2.0
VIDEO_MAX_FRAMES = 32
VIDEO_MIN_FRAMES = 4
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)  # over all frames: many frames get smaller ones
TEMPORAL_PATCH = 2
# A folder of frames carries no timing. Qwen's processor takes a list of frames as a 2 fps clip, so the
# released evaluation's frames were placed in time at that rate.
FRAME_FOLDER_FPS = 2.0
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class VideoSampling:
    """How frames are taken: ``fps`` from a video file (a folder's frames are spread evenly), at most
    ``max_frames`` (even), each resized within [min_pixels, max_pixels] like an image."""

    fps: float = VIDEO_FPS
    max_frames: int = VIDEO_MAX_FRAMES
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"video fps must be > 0, got {self.fps}")
        if self.max_frames < TEMPORAL_PATCH or self.max_frames % TEMPORAL_PATCH:
            raise ValueError(f"video max_frames must be an even number >= 2, got {self.max_frames}")


@dataclass
class Video:
    frames: list[Image.Image]  # RGB, all of one size
    # What Qwen's video processor reads: fps and total_num_frames of the source, frames_indices taken.
    metadata: dict[str, Any]

    def for_engine(self) -> tuple[np.ndarray, dict[str, Any]]:
        """vLLM's Qwen2.5-VL video input: frames as a (T, H, W, 3) uint8 array with their metadata;
        ``do_sample_frames`` False keeps exactly these frames."""
        return np.stack([np.asarray(frame) for frame in self.frames]), {**self.metadata, "do_sample_frames": False}


def _natural_key(name: str) -> list[Any]:
    """frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise DataError(
            f"no frame images ({', '.join(FRAME_SUFFIXES)}) in video folder {folder}", reason="video-undecodable"
        )
    return sorted(files, key=lambda p: _natural_key(p.name))


def _resolve(source: ImageSource, root: str | Path | None) -> Path:
    """The video's absolute path, which must exist (a file or a folder)."""
    if not isinstance(source, (str, Path)) or not str(source):
        raise DataError("the row's video has no path (embedded videos are not supported)", reason="video-missing")
    path = resolve_path(source, root, kind="video")
    if not path.exists():
        raise DataError(f"video not found: {path} (a video file or a folder of frame images)", reason="video-missing")
    return path


def _undecodable(path: Path, exc: Exception | str) -> DataError:
    return DataError(f"cannot decode video {path}: {exc}", reason="video-undecodable")


def _decode_errors() -> tuple[type[Exception], ...]:
    import av

    # PyAV raises FFmpegError subclasses; a few paths raise plain OSError/ValueError.
    return av.error.FFmpegError, OSError, ValueError


def _open_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise _undecodable(path, "no video stream")
    return container.streams.video[0]


def check_video(source: ImageSource, root: str | Path | None = None) -> Path:
    """The video's absolute path once its container and first frame decode (a folder: its first frame
    image); DataError with reason video-missing / video-undecodable otherwise. Cheap: the frames are
    decoded when the prompt is built."""
    path = _resolve(source, root)
    if path.is_dir():
        try:
            load_image(_frame_files(path)[0])
        except DataError as exc:
            if exc.reason.startswith("video-"):
                raise
            raise _undecodable(path, exc) from exc
        return path
    import av

    try:
        with av.open(str(path)) as container:
            first = next(container.decode(_open_stream(container, path)), None)
    except DataError:
        raise
    except _decode_errors() as exc:
        raise _undecodable(path, exc) from exc
    if first is None:
        raise _undecodable(path, "no frames")
    return path


def _spread(total: int, count: int) -> list[int]:
    """``count`` frame indices evenly over ``total`` frames, first and last included, floored as in the
    released evaluation (``count`` >= 2; a single frame is taken twice)."""
    return [i * (total - 1) // (count - 1) for i in range(count)]


def _even(count: int, max_frames: int) -> int:
    """At most max_frames (even), rounded down to an even count, and never fewer than one temporal patch."""
    count = min(count, max_frames)
    return max(TEMPORAL_PATCH, count - count % TEMPORAL_PATCH)


def _folder_frames(folder: Path, sampling: VideoSampling) -> tuple[list[Image.Image], dict[str, Any]]:
    files = _frame_files(folder)
    # The released evaluation takes exactly max_frames, repeating frames of a shorter folder; we take
    # each frame at most once (but a single-frame folder fills its temporal patch with a repeat).
    indices = _spread(len(files), _even(len(files), sampling.max_frames))
    try:
        frames = [load_image(files[i]) for i in indices]
    except DataError as exc:
        raise _undecodable(folder, exc) from exc
    count = len(frames)
    metadata = {
        "fps": FRAME_FOLDER_FPS,
        "duration": count / FRAME_FOLDER_FPS,
        "total_num_frames": count,
        "frames_indices": list(range(count)),
        "video_backend": "frame-folder",
    }
    return frames, metadata


def _count_frames(path: Path) -> tuple[int, float]:
    """(frames, frames per second) of a video file: from its header, or by reading its packets (no
    decoding) when the header does not say."""
    import av

    with av.open(str(path)) as container:
        stream = _open_stream(container, path)
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    if total < 1 or fps <= 0:
        raise _undecodable(path, "no frames or no frame rate")
    return total, fps


def _file_frames(path: Path, sampling: VideoSampling) -> tuple[list[Image.Image], dict[str, Any]]:
    import av

    try:
        total, fps = _count_frames(path)
        wanted = max(VIDEO_MIN_FRAMES, round(total / fps * sampling.fps))
        indices = _spread(total, _even(min(wanted, total), sampling.max_frames))
        copies = Counter(indices)
        frames: list[Image.Image] = []
        with av.open(str(path)) as container:
            stream = _open_stream(container, path)
            stream.thread_type = "AUTO"
            for position, frame in enumerate(container.decode(stream)):
                if position in copies:
                    frames += [frame.to_image().convert("RGB")] * copies[position]
                if position >= indices[-1]:
                    break
    except DataError:
        raise
    except _decode_errors() as exc:
        raise _undecodable(path, exc) from exc
    if len(frames) < len(indices):
        raise _undecodable(path, f"it ends before frame {indices[-1]} of the {total} its header announces")
    metadata = {
        "fps": fps,
        "duration": total / fps,
        "total_num_frames": total,
        "frames_indices": indices,
        "video_backend": "pyav",
    }
    return frames, metadata


def load_video(source: ImageSource, root: str | Path | None, sampling: VideoSampling) -> Video:
    """The video at ``source`` (relative paths from ``root``): sampled frames, all resized to one size
    within the pixel bounds (and within the total budget when there are many frames)."""
    path = _resolve(source, root)
    frames, metadata = (_folder_frames if path.is_dir() else _file_frames)(path, sampling)
    per_frame = min(sampling.max_pixels, VIDEO_TOTAL_PIXELS * TEMPORAL_PATCH // len(frames))
    try:
        height, width = target_size(
            frames[0].height, frames[0].width, sampling.min_pixels, max(sampling.min_pixels, per_frame)
        )
    except DataError as exc:
        raise _undecodable(path, exc) from exc
    resized = [f if f.size == (width, height) else f.resize((width, height), Image.Resampling.BICUBIC) for f in frames]
    return Video(resized, {**metadata, "width": width, "height": height})


def video_prompt(
    processor: Any,
    record: PreferenceRecord,
    sampling: VideoSampling,
    root: str | Path | None = None,
    image_first: bool = False,
) -> dict[str, Any]:
    """``rollout_prompt``'s counterpart for a video row (``record.media`` is the video's path):
    ``{"prompt": text with one video placeholder, "images": [], "video": (frames, metadata)}``."""
    video = load_video(record.media, root, sampling)
    return {"prompt": render_prompt(processor, record, image_first), "images": [], "video": video.for_engine()}

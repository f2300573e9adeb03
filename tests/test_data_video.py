"""Reading videos for the model: frames sampled at an fps, an even count, each frame within pixel bounds.

The videos are written with PyAV (helpers.write_video): solid colours, a different one per source frame,
so that each sampled frame says which source frame it came from.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from helpers import frame_colour, write_video
from r1reward.data.records import DataError, PreferenceRecord
from r1reward.data.render import MIN_PIXELS, PATCH_FACTOR, build_messages, render_prompt, target_size
from r1reward.data.video import VideoSampling, check_video, load_video, video_prompt


def source_index(frame: Image.Image, count: int) -> int:
    """The source frame whose colour is nearest to ``frame``'s centre pixel."""
    pixel = np.array(frame.getpixel((frame.width // 2, frame.height // 2)), float)
    return int(np.argmin([np.abs(pixel - frame_colour(i)).sum() for i in range(count)]))


def spread(total: int, count: int) -> list[int]:
    """``count`` indices evenly over ``total`` frames, the first and the last included (floored)."""
    return [math.floor(i * (total - 1) / (count - 1)) for i in range(count)]


@pytest.mark.parametrize("fps, max_frames", [(2.0, 32), (4.0, 32), (4.0, 6), (8.0, 32), (0.5, 32)])
def test_frames_of_a_video_file_are_sampled_at_fps(tmp_path, fps, max_frames):
    total = write_video(tmp_path / "clip.mp4", seconds=2.0, fps=8)
    video = load_video("clip.mp4", tmp_path, VideoSampling(fps=fps, max_frames=max_frames))
    # The rule: duration x fps frames, at least 4, at most max_frames and the video's own, an even count.
    want = min(max_frames, total, max(4, round(2.0 * fps)))
    want -= want % 2
    assert len(video.frames) == want
    assert [source_index(f, total) for f in video.frames] == spread(total, want)
    assert video.metadata["total_num_frames"] == total and video.metadata["fps"] == pytest.approx(8.0)
    assert video.metadata["frames_indices"] == spread(total, want)
    frames, metadata = video.for_engine()
    assert frames.shape == (want, 56, 56, 3) and frames.dtype == np.uint8
    assert metadata["do_sample_frames"] is False  # the engine must keep these frames as they are


def test_frames_are_resized_within_the_pixel_bounds(tmp_path):
    write_video(tmp_path / "wide.mp4", seconds=1.0, fps=8, size=(320, 96))
    max_pixels = 16 * 28 * 28
    video = load_video(tmp_path / "wide.mp4", None, VideoSampling(fps=8.0, max_frames=4, max_pixels=max_pixels))
    assert len(video.frames) == 4 and len({f.size for f in video.frames}) == 1
    width, height = video.frames[0].size
    assert width % PATCH_FACTOR == 0 and height % PATCH_FACTOR == 0
    assert MIN_PIXELS <= width * height <= max_pixels and width > 2 * height  # the aspect ratio is kept


def test_a_folder_of_frames_is_read_in_natural_order(tmp_path):
    """MM-RLHF-RewardBench's videos are folders of frame images, as its released evaluation reads them."""
    folder = tmp_path / "video" / "abc"
    folder.mkdir(parents=True)
    for index in range(12):  # frame_10 must come after frame_9, not after frame_1
        Image.new("RGB", (60, 40), frame_colour(index)).save(folder / f"frame_{index + 1}.png")
    video = load_video("video/abc", tmp_path, VideoSampling(max_frames=4))
    assert [source_index(f, 12) for f in video.frames] == spread(12, 4)
    every = load_video(folder, None, VideoSampling(max_frames=32))
    assert [source_index(f, 12) for f in every.frames] == list(range(12))
    height, width = target_size(40, 60)  # the images' rule: 28-pixel multiples within the bounds
    assert all(f.size == (width, height) for f in every.frames)


def test_a_single_frame_is_repeated_to_fill_the_temporal_patch(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (56, 56), "red").save(folder / "0.jpg")
    assert len(load_video(folder, None, VideoSampling()).frames) == 2


@pytest.mark.parametrize(
    "make, reason, words",
    [
        (lambda root: None, "video-missing", "video not found"),
        (lambda root: (root / "video" / "v1").write_bytes(b"\x00garbage" * 64), "video-undecodable", "cannot decode"),
        (lambda root: (root / "video" / "v1").mkdir(), "video-undecodable", "no frame images"),
    ],
    ids=["missing", "corrupt", "empty-folder"],
)
def test_a_missing_or_corrupt_video_is_a_one_line_data_error(tmp_path, make, reason, words):
    (tmp_path / "video").mkdir()
    make(tmp_path)
    for call in (check_video, lambda *a: load_video(*a, VideoSampling())):
        with pytest.raises(DataError) as info:
            call("video/v1", tmp_path)
        assert info.value.reason == reason and words in str(info.value)
        assert str(tmp_path / "video" / "v1") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"fps": 0.0}, {"max_frames": 3}, {"max_frames": 0}])
def test_bad_sampling_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        VideoSampling(**kwargs)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def test_a_video_record_renders_one_video_placeholder(processor, tmp_path):
    write_video(tmp_path / "clip.mp4", seconds=1.0, fps=8)
    record = PreferenceRecord("v", "What happens?", [], "A fades.", "B jumps.", 1, media="clip.mp4", is_video=True)
    assert build_messages(record)[0]["content"][1] == {"type": "video"}
    assert build_messages(record, image_first=True)[0]["content"][0] == {"type": "video"}
    text = render_prompt(processor, record)
    assert text.count("<|vision_start|><|video_pad|><|vision_end|>") == 1 and "<|image_pad|>" not in text
    prompt = video_prompt(processor, record, VideoSampling(max_frames=4), tmp_path)
    assert prompt["prompt"] == text and prompt["images"] == []
    frames, metadata = prompt["video"]
    assert frames.shape[0] == 4 and metadata["total_num_frames"] == 8

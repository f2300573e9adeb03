"""PreferenceRecord and image loading."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from r1reward.data.images import check_image, load_image, resolve_source
from r1reward.data.records import DataError, PreferenceRecord


def png_bytes(size: tuple[int, int] = (8, 6), color: str = "red", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_record(**overrides) -> PreferenceRecord:
    fields = dict(id="r0", question="Q?", images=["a.png"], response_1="one", response_2="two", label=1)
    fields.update(overrides)
    return PreferenceRecord(**fields)


def test_swapped_exchanges_responses_and_flips_label():
    record = make_record(label=1, source="s", category="c", media="m.png")
    swapped = record.swapped()
    assert (swapped.response_1, swapped.response_2, swapped.label) == ("two", "one", 2)
    assert (swapped.id, swapped.question, swapped.images, swapped.media) == ("r0", "Q?", ["a.png"], "m.png")
    assert swapped.swapped() == record
    assert record.label == 1  # the original is untouched


def test_swapped_keeps_a_bad_label_bad():
    assert make_record(label=0).swapped().label == 0


def test_data_error_is_a_one_line_value_error_with_reason():
    err = DataError("first line\nsecond   line", reason="bad-label")
    assert isinstance(err, ValueError)
    assert str(err) == "first line second line"
    assert err.reason == "bad-label"


def test_load_image_from_relative_and_absolute_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.png").write_bytes(png_bytes((10, 4), mode="RGBA"))
    relative = load_image("sub/x.png", image_root=tmp_path)
    absolute = load_image(tmp_path / "sub" / "x.png")
    assert relative.mode == absolute.mode == "RGB"
    assert relative.size == absolute.size == (10, 4)
    assert resolve_source("sub/x.png", tmp_path) == str(tmp_path / "sub" / "x.png")


def test_load_image_from_bytes_and_data_uri():
    data = png_bytes((5, 7), color="blue")
    assert load_image(data).size == (5, 7)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    image = load_image(uri)
    assert image.size == (5, 7)
    assert image.getpixel((0, 0)) == (0, 0, 255)
    assert resolve_source(uri, "/elsewhere") == uri  # embedded images are not paths


def test_load_image_from_bare_base64_text():
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 64).convert("RGB").save(buf, format="PNG")
    text = base64.b64encode(buf.getvalue()).decode()
    assert len(text) > 512
    assert load_image(text).size == (32, 32)
    assert resolve_source(text, "/elsewhere") == text
    assert resolve_source("short/path.png", "/root") == "/root/short/path.png"


def test_load_image_converts_greyscale_to_rgb():
    assert load_image(png_bytes(mode="L", color="white")).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize("url", ["http://example.com/a.png", "https://example.com/a.png"])
def test_load_image_refuses_urls(url):
    with pytest.raises(DataError, match="URL") as info:
        load_image(url)
    assert "\n" not in str(info.value)


def test_missing_image_reason(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        load_image("nope.png", image_root=tmp_path)
    assert info.value.reason == "image-missing"


def test_undecodable_image_reason(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not an image")
    for check in (load_image, check_image):
        with pytest.raises(DataError) as info:
            check("bad.png", image_root=tmp_path)
        assert info.value.reason == "image-undecodable"
        assert "bad.png" in str(info.value)


def test_truncated_png_fails_full_decode(tmp_path):
    data = png_bytes((64, 64))
    with pytest.raises(DataError) as info:
        load_image(data[: len(data) // 2])
    assert info.value.reason == "image-undecodable"


def test_invalid_base64_data_uri():
    with pytest.raises(DataError) as info:
        load_image("data:image/png;base64,@@@not-base64@@@")
    assert info.value.reason == "image-undecodable"

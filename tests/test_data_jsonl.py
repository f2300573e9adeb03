"""The one JSONL reader and writer: bad lines named by file and line, whole files or none."""

from __future__ import annotations

import pytest

from r1reward.data.jsonl import append_jsonl, iter_jsonl, read_jsonl, write_jsonl
from r1reward.data.records import DataError
from r1reward.errors import UserError


def test_round_trip_keeps_unicode_and_line_separators(tmp_path):
    rows = [{"text": "caf\u00e9 \u2028 next"}, {"n": [1, 2.5, None]}]
    path = write_jsonl(rows, tmp_path / "rows.jsonl")
    assert read_jsonl(path) == rows  # U+2028 inside a string does not split the line
    assert "caf\u00e9" in path.read_text(encoding="utf-8")  # written as is, not \\u-escaped
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]  # no partial file left behind


def test_write_replaces_the_whole_file(tmp_path):
    path = write_jsonl([{"a": 1}, {"a": 2}], tmp_path / "x.jsonl")
    write_jsonl([{"b": 3}], path)
    assert read_jsonl(path) == [{"b": 3}]


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    path = write_jsonl([{"a": 1}], tmp_path / "x.jsonl")

    def rows():
        yield {"a": 2}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(rows(), path)
    assert read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


@pytest.mark.parametrize("bad, message", [('{"a": ', "invalid JSON"), ("[1, 2]", "not a JSON object: list")])
def test_read_names_file_and_line_of_a_bad_line(tmp_path, bad, message):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n' + bad + "\n")
    with pytest.raises(UserError, match=rf"x\.jsonl:3: {message}") as info:
        read_jsonl(path)
    assert isinstance(info.value, DataError) and info.value.reason == "invalid-json"
    assert "\n" not in str(info.value)


def test_read_of_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found: .*absent.jsonl"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_iter_reports_bad_lines_and_goes_on(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl({"step": 1}, path)
    with path.open("a") as f:
        f.write('{"step": 2, "lo')  # a row cut short by a kill
    items = list(iter_jsonl(path))
    assert items[0] == (1, {"step": 1})
    assert items[1][0] == 2 and isinstance(items[1][1], DataError)

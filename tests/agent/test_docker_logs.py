"""Parsing `docker logs --timestamps` frames."""

from __future__ import annotations

from datetime import UTC, datetime

from dante.agent.executors.docker_logs import DockerLogLines


def test_each_line_takes_its_message_timestamp() -> None:
    lines = DockerLogLines()

    parsed = lines.feed(b"2024-11-14T07:00:14.123456789Z hello\n")
    parsed += lines.feed(b"2024-11-14T07:00:15.5Z world\r\n")

    assert parsed == [
        (datetime(2024, 11, 14, 7, 0, 14, 123456, tzinfo=UTC), "hello"),
        (datetime(2024, 11, 14, 7, 0, 15, 500000, tzinfo=UTC), "world"),
    ]
    assert lines.finish() == []
    assert lines.last_at == datetime(2024, 11, 14, 7, 0, 15, 500000, tzinfo=UTC)


def test_a_long_line_split_into_partial_messages_is_joined() -> None:
    lines = DockerLogLines()

    assert lines.feed(b"2024-11-14T07:00:14.000000001Z first half ") == []
    assert lines.feed(b"2024-11-14T07:00:14.000000002Z second half\n") == [
        (datetime(2024, 11, 14, 7, 0, 14, tzinfo=UTC), "first half second half")
    ]


def test_several_messages_in_one_frame_and_a_last_line_without_break() -> None:
    lines = DockerLogLines()

    parsed = lines.feed(
        b"2024-11-14T07:00:14Z a\n2024-11-14T07:00:16+02:00 b\n2024-11-14T07:00:17Z c"
    )

    assert [text for _, text in parsed] == ["a", "b"]
    assert parsed[1][0] == datetime(2024, 11, 14, 5, 0, 16, tzinfo=UTC)
    assert [text for _, text in lines.finish()] == ["c"]


def test_text_without_a_timestamp_is_kept() -> None:
    lines = DockerLogLines()

    [(at, text)] = lines.feed(b"no stamp here\n")

    assert text == "no stamp here"
    assert at.tzinfo is not None

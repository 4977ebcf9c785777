"""Line splitting and batched delivery of job output."""

from __future__ import annotations

import anyio
import pytest

from dante.agent.executors.output import LineSplitter, OutputBatcher, batched_output
from tests.agent.runs import Collected


def test_lines_split_at_every_kind_of_line_break() -> None:
    splitter = LineSplitter()

    assert splitter.feed(b"a\nb\r\nc\rd") == ["a", "b", "c"]
    assert splitter.feed(b"e\n\n") == ["de", ""]
    assert splitter.finish() == []


def test_crlf_split_across_reads_is_one_line_break() -> None:
    splitter = LineSplitter()

    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"\nb\n") == ["b"]


def test_utf8_split_across_reads_and_invalid_bytes() -> None:
    splitter = LineSplitter()

    assert splitter.feed(b"caf\xc3") == []
    assert splitter.feed(b"\xa9 \xff\n") == ["café \ufffd"]


def test_over_long_lines_are_cut_and_the_rest_comes_at_the_end() -> None:
    splitter = LineSplitter(max_chars=4)

    assert splitter.feed(b"0123456789") == ["0123", "4567"]
    assert splitter.finish() == ["89"]


@pytest.mark.anyio
async def test_a_full_batch_is_delivered_at_once_and_the_rest_on_flush() -> None:
    collected = Collected()
    batcher = OutputBatcher(collected, max_lines=3)

    for i in range(7):
        await batcher.add("stdout", str(i))
    assert [len(b) for b in collected.batches] == [3, 3]
    await batcher.flush()

    assert [len(b) for b in collected.batches] == [3, 3, 1]
    assert collected.texts() == [str(i) for i in range(7)]
    assert batcher.delivered == 7


@pytest.mark.anyio
async def test_lines_are_delivered_after_the_delay_without_a_full_batch() -> None:
    collected = Collected()

    async with batched_output(collected, max_delay_s=0.05) as out:
        await out.add("stderr", "early")
        with anyio.fail_after(2):
            while not collected.batches:
                await anyio.sleep(0.01)
        await out.add("stdout", "late")

    assert [[(line.stream, line.text) for line in b] for b in collected.batches] == [
        [("stderr", "early")],
        [("stdout", "late")],
    ]


@pytest.mark.anyio
async def test_a_failing_sink_loses_lines_but_nothing_else() -> None:
    async def broken(_: object) -> None:
        raise ConnectionError("down")

    batcher = OutputBatcher(broken, max_lines=2)
    for i in range(3):
        await batcher.add("stdout", str(i))
    await batcher.flush()

    assert batcher.dropped == 3
    assert batcher.delivered == 0

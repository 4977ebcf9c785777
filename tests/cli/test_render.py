"""Tables, amounts and progress as the commands show them."""

from __future__ import annotations

import io

from dante.cli.render import Progress, dgpu, duration, table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tables_align_and_amounts_are_exact() -> None:
    assert table(("NAME", "AMOUNT"), [("a", dgpu(1_500_000)), ("bb", dgpu(1))], right=(1,)) == (
        "NAME    AMOUNT\na         1.50\nbb    0.000001"
    )
    assert [dgpu(0), dgpu(-250_000), dgpu(10**15)] == ["0.00", "-0.25", "1000000000.00"]
    assert [duration(5), duration(125), duration(3 * 3600 + 61)] == ["5s", "2m 05s", "3h 01m"]


def test_progress_is_drawn_in_a_terminal_only() -> None:
    terminal = Terminal()
    progress = Progress(terminal, every=0)
    progress.bytes("downloading", 512, 2048)
    progress.bytes("downloading", 2048, 2048)
    progress.clear()
    drawn = terminal.getvalue()
    assert drawn.startswith("\rdownloading: 512 B of 2.0 KiB (25%)")
    assert "\rdownloading: 2.0 KiB of 2.0 KiB (100%)" in drawn
    assert drawn.endswith("\r")  # cleared: what follows starts on a clean line

    piped = io.StringIO()
    quiet = Progress(piped, every=0)
    quiet.bytes("downloading", 512, 2048)
    quiet.clear()
    assert piped.getvalue() == ""


def test_a_submission_the_budget_holds_back_says_nothing_is_held_yet() -> None:
    from datetime import UTC, datetime

    from dante.cli.jobs import held_at_start
    from dante.schemas.results import SubmitResult

    now = SubmitResult(
        job_id="j", state="queued", price_udgpu=1, first_hold_udgpu=83_333, available_now=True
    )
    assert held_at_start(now) == "0.083333 dGPU"
    waits = SubmitResult(
        job_id="j",
        state="queued",
        price_udgpu=1,
        first_hold_udgpu=83_333,
        available_now=True,
        waits_for_budget="daily",
        budget_room_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    said = held_at_start(waits)
    assert said.startswith("0.083333 dGPU; nothing is held yet: your daily budget")
    assert "until 2026-11-27 00:00 UTC" in said

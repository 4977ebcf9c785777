"""The progress bar draws only on a terminal, and clears its line when done."""

from __future__ import annotations

import io

from dante.cli.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_and_nothing_elsewhere() -> None:
    terminal = Terminal()
    bar = ProgressBar("replaying", terminal)
    bar(50, 100)
    bar(51, 100)  # too soon after the last: not redrawn
    bar(100, 100)  # the end is always drawn
    bar.close()
    drawn = terminal.getvalue()
    assert drawn.count("\rreplaying") == 2
    assert " 50%  50/100 events" in drawn and "100%  100/100 events" in drawn
    assert drawn.endswith("\r\033[K")

    pipe = io.StringIO()
    quiet = ProgressBar("replaying", pipe)
    quiet(1, 2)
    quiet.close()
    assert pipe.getvalue() == ""

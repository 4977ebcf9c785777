"""The cyclopts application: the root `dante` command and its lazily imported sub-commands."""

from __future__ import annotations

from cyclopts import App

from dante import __version__

app = App(
    name="dante",
    help="Dante: rent GPUs, or rent yours out, on an auditable event log.",
    version=__version__,
)
app.command("dante.cli.up:up", name="up")
app.command("dante.cli.status:status", name="status")
app.command("dante.cli.schemas:app", name="schemas")
app.command("dante.cli.agent:app", name="agent")
app.command("dante.cli.account:app", name="account")
app.command("dante.cli.account:login", name="login")
app.command("dante.cli.account:logout", name="logout")
app.command("dante.cli.replay:replay", name="replay")
app.command("dante.cli.audit:audit", name="audit")
app.command("dante.cli.events:events", name="events")


def main() -> None:
    app()

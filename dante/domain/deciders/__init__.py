"""The deciders: one pure function per command, `(world, context, command) -> Decision`.

A decider reads the world, raises `Rejected` with a typed reason, or returns the events to
append and how to answer. `READS` names the aggregates each command decides against, so the
service can bring them up to date first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dante.domain.deciders import agent, jobs, providers, wallet
from dante.domain.deciders.context import Context
from dante.domain.decision import Decision
from dante.domain.model import World
from dante.schemas import commands as cmd

Decider = Callable[[World, Context, Any], Decision]
Reads = Callable[[Context, Any], list[tuple[str, str]]]


def _own_wallet(ctx: Context, _: Any) -> list[tuple[str, str]]:
    return [("wallet", ctx.identity)]


def _deposit(ctx: Context, _: Any) -> list[tuple[str, str]]:
    reads = [("wallet", ctx.identity)]
    if ctx.payment is not None:
        reads.append(("payment", ctx.payment.signature))
    return reads


def _job(_: Context, command: Any) -> list[tuple[str, str]]:
    return [("job", command.job_id)]


def _provider_and_job(_: Context, command: Any) -> list[tuple[str, str]]:
    return [("provider", command.provider_id), ("job", command.job_id)]


def _provider(_: Context, command: Any) -> list[tuple[str, str]]:
    return [("provider", command.provider_id)]


def _submission(ctx: Context, _: Any) -> list[tuple[str, str]]:
    return [("wallet", ctx.identity), ("job", ctx.derived_id("job"))]


DECIDERS: dict[type[cmd.Command[Any]], tuple[Decider, Reads]] = {
    cmd.Deposit: (wallet.deposit, _deposit),
    cmd.Withdraw: (wallet.withdraw, _own_wallet),
    cmd.SetBudget: (wallet.set_budget, _own_wallet),
    cmd.SubmitJob: (jobs.submit, _submission),
    cmd.CancelJob: (jobs.cancel, _job),
    cmd.RegisterProvider: (providers.register, _provider),
    cmd.UpdateOffer: (providers.update_offer, _provider),
    cmd.DeregisterProvider: (providers.deregister, _provider),
    cmd.AcceptAssignment: (agent.accept, _provider_and_job),
    cmd.DeclineAssignment: (agent.decline, _provider_and_job),
    cmd.ReportJobStarted: (agent.started, _provider_and_job),
    cmd.RecordUsage: (agent.usage, _provider_and_job),
    cmd.ReportJobFinished: (agent.finished, _provider_and_job),
}

#: Aggregates a command reads but appends nothing to, by command: a cached copy of one could
#: be stale with no conflict to say so (a submission's wallet, whose holds the scheduler
#: takes elsewhere, would let through a job its funds cannot start). The command service
#: reads them afresh for every such command.
READ_FRESH: dict[type[cmd.Command[Any]], frozenset[str]] = {
    cmd.SubmitJob: frozenset({"wallet"}),
}

__all__ = ["DECIDERS", "READ_FRESH", "Context", "Decision"]

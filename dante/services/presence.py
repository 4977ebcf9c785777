"""The handlers and the views as NATS micro services, so `dante status` finds them.

The command service is one already (`dante.services.commands`). The handlers' runner and
the views answer `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` too, as `dante-handlers` and
`dante-views`, one instance per process that runs them: each handler (and the views) is an
endpoint whose STATS `data` says how far it is (`HandlerState`, `ViewsState`), read from
plain counts the runners keep (`Seat.decided`, `HandlerRunner.lag`, the views' position).
A request to an endpoint (`dante.srv.<service>.<instance>.<name>`) answers the same.
Nothing else reaches them: the operator may publish only to `$SRV.>`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
from nats.micro import add_service
from nats.micro.service import EndpointConfig, EndpointStats, Service, ServiceConfig

from dante import __version__

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.micro.request import Request

    from dante.handlers.runner import HandlerRunner
    from dante.projections.runner import ProjectionRunner

HANDLERS_SERVICE: Final = "dante-handlers"
VIEWS_SERVICE: Final = "dante-views"


class HandlerState(msgspec.Struct, frozen=True, kw_only=True):
    """One handler of one process, as STATS reports it."""

    handler: str
    #: Its durable consumer (shared by the handlers of one runner, and by every process).
    durable: str
    #: Triggers it decided in this process.
    decided: int
    #: Events of the log it has yet to act on.
    lag: int
    #: The stream sequence of the last message its runner fetched.
    fetched_seq: int


class ViewsState(msgspec.Struct, frozen=True, kw_only=True):
    """The read models of one process: the log's sequence they include."""

    position: int
    #: Whether their file passed its integrity check since it was opened.
    checked: bool


async def _announce(
    nc: NATS,
    name: str,
    description: str,
    states: dict[str, Callable[[], msgspec.Struct]],
    metadata: dict[str, str],
) -> Service:
    def stats(endpoint: EndpointStats) -> Any:
        state = states.get(endpoint.name)
        return msgspec.to_builtins(state()) if state is not None else None

    service = await add_service(
        nc,
        config=ServiceConfig(
            name=name,
            version=__version__,
            description=description,
            metadata=metadata,
            stats_handler=stats,
        ),
    )
    for endpoint, state in states.items():

        async def answer(request: Request, state: Callable[[], msgspec.Struct] = state) -> None:
            await request.respond(msgspec.json.encode(state()))

        await service.add_endpoint(
            EndpointConfig(
                name=endpoint,
                subject=f"dante.srv.{name}.{service.id}.{endpoint}",
                handler=answer,
            )
        )
    return service


async def announce_handlers(nc: NATS, runners: list[HandlerRunner]) -> Service:
    """`dante-handlers`: an endpoint per handler, whose STATS say how far it is."""
    states: dict[str, Callable[[], msgspec.Struct]] = {}
    for runner in runners:
        for seat in runner.seats:

            def state(runner: HandlerRunner = runner, seat: Any = seat) -> HandlerState:
                return HandlerState(
                    handler=seat.handler.name,
                    durable=runner.durable,
                    decided=seat.decided,
                    lag=runner.lag(seat),
                    fetched_seq=runner.fetched_seq,
                )

            states[seat.handler.name] = state
    return await _announce(
        nc,
        HANDLERS_SERVICE,
        "Dante's handlers: scheduling, billing, dispatch, liveness",
        states,
        {"handlers": ",".join(states)},
    )


async def announce_views(nc: NATS, views: ProjectionRunner) -> Service:
    """`dante-views`: one endpoint, whose STATS say the views' position."""

    def state() -> ViewsState:
        return ViewsState(position=views.position, checked=views.checked)

    return await _announce(
        nc,
        VIEWS_SERVICE,
        "Dante's read models (views.sqlite3)",
        {"views": state},
        {"file": str(views.db_path)},
    )

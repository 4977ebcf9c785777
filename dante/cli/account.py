"""`dante account create`, `dante login`, `dante logout`: who you are on the platform.

Every command logs in with DANTE_USERNAME and DANTE_PASSWORD when they are set, else with
the login `dante login` stored (see `dante.client.credentials`).
"""

from __future__ import annotations

import getpass
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from cyclopts import App, Parameter

from dante.client.connect import EXIT_REJECTED, EXIT_USAGE, ConnectFailed, connect, resolve_url
from dante.client.credentials import (
    PASSWORD_VAR,
    USERNAME_VAR,
    Credential,
    CredentialError,
    from_environment,
    remove_login,
    save_login,
    signup_credential,
)

app = App(name="account", help="Your Dante account.")


class _Usage(Exception):
    pass


async def _exit_code(step: Callable[[], Awaitable[None]]) -> int:
    """Run one account step; a refusal is a message on stderr and the CLI's exit code."""
    from dante.client.commands import CommandError, PlatformUnavailable

    try:
        await step()
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (CommandError, PlatformUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    return 0


def _ask(*, confirm: bool) -> tuple[str, str]:
    """The user name and password: from the environment, else asked for on the terminal."""
    try:
        found = from_environment()
    except CredentialError as exc:
        raise _Usage(str(exc)) from None
    if found is not None:
        return found.username, found.secret
    if not sys.stdin.isatty():
        raise _Usage(f"no terminal to ask on: set {USERNAME_VAR} and {PASSWORD_VAR}")
    username = input("account name: ").strip()
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("password again: ") != password:
        raise _Usage("the two passwords differ")
    return username, password


async def _login(url: str, username: str, password: str) -> str:
    """Check the password with the platform and store a login token; where it is kept."""
    from dante.client.accounts import issue_token

    nc = await connect(
        url, name="dante-login", credential=Credential(username=username, secret=password)
    )
    try:
        issued = await issue_token(nc, username, label=socket.gethostname())
    finally:
        await nc.close()
    path = save_login(url, issued.username, issued.token, issued.role)
    return f"logged in as {issued.username} ({issued.role}) on {url}; login kept in {path}"


@app.command
async def create(
    *,
    role: Annotated[
        Literal["renter", "provider"], Parameter(help="Rent GPUs, or rent yours out.")
    ] = "renter",
    login: Annotated[bool, Parameter(help="Log in once the account is open.")] = True,
) -> int:
    """Open an account: asks for a name and a password (twice), or takes DANTE_USERNAME and
    DANTE_PASSWORD. Names have 2 to 32 characters (a-z, 0-9, '-', '_'), passwords 8 or more.
    """
    from dante.client.accounts import new_nonce, sign_up

    url = resolve_url(None)

    async def open_account() -> None:
        username, password = _ask(confirm=True)
        nc = await connect(url, name="dante-signup", credential=signup_credential(new_nonce()))
        try:
            opened = await sign_up(nc, username, password, role)
        finally:
            await nc.close()
        print(f"account {opened.username} ({opened.role}) is open on {url}")
        if login and from_environment() is None:
            print(await _login(url, username, password))

    return await _exit_code(open_account)


async def login() -> int:
    """Log in: the platform checks your password, and a login token is kept in your config
    folder ($XDG_CONFIG_HOME/dante or ~/.config/dante), readable by you only.

    Takes DANTE_USERNAME and DANTE_PASSWORD when set, else asks.
    """
    url = resolve_url(None)

    async def log_in() -> None:
        username, password = _ask(confirm=False)
        print(await _login(url, username, password))

    return await _exit_code(log_in)


async def logout() -> int:
    """Log out: revoke the stored login token on the platform and forget it here."""
    from dante.client.accounts import revoke_token
    from dante.client.commands import CommandError, PlatformUnavailable

    url = resolve_url(None)
    try:
        stored = remove_login(url)
    except CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if stored is None:
        print(f"not logged in to {url}")
        return 0
    try:
        nc = await connect(url, name="dante-logout", credential=stored)
        try:
            await revoke_token(nc, stored.username, stored.secret)
        finally:
            await nc.close()
    except (ConnectFailed, CommandError, PlatformUnavailable) as exc:
        print(f"warning: the platform did not revoke the login ({exc})", file=sys.stderr)
    print(f"logged out {stored.username} from {url}")
    return 0

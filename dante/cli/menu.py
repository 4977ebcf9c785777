"""`dante` with no arguments, in a terminal: an interactive menu for renting a GPU.

Each item asks for what it needs, with defaults and the same checks as the verbs, then runs
the very action the verb runs (`wallet.show_balance`, `jobs.submit_job`, ...). A failure is
reported as the verbs report it, and the menu goes on.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dante.cli.failures import Failure, failure_of, report
from dante.cli.options import EXIT_INTERRUPTED, Shared, UsageError, nats_url, set_shared, shared
from dante.cli.session import Session, acting, with_session
from dante.client.connect import EXIT_USAGE

if TYPE_CHECKING:
    from dante.cli.submission import JobSpec
    from dante.schemas.values import JobRequirements

T = TypeVar("T")

TRAINING_IMAGE = "pytorch/pytorch:latest"
TRAINING_COMMAND = "python -c \"import torch; print('CUDA available:', torch.cuda.is_available())\""


class Quit(Exception):
    """The person left the menu (an answer of 'q' to the menu, or end of input)."""


# ── asking ──────────────────────────────────────────────────────────────────────────────


def ask(question: str, default: str | None = None, check: Callable[[str], T] | None = None) -> Any:
    """Ask until the answer passes `check` (which raises UsageError with what is wrong)."""
    suffix = f" [{default}]" if default else ""
    while True:
        try:
            answer = input(f"{question}{suffix}: ").strip()
        except EOFError:
            print()
            raise Quit from None
        if not answer:
            if default is None:
                print("  an answer is needed")
                continue
            answer = default
        if check is None:
            return answer
        try:
            return check(answer)
        except UsageError as exc:
            print(f"  {exc}")


def confirm(question: str, *, default: bool = True) -> bool:
    def yes_no(answer: str) -> bool:
        if answer.lower() in {"y", "yes"}:
            return True
        if answer.lower() in {"n", "no"}:
            return False
        raise UsageError("answer y or n")

    result: bool = ask(question, "y" if default else "n", yes_no)
    return result


def _int(lowest: int, highest: int) -> Callable[[str], int]:
    def check(answer: str) -> int:
        if not answer.isdigit() or not lowest <= int(answer) <= highest:
            raise UsageError(f"a whole number from {lowest} to {highest}, please")
        return int(answer)

    return check


def _optional(check: Callable[[str], T]) -> Callable[[str], T | None]:
    """'any' (the default) means no limit."""

    def wrapped(answer: str) -> T | None:
        return None if answer.lower() in {"any", "none", "-"} else check(answer)

    return wrapped


def _amount(answer: str) -> int:
    from dante.schemas.money import MoneyError, parse_dgpu

    try:
        return parse_dgpu(answer)
    except MoneyError as exc:
        raise UsageError(str(exc)) from None


def _hours(answer: str) -> int:
    from dante.cli.price import parse_hours

    return parse_hours(answer, "hours")


def _price(answer: str) -> int:
    from dante.cli.market import parse_price

    return parse_price(answer, "price")


def _model(answer: str) -> str:
    from dante.cli.market import check_model

    return check_model(answer, "GPU model")


def _script_path(answer: str) -> Path:
    path = Path(answer).expanduser()
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    return path


def _job_id(answer: str) -> str:
    from dante.cli.jobs import check_job_id

    return check_job_id(answer)


def _folder(answer: str) -> Path:
    path = Path(answer).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a folder")
    return path


# ── running actions ─────────────────────────────────────────────────────────────────────


def run(action: Callable[[Session], Awaitable[Any]]) -> tuple[Any, Failure | None]:
    """Run one action with its own connection; a failure is reported and returned."""
    try:
        return asyncio.run(with_session(action)), None
    except KeyboardInterrupt:
        print()
        return EXIT_INTERRUPTED, None
    except Exception as exc:
        failure = failure_of(exc)
        if failure is None:
            raise
        report(failure, json=False)
        return failure.exit_code, failure


async def _latest_job(s: Session) -> str | None:
    from dante.schemas.commands import ListJobs

    jobs = await s.renter().ask(ListJobs(limit=1))
    return jobs[0].job_id if jobs else None


def ask_job_id() -> str:
    latest, _ = run(_latest_job)
    job_id: str = ask("Job id", latest if isinstance(latest, str) else None, _job_id)
    return job_id


def ask_requirements(*, with_budget: bool) -> JobRequirements:
    from dante.schemas.values import JobRequirements

    gpus: int = ask("How many GPUs", "1", _int(1, 64))
    model = ask("GPU model or family (e.g. RTX 4090, A100)", "any", _optional(_model))
    max_price = None
    if with_budget:
        max_price = ask("Most you pay per GPU-hour, in dGPU", "any", _optional(_price))
    max_s = ask("Stop it after how many hours", "1", _optional(_hours))
    return JobRequirements(
        gpu_count=gpus, gpu_model=model, max_price=max_price, max_duration_s=max_s
    )


# ── the items ───────────────────────────────────────────────────────────────────────────


def list_providers() -> None:
    from dante.cli.market import OfferFilter, show_offers

    run(lambda s: show_offers(s, OfferFilter()))


def check_balance() -> None:
    from dante.cli.wallet import show_balance

    run(show_balance)


def deposit() -> None:
    from dante.cli.wallet import make_deposit

    amount: int = ask("Amount to deposit, in dGPU", "10", _amount)
    run(lambda s: make_deposit(s, amount, top_up=True))


def _submit(spec: JobSpec) -> None:
    """Show the cost, confirm, submit; offer a deposit when the wallet is short."""
    from dante.cli.jobs import submit_job
    from dante.cli.price import show_estimate

    _, failure = run(
        lambda s: show_estimate(s, spec.requirements, spec.requirements.max_duration_s)
    )
    if failure is not None or not confirm("Submit it?"):
        return
    _, failure = run(lambda s: submit_job(s, spec))
    short = failure is not None and failure.code == "insufficient_funds"
    if short and confirm("Deposit now and submit again?"):
        deposit()
        run(lambda s: submit_job(s, spec))


def submit_training() -> None:
    from dante.cli.submission import JobSpec, build_payload

    kind = ask("A Docker image or a script", "image", _choice("image", "script"))
    image: str | None = None
    script: Path | None = None
    command: list[str]
    if kind == "image":
        image = ask("Image", TRAINING_IMAGE)
        command = ask("Command to run in it", TRAINING_COMMAND, _words)
    else:
        script = ask("Script file", None, _script_path)
        command = ask("Arguments for it", "-", _words)
    try:
        payload = build_payload(
            script=script, interpreter=None, image=image, command=command, env={}, network=False
        )
    except UsageError as exc:
        print(f"error: {exc}")
        return
    req = ask_requirements(with_budget=True)
    name: str = ask("Name it", "training")
    _submit(JobSpec(name=name, requirements=req, payload=payload))


def submit_script() -> None:
    from dante.cli.submission import JobSpec, build_payload

    script: Path = ask("Script file", None, _script_path)
    interpreter = ask("Interpreter (python3 or bash)", _guess(script), _choice("python3", "bash"))
    args = ask("Arguments for it", "-", _words)
    try:
        payload = build_payload(
            script=script,
            interpreter=interpreter,
            image=None,
            command=args,
            env={},
            network=False,
        )
    except UsageError as exc:
        print(f"error: {exc}")
        return
    req = ask_requirements(with_budget=False)
    name: str = ask("Name it", script.stem)
    _submit(JobSpec(name=name, requirements=req, payload=payload))


def job_status() -> None:
    from dante.cli.jobs import show_job

    job_id = ask_job_id()
    run(lambda s: show_job(s, job_id))


def follow_logs() -> None:
    from dante.cli.job_output import show_logs
    from dante.cli.jobs import get_job, state_line

    job_id = ask_job_id()
    print("(following; Ctrl-C returns to the menu, the job goes on)")
    run(lambda s: show_logs(s, job_id, follow=True, platform=False))

    async def where_it_is(s: Session) -> None:
        print(f"job {job_id} {state_line(await get_job(s, job_id))}")

    run(where_it_is)


def cancel() -> None:
    from dante.cli.jobs import cancel_job

    job_id = ask_job_id()
    if confirm(f"Cancel {job_id}?", default=False):
        run(lambda s: cancel_job(s, job_id))


def download_results() -> None:
    """`dante jobs results JOB --out FOLDER`."""
    from dante.cli.job_output import fetch_results

    job_id = ask_job_id()
    out: Path = ask("Folder to put them in", str(Path("results", job_id)), _folder)
    run(lambda s: fetch_results(s, job_id, out=out))


def wallet_history() -> None:
    from dante.cli.wallet import show_history

    run(show_history)


def estimate() -> None:
    from dante.cli.price import show_estimate

    req = ask_requirements(with_budget=True)
    run(lambda s: show_estimate(s, req, req.max_duration_s))


def _choice(*options: str) -> Callable[[str], str]:
    def check(answer: str) -> str:
        if answer.lower() not in options:
            raise UsageError(f"one of {', '.join(options)}")
        return answer.lower()

    return check


def _words(answer: str) -> list[str]:
    if answer == "-":
        return []
    try:
        return shlex.split(answer)
    except ValueError as exc:
        raise UsageError(f"cannot split that into words: {exc}") from None


def _guess(script: Path) -> str:
    return "bash" if script.suffix in {".sh", ".bash"} else "python3"


ITEMS: list[tuple[str, Callable[[], None]]] = [
    ("List providers", list_providers),
    ("Check balance", check_balance),
    ("Submit an AI training job (a Docker image or script, GPUs and budget)", submit_training),
    ("Submit a custom script", submit_script),
    ("Job status", job_status),
    ("Follow logs", follow_logs),
    ("Cancel a job", cancel),
    ("Estimate cost", estimate),
    ("Deposit funds", deposit),
    ("Download results", download_results),
    ("Wallet history", wallet_history),
]


def _account(answer: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]{1,31}", answer):
        raise UsageError("2 to 32 lower-case letters, digits, '-' or '_', starting with a letter")
    return answer


def _default_account() -> str:
    name = getpass.getuser().lower()
    return name if re.fullmatch(r"[a-z][a-z0-9_-]{1,31}", name) else "renter"


def menu() -> int:
    """The loop: show the items, run the chosen one, until 0, q or end of input."""
    url = nats_url()
    print(f"Dante: rent a GPU. Platform at {url}.")
    try:
        try:
            user, _ = acting(url)
        except UsageError as exc:
            print(f"error: {exc}")
            return EXIT_USAGE
        if user is None:
            print("(Not logged in: on a platform with logins, run `dante login` first.)")
            user = ask("Your account", _default_account(), _account)
            set_shared(Shared(nats_url=shared().nats_url, user=user))
        print(f"Acting as {user}.")
        while True:
            print()
            for n, (label, _) in enumerate(ITEMS, start=1):
                print(f"  {n}. {label}")
            print("  0. Exit")
            choice = ask("Choose", None, _menu_choice)
            if choice == 0:
                return 0
            print()
            ITEMS[choice - 1][1]()
    except Quit:
        return 0
    except KeyboardInterrupt:
        print()
        return EXIT_INTERRUPTED


def _menu_choice(answer: str) -> int:
    if answer.lower() in {"q", "quit", "exit"}:
        return 0
    return _int(0, len(ITEMS))(answer)

"""Script jobs confined with Landlock: real processes on this machine's kernel.

The agent's secrets are files beside the job's folder (as in a real layout: the work folder,
the config folder, `.env`); the job tries to read, write and signal its way out.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from dante.agent.config import AgentOptions, ConfigError, load_config
from dante.agent.executors import sandbox as sandbox_module
from dante.agent.executors.sandbox import Sandbox, job_grants, landlock_abi
from dante.agent.executors.script import ScriptExecutor
from dante.agent.executors.spec import RunResult
from tests.agent.runs import PROBE, Collected, script_spec, verdicts

pytestmark = pytest.mark.anyio

needs_landlock = pytest.mark.skipif(
    landlock_abi() == 0, reason="this kernel has no Landlock to confine scripts with"
)


def layout(tmp_path: Path) -> dict[str, Path]:
    """An agent's folders: its work folder with another job and its journal, its config
    folder with a stored login, a `.env`; the job's own folder inside the work folder."""
    agent = tmp_path / "agent"
    (agent / "jobs" / "other-job").mkdir(parents=True)
    (agent / "jobs" / "other-job" / "model.bin").write_text("someone else's weights")
    (agent / "journal.sqlite3").write_text("journal")
    config = tmp_path / "config" / "dante"
    config.mkdir(parents=True)
    (config / "credentials.json").write_text('{"token": "s3cr3t"}')
    (tmp_path / ".env").write_text("DANTE_PASSWORD=hunter2\n")
    (tmp_path / "public.txt").write_text("anyone may read this")
    return {
        "agent": agent,
        "config": config,
        "dotenv": tmp_path / ".env",
        "job": agent / "jobs" / "job-1",
    }


async def probe(
    tmp_path: Path, checks: str, *, mode: str = "auto", interpreter: str = "python3"
) -> tuple[RunResult, dict[str, str]]:
    paths = layout(tmp_path)
    hidden = (paths["agent"], paths["config"], paths["dotenv"])
    executor = ScriptExecutor(sandbox=Sandbox(mode=mode, hidden=hidden))  # type: ignore[arg-type]
    out = Collected()
    result = await executor.run(
        script_spec(paths["job"], PROBE + checks, interpreter=interpreter),
        on_output=out,
        stop=anyio.Event(),
    )
    return result, verdicts(out.texts("stdout"))


ESCAPES = """
attempt("credentials", lambda: open("../../../config/dante/credentials.json").read())
attempt("dotenv", lambda: open("../../../.env").read())
attempt("journal", lambda: open("../../journal.sqlite3").read())
attempt("other job", lambda: open("../other-job/model.bin").read())
attempt("list jobs", lambda: os.listdir(".."))
attempt("write ..", lambda: open("../escape.txt", "w").write("x"))
attempt("write ../..", lambda: open("../../../escape.txt", "w").write("x"))
attempt("public", lambda: open("../../../public.txt").read())
attempt("own folder", lambda: open("mine.txt", "w").write("x"))
attempt("system", lambda: open("/etc/passwd").read())
attempt("devices", lambda: open("/dev/null", "w").write("x"))
import tempfile
attempt("tempfile", lambda: tempfile.NamedTemporaryFile().write(b"x"))
"""


@needs_landlock
async def test_a_script_cannot_reach_the_agents_files(tmp_path: Path) -> None:
    result, seen = await probe(tmp_path, ESCAPES)

    assert result.exit_code == 0, result
    assert seen == {
        "credentials": "denied",
        "dotenv": "denied",
        "journal": "denied",
        "other job": "denied",
        "list jobs": "denied",
        "write ..": "denied",
        "write ../..": "denied",
        # Beside the hidden paths, the folder that holds them is still granted.
        "public": "ok",
        "own folder": "ok",
        "system": "ok",
        "devices": "ok",
        "tempfile": "ok",  # in its own TMPDIR
    }
    assert not (tmp_path / "agent" / "jobs" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert (tmp_path / "agent" / "jobs" / "job-1" / "mine.txt").read_text() == "x"


async def test_without_the_sandbox_the_same_script_gets_out(tmp_path: Path) -> None:
    """What the sandbox is for: mode off, and every escape above succeeds."""
    result, seen = await probe(tmp_path, ESCAPES, mode="off")

    assert result.exit_code == 0
    assert set(seen.values()) == {"ok"}
    assert (tmp_path / "escape.txt").exists()


@needs_landlock
async def test_children_of_the_script_are_confined_too(tmp_path: Path) -> None:
    checks = (
        "import subprocess\n"
        "code = subprocess.call(['cat', '../../../.env'], stderr=subprocess.DEVNULL)\n"
        "print('cat', 'ok' if code == 0 else 'denied')\n"
        "code = subprocess.call(['sh', '-c', 'echo x > ../escape.txt'], "
        "stderr=subprocess.DEVNULL)\n"
        "print('sh', 'ok' if code == 0 else 'denied')\n"
    )

    _, seen = await probe(tmp_path, checks)

    assert seen == {"cat": "denied", "sh": "denied"}


@pytest.mark.skipif(landlock_abi() < 6, reason="signal scoping needs Landlock ABI 6")
async def test_a_script_cannot_signal_the_agent(tmp_path: Path) -> None:
    checks = f"attempt('signal', lambda: os.kill({os.getpid()}, {int(signal.SIGUSR1)}))\n"
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda number, _: received.append(number))
    try:
        _, seen = await probe(tmp_path, checks)
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert seen == {"signal": "denied"}
    assert received == []


@needs_landlock
@pytest.mark.skipif(os.geteuid() != 0, reason="only a root agent's jobs had capabilities")
async def test_a_root_agents_script_has_no_capabilities(tmp_path: Path) -> None:
    checks = (
        "caps = dict(line.split(':') for line in open('/proc/self/status') "
        "if line.startswith('Cap'))\n"
        "print('effective', caps['CapEff'].strip())\n"
        "print('bounding', caps['CapBnd'].strip())\n"
        "print('uid', os.geteuid())\n"
    )

    _, seen = await probe(tmp_path, checks)

    assert seen == {"effective": "0" * 16, "bounding": "0" * 16, "uid": "0"}


async def test_require_without_landlock_refuses_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel without Landlock (stood in for by the ABI probe answering 0)."""
    monkeypatch.setattr(sandbox_module, "landlock_abi", lambda: 0)

    result, seen = await probe(tmp_path, "print('ran ok')\n", mode="require")

    assert result.exit_code is None
    assert "could not sandbox the script" in result.error
    assert "Landlock" in result.error
    assert seen == {}


async def test_auto_without_landlock_runs_unconfined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "landlock_abi", lambda: 0)

    result, seen = await probe(tmp_path, ESCAPES, mode="auto")

    assert result.exit_code == 0
    assert seen["dotenv"] == "ok"


def test_the_sandbox_mode_is_checked(tmp_path: Path) -> None:
    env = {"DANTE_USERNAME": "bob", "SOLANA_WALLET_ADDRESS": "1" * 32}

    assert load_config(AgentOptions(), env, None).script_sandbox == "auto"
    required = {**env, "DANTE_SCRIPT_SANDBOX": "require"}
    assert load_config(AgentOptions(), required, None).script_sandbox == "require"
    assert load_config(AgentOptions(script_sandbox="off"), required, None).script_sandbox == "off"
    with pytest.raises(ConfigError, match="must be auto, require or off, not 'strict'"):
        load_config(AgentOptions(), {**env, "DANTE_SCRIPT_SANDBOX": "strict"}, None)


def test_a_program_folder_grants_its_installation_but_never_a_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conda, bare, home = tmp_path / "conda", tmp_path / "bare", tmp_path / "home" / "ada"
    for folder in (conda / "bin", conda / "lib", bare / "bin", home / "bin", home / "lib"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    search_path = os.pathsep.join(str(p / "bin") for p in (conda, bare, home))

    granted = {folder for folder, _ in job_grants(search_path, "/usr/bin/python3")}

    assert {conda, conda / "bin", bare / "bin", home / "bin"} <= granted
    assert bare not in granted  # no lib beside its bin: not an installation
    assert home not in granted  # ~/bin must not open ~/.ssh

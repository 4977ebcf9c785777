"""`dante agent run` stopped by Ctrl-C (SIGINT) or SIGTERM while the platform is down: before
it was ever reached, and after it went away. Either way: exit 0 at once, no traceback."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.agent_proc import AgentProcess, Platform
from tests.cli.platform_proc import free_port

pytestmark = pytest.mark.slow

SIGNALS = [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="sigterm")]
#: What "at once" means here: the agent has nothing to wait for.
PROMPT_S = 5.0


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    up = Platform(tmp_path / "platform").start().open_accounts()
    try:
        yield up
    finally:
        up.stop()


def stop_promptly(agent: AgentProcess, sig: int) -> int:
    """Send `sig`; the exit code, once the agent has exited (within `PROMPT_S`)."""
    started = time.monotonic()
    code = agent.stop(sig, timeout=30)
    took = time.monotonic() - started
    assert took < PROMPT_S, f"took {took:.1f} s to stop:\n{agent.output}"
    return code


@pytest.mark.parametrize("sig", SIGNALS)
def test_stopped_while_no_platform_was_ever_reached(sig: int, tmp_path: Path) -> None:
    # Nothing listens there: the agent keeps trying to connect.
    agent = AgentProcess(f"nats://127.0.0.1:{free_port()}", tmp_path / "work")
    agent.start(timeout=30, until='"connecting"')
    time.sleep(1.5)  # into the retries

    assert stop_promptly(agent, sig) == 0
    assert "Traceback" not in agent.output
    assert f'"signal": "{signal.Signals(sig).name}"' in agent.output
    assert "agent stopped before reaching the platform" in agent.output


@pytest.mark.parametrize("sig", SIGNALS)
def test_stopped_after_the_platform_went_away(sig: int, platform: Platform, tmp_path: Path) -> None:
    agent = AgentProcess(platform.url, tmp_path / "work").start()
    assert agent.reader is not None
    assert platform.stop() == 0
    # A heartbeat sent since waits, unsent, in the connection that is trying to reconnect
    # (closing such a connection is what failed).
    agent.reader.wait_for('"heartbeat failed"', 30)

    assert stop_promptly(agent, sig) == 0
    assert "Traceback" not in agent.output
    assert "offers not withdrawn: the platform is unreachable" in agent.output
    assert '"agent stopped"' in agent.output

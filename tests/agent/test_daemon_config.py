"""The agent's settings (.env, environment, options), its work directory and its CLI errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dante.agent.config import AgentOptions, ConfigError, load_config, read_dotenv
from dante.agent.executors.spec import OutputLine
from dante.agent.gpus import detect_gpus
from dante.agent.identity import WorkDirError, locked_work_dir, provider_id_for
from dante.agent.output_queue import OutputQueue
from dante.agent.setup import Limits
from tests.factories import NOW, SOLANA

ENV = {"DANTE_USERNAME": "bob", "SOLANA_WALLET_ADDRESS": SOLANA}


def test_dotenv_lines(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# the provider's settings\n"
        "\n"
        "PROVIDER_NAME=rig-1\n"
        "export NATS_ADDRESS = nats://10.0.0.5:4222\n"
        "SOLANA_WALLET_ADDRESS='9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin'\n"
        'DANTE_PASSWORD="p#ss word"\n'
        "LOG_LEVEL=debug  # for now\n"
    )
    assert read_dotenv(dotenv) == {
        "PROVIDER_NAME": "rig-1",
        "NATS_ADDRESS": "nats://10.0.0.5:4222",
        "SOLANA_WALLET_ADDRESS": SOLANA,
        "DANTE_PASSWORD": "p#ss word",
        "LOG_LEVEL": "debug",
    }
    assert read_dotenv(tmp_path / "missing") == {}
    dotenv.write_text("PROVIDER_NAME=x\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected KEY=VALUE"):
        read_dotenv(dotenv)


def test_options_beat_the_environment_which_beats_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"DANTE_USERNAME=bob\nSOLANA_WALLET_ADDRESS={SOLANA}\nPROVIDER_NAME=from-file\n"
        "NATS_ADDRESS=nats://file:4222\nLOG_LEVEL=debug\n"
    )
    config = load_config(AgentOptions(), {"PROVIDER_NAME": "from-env"}, dotenv)
    assert (config.owner, config.name, config.wallet) == ("bob", "from-env", SOLANA)
    assert (config.nats_url, config.log_level) == ("nats://file:4222", "debug")
    config = load_config(
        AgentOptions(name="from-option", nats_url="nats://option:1"),
        {"PROVIDER_NAME": "from-env", "DANTE_NATS_URL": "nats://env:2"},
        dotenv,
    )
    assert (config.name, config.nats_url) == ("from-option", "nats://option:1")
    config = load_config(AgentOptions(), {"DANTE_NATS_URL": "nats://env:2"}, dotenv)
    assert config.nats_url == "nats://env:2"  # DANTE_NATS_URL before NATS_ADDRESS


def test_defaults(tmp_path: Path) -> None:
    config = load_config(AgentOptions(), {**ENV, "DANTE_DATA_DIR": str(tmp_path)}, None)
    assert config.price is None and config.executor is None and config.max_jobs is None
    assert (config.tick_s, config.drain_timeout_s, config.stop_grace_s) == (10.0, 60.0, 10.0)
    assert config.work_dir == tmp_path / "agent"
    assert config.nats_url == "nats://127.0.0.1:4222"
    assert config.name  # the host name


def test_prices_are_parsed_exactly() -> None:
    config = load_config(AgentOptions(price="0.750001"), ENV, None)
    assert config.price == 750_001
    for text, why in [
        ("abc", "not an amount"),
        ("0.0000001", "more than 6 decimals"),
        ("-1", "not an amount"),
        ("0", "zero"),
        ("1e3", "not an amount"),
    ]:
        with pytest.raises(ConfigError, match=f"--price: .*{why}"):
            load_config(AgentOptions(price=text), ENV, None)


@pytest.mark.parametrize(
    ("env", "options", "message"),
    [
        ({"SOLANA_WALLET_ADDRESS": SOLANA}, AgentOptions(), "DANTE_USERNAME is not set"),
        ({**ENV, "DANTE_USERNAME": "Bob!"}, AgentOptions(), "not an account name"),
        ({**ENV, "DANTE_USERNAME": "platform"}, AgentOptions(), "not an account name"),
        ({"DANTE_USERNAME": "bob"}, AgentOptions(), "SOLANA_WALLET_ADDRESS"),
        (ENV, AgentOptions(wallet="0xdeadbeef"), "not a Solana address"),
        (ENV, AgentOptions(max_jobs=0), "--max-jobs must be at least 1"),
        (ENV, AgentOptions(tick_seconds=0), "--tick-seconds"),
        (ENV, AgentOptions(drain_timeout=-1), "--drain-timeout"),
        (ENV, AgentOptions(cpu_limit=0), "--cpu-limit"),
    ],
)
def test_bad_settings_say_what_to_fix(
    env: dict[str, str], options: AgentOptions, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(options, env, None)


def test_the_provider_id_is_kept_and_the_work_dir_held(tmp_path: Path) -> None:
    with locked_work_dir(tmp_path / "w") as work_dir:
        first = provider_id_for(work_dir, "bob")
        assert first.startswith("prv-") and len(first) == 16
        assert provider_id_for(work_dir, "bob") == first
        with pytest.raises(WorkDirError, match=r"belongs to provider .* of account .bob."):
            provider_id_for(work_dir, "carol")
        with (
            pytest.raises(WorkDirError, match="another agent is running"),
            locked_work_dir(work_dir),
        ):
            pass
    with locked_work_dir(tmp_path / "w"):  # free again once released
        pass


def test_job_limits_are_a_share_of_the_machine() -> None:
    limits = Limits(memory_mb=None, cpus=None, machine_memory_mb=64_000, machine_cpus=16,
                    machine_gpus=4)  # fmt: skip
    assert limits.for_job(2, container=True) == (28_800, 8.0)
    assert limits.for_job(1, container=False) == (None, None)  # RLIMIT_AS would break CUDA
    given = Limits(memory_mb=4096, cpus=2.5, machine_memory_mb=64_000, machine_cpus=16,
                   machine_gpus=4)  # fmt: skip
    assert given.for_job(4, container=False) == (4096, 2.5)


def test_output_waits_in_bounded_memory() -> None:
    queue = OutputQueue(max_bytes=10 * (64 + 10))
    queue.add([OutputLine(at=NOW, stream="stdout", text=f"line {n:5d}") for n in range(25)])
    assert len(queue) == 10 and queue.lost == 15
    batch = queue.batch()
    assert batch.lines[0].text.startswith("[dante agent] 15 lines of output were lost")
    assert [line.text for line in batch.lines[1:]] == [f"line {n:5d}" for n in range(15, 25)]
    # More arrive, and push out some in flight, before the batch is confirmed.
    queue.add([OutputLine(at=NOW, stream="stderr", text=f"more {n:5d}") for n in range(3)])
    queue.sent(batch)
    assert queue.lost == 3
    rest = queue.batch()
    assert [line.text for line in rest.lines[1:]] == [f"more {n:5d}" for n in range(3)]
    queue.sent(rest)
    assert len(queue) == 0 and queue.batch().lines == []


# ── the command line ────────────────────────────────────────────────────────────────────


def agent(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """`dante agent run …` in `cwd`, with only the given Dante settings in its environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DANTE_", "SOLANA_"))}
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "dante", "agent", "run", *args],
        capture_output=True,
        text=True,
        env={**clean, **env, "PYTHONPATH": str(repo)},
        cwd=cwd,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stderr


def test_cli_refuses_bad_settings_with_exit_2(tmp_path: Path) -> None:
    code, err = agent("--simulate", "1xRTX 4090:24", env={"SOLANA_WALLET_ADDRESS": SOLANA},
                      cwd=tmp_path)  # fmt: skip
    assert code == 2 and "DANTE_USERNAME is not set" in err
    code, err = agent("--price", "0.5.5", "--simulate", "1xRTX 4090:24", env=ENV, cwd=tmp_path)
    assert code == 2 and "--price: '0.5.5' is not an amount" in err
    code, err = agent("--simulate", "3xRTX:abc", env=ENV, cwd=tmp_path)
    assert code == 2 and "--simulate:" in err
    # A .env in the working directory counts too; the real environment wins over it.
    (tmp_path / ".env").write_text(f"DANTE_USERNAME=bob\nSOLANA_WALLET_ADDRESS={SOLANA}\n")
    code, err = agent("--price", "x", "--simulate", "1xRTX 4090:24", env={}, cwd=tmp_path)
    assert code == 2 and "--price: 'x' is not an amount" in err
    code, err = agent("--simulate", "1xRTX 4090:24", env={"DANTE_USERNAME": "X"}, cwd=tmp_path)
    assert code == 2 and "'X' is not an account name" in err


def test_cli_without_a_gpu_says_what_it_tried(tmp_path: Path) -> None:
    if detect_gpus().gpus:
        pytest.skip("this machine has a GPU")
    code, err = agent(env=ENV, cwd=tmp_path)
    assert code == 1
    assert "no GPU found. Tried:" in err and "nvidia" in err and "--simulate" in err


def test_cli_docker_executor_needs_an_engine(tmp_path: Path) -> None:
    code, err = agent(
        "--simulate", "1xRTX 4090:24", "--executor", "docker",
        "--work-dir", str(tmp_path / "w"), "--nats-url", "nats://127.0.0.1:1",
        env={**ENV, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}, cwd=tmp_path,
    )  # fmt: skip
    assert code == 1
    assert "--executor docker, but no Docker engine answers" in err

"""`dante up --demo` end to end: the real platform, the real agent daemon with simulated GPUs
running jobs as scripts, and a newcomer's commands as the demo renter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.cli import Ran, run_dante
from tests.cli.platform_proc import UpProcess

pytestmark = pytest.mark.slow

JOB = """\
import os, sys
print("args", *sys.argv[1:])
print("gpus", os.environ["CUDA_VISIBLE_DEVICES"])
print("input", open("data.txt").read().strip())
print("a warning", file=sys.stderr)
os.makedirs("out", exist_ok=True)
with open("out/result.txt", "w") as f:
    f.write("trained on " + open("data.txt").read())
"""


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[UpProcess]:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "LOG_LEVEL": "warning"}
    platform = UpProcess(tmp_path / "data", None, "--demo", env=env).start(timeout=120)
    try:
        yield platform
    finally:
        platform.stop()


def renter(up: UpProcess, *args: str) -> Ran:
    env = {"XDG_CONFIG_HOME": up.env["XDG_CONFIG_HOME"], "DANTE_PASSWORD": "demo-pass"}
    return run_dante(*args, url=up.url, user="demo-user", env=env, timeout=120)


def test_a_newcomer_rents_a_gpu_from_the_demo(demo: UpProcess, tmp_path: Path) -> None:
    said = "".join(demo.output)
    assert "demo-user has 100 dGPU to spend" in said
    assert f"export DANTE_NATS_URL={demo.url} DANTE_USERNAME=demo-user" in said
    for command in ("dante market", "dante submit hello", "dante  "):
        assert f"\n  {command}" in said

    (offer,) = renter(demo, "market", "--json").json()["offers"]
    assert (offer["owner"], offer["gpus_free"], offer["simulated"]) == ("demo-provider", 2, True)
    assert offer["models"] == ["NVIDIA GeForce RTX 4090"]
    balance = renter(demo, "balance", "--json").json()
    assert (balance["available_udgpu"], balance["held_udgpu"]) == (100_000_000, 0)
    # The demo renter paid its 100 dGPU on the local chain: the treasury holds them, and
    # its deposit names the transaction.
    chain = renter(demo, "chain", "status", "--json").json()
    assert (chain["cluster"], chain["treasury_balance_udgpu"]) == ("local", 100_000_000)
    (deposited,) = renter(demo, "wallet", "history", "--json").json()["entries"]
    assert deposited["kind"] == "deposit" and deposited["signature"]
    assert (demo.data_dir / "demo-renter-keypair.json").exists()
    # A deposit without a payment is refused, and credits nothing.
    unpaid = renter(demo, "wallet", "deposit", "5", "--signature", "1" * 88)
    assert unpaid.code == 1 and "no confirmed token transfer" in unpaid.err, unpaid

    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "data.txt").write_text("cifar10\n")
    ran = renter(
        demo, "jobs", "submit", "--json", "--script", str(tmp_path / "job.py"), "--gpus", "2",
        "--input", str(tmp_path / "data.txt"), "--max-hours", "0.1", "--", "--epochs", "1",
    )  # fmt: skip
    assert ran.code == 0, ran
    job_id = ran.json()["job_id"]

    ran = renter(demo, "jobs", "wait", job_id, "--timeout", "90", "--json")
    assert ran.code == 0, ran
    ended = ran.json()
    assert (ended["state"], ended["exit_code"], ended["gpus"]) == ("completed", 0, 2)

    logs = renter(demo, "jobs", "logs", job_id, "--json").json()
    job_lines = [line for line in logs["lines"] if line["source"] == "job"]
    assert [(line["stream"], line["text"]) for line in job_lines] == [
        ("stdout", "args --epochs 1"),
        ("stdout", "gpus 0,1"),
        ("stdout", "input cifar10"),
        ("stderr", "a warning"),
    ]
    # The platform's lines about it come among them, in time order: placed, then ended.
    platform = [line["event"] for line in logs["lines"] if line["source"] == "platform"]
    assert platform[0] == "JobSubmitted" and platform[-1] == "JobCompleted", platform
    assert logs["ended"] is True

    ran = renter(demo, "jobs", "results", job_id, "--out", str(tmp_path / "results"))
    assert ran.code == 0, ran
    assert (tmp_path / "results" / "result.txt").read_text() == "trained on cifar10\n"

    # The bill: held, charged, released; what is left is 100 dGPU less the charge.
    history = renter(demo, "wallet", "history", "--json").json()["entries"]
    kinds = [entry["kind"] for entry in reversed(history)]
    assert kinds[0] == "deposit" and kinds[1] == "hold" and kinds[-1] == "release"
    balance = renter(demo, "balance", "--json").json()
    assert balance["held_udgpu"] == 0
    assert balance["available_udgpu"] == 100_000_000 - ended["charged_udgpu"]

    audited = run_dante(
        "audit", "--chain", "--skip-views", url=demo.url,
        env={"XDG_CONFIG_HOME": demo.env["XDG_CONFIG_HOME"]}, timeout=120,
    )  # fmt: skip
    assert audited.code == 0 and "every invariant holds" in audited.out, audited

    assert demo.stop() == 0
    assert not running_with(str(demo.data_dir / "demo-agent")), "the demo agent outlived dante up"


def running_with(text: str) -> list[int]:
    """The processes whose command line mentions `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_the_next_steps_put_dante_on_the_path_when_a_new_terminal_lacks_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from dante.cli.demo import next_steps
    from dante.client.credentials import Credential

    renter = Credential(username="demo-user", secret="demo-pass")
    ours = Path(sys.prefix) / "bin"
    # A new terminal: a PATH without this environment's bin.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    steps = next_steps("nats://127.0.0.1:4222", renter, default_password=True)
    lines = steps.splitlines()
    source = next(n for n, line in enumerate(lines) if line.strip().startswith("source "))
    assert source < next(n for n, line in enumerate(lines) if "dante market" in line)
    script = lines[source].split()[1]
    assert Path(script).resolve() == (ours / "activate").resolve()
    # Pasting every line into a shell is fine: no placeholder to fill in.
    typed = "\n".join(line for line in lines if line.startswith("  "))
    assert subprocess.run(["bash", "-n"], input=typed, text=True, check=False).returncode == 0
    # With this environment on the PATH, nothing to add.
    monkeypatch.setenv("PATH", f"{ours}:/usr/bin:/bin")
    steps = next_steps("nats://127.0.0.1:4222", renter, default_password=True)
    assert "source " not in steps
    hidden = next_steps("nats://127.0.0.1:4222", renter, default_password=False)
    assert "demo-pass" not in hidden and "DANTE_PASSWORD='" in hidden

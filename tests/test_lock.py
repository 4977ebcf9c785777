"""The lock files match pyproject.toml, and the README installs from them.

Pure file checks: nothing is resolved or downloaded. They fail when a dependency is added to
(or a range changed in) pyproject.toml without refreshing the locks with the commands the
README gives, and when a lock loses its pins, hashes or platform markers.
"""

from __future__ import annotations

import itertools
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
README = (REPO / "README.md").read_text(encoding="utf-8")
BUILD_IN = REPO / "requirements-build.in"

RUNTIME_LOCK = "requirements.lock"
DEV_LOCK = "requirements-dev.lock"
BUILD_LOCK = "requirements-build.lock"
LOCKS = [RUNTIME_LOCK, DEV_LOCK, BUILD_LOCK]

_HASH = re.compile(r"--hash=sha256:([0-9a-f]*)")


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    version: Version
    hashes: tuple[str, ...]


def _logical_lines(text: str) -> list[str]:
    """A requirements file's lines with continuations joined and comments dropped."""
    lines = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            lines.append(line)
    return lines


def _pin(line: str) -> Pin:
    requirement_text = _HASH.sub("", line).strip()
    assert not requirement_text.startswith("-"), f"an option, not a requirement: {line}"
    requirement = Requirement(requirement_text)
    specifiers = list(requirement.specifier)
    assert len(specifiers) == 1, f"not pinned to one version: {line}"
    assert specifiers[0].operator == "==", f"not pinned with ==: {line}"
    assert not requirement.url, f"a URL, not a release: {line}"
    hashes = tuple(_HASH.findall(line))
    assert hashes, f"no --hash=sha256: {line}"
    for digest in hashes:
        assert re.fullmatch(r"[0-9a-f]{64}", digest), f"not a sha256: {digest} in {line}"
    return Pin(requirement, Version(specifiers[0].version), hashes)


def _lock(name: str) -> dict[NormalizedName, Pin]:
    pins: dict[NormalizedName, Pin] = {}
    for line in _logical_lines((REPO / name).read_text(encoding="utf-8")):
        pin = _pin(line)
        key = canonicalize_name(pin.requirement.name)
        assert key not in pins, f"{name} locks {key} twice"
        pins[key] = pin
    return pins


def _build_inputs() -> list[Requirement]:
    return [Requirement(line) for line in _logical_lines(BUILD_IN.read_text(encoding="utf-8"))]


def _runtime() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def _dev() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]


# What each lock must hold: the requirements it was compiled from.
INPUTS = {
    RUNTIME_LOCK: lambda: _runtime() + _build_inputs(),
    DEV_LOCK: lambda: _runtime() + _dev() + _build_inputs(),
    BUILD_LOCK: _build_inputs,
}


def _environments() -> list[dict[str, str]]:
    """Marker environments for the platforms and Pythons one lock is meant to serve."""
    platforms = [
        ("linux", "Linux", "posix", "x86_64"),
        ("linux", "Linux", "posix", "aarch64"),
        ("darwin", "Darwin", "posix", "arm64"),
        ("win32", "Windows", "nt", "AMD64"),
    ]
    environments = []
    for (sys_platform, system, os_name, machine), minor in itertools.product(
        platforms, range(11, 15)
    ):
        env = {key: str(value) for key, value in default_environment().items()}
        env.update(
            sys_platform=sys_platform,
            platform_system=system,
            os_name=os_name,
            platform_machine=machine,
            python_version=f"3.{minor}",
            python_full_version=f"3.{minor}.0",
            implementation_name="cpython",
            platform_python_implementation="CPython",
        )
        environments.append(env)
    return environments


def _holds(marker: Marker | None, env: dict[str, str]) -> bool:
    return marker is None or marker.evaluate(env)


@pytest.mark.parametrize("lock", LOCKS)
def test_every_line_is_pinned_and_hashed(lock: str) -> None:
    pins = _lock(lock)  # _pin asserts == and at least one sha256 on every line
    assert pins, f"{lock} locks nothing"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_input_is_locked_within_its_range(lock: str) -> None:
    pins = _lock(lock)
    for requirement in INPUTS[lock]():
        key = canonicalize_name(requirement.name)
        assert key in pins, f"{requirement} is not in {lock}: refresh the locks (README)"
        version = pins[key].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} locks {key}=={version}, outside {requirement}: refresh the locks (README)"
        )


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK])
def test_a_dependency_with_a_marker_is_locked_exactly_where_it_holds(lock: str) -> None:
    # uvloop is built for every platform but Windows: the lock must neither drop it elsewhere
    # nor ask for it there. (Were such a package also needed unconditionally by another one,
    # this would have to look at the lock's `# via` annotations.)
    pins = _lock(lock)
    marked = [r for r in INPUTS[lock]() if r.marker is not None]
    assert any(canonicalize_name(r.name) == "uvloop" for r in marked)
    for requirement in marked:
        pin = pins[canonicalize_name(requirement.name)]
        for env in _environments():
            assert _holds(pin.requirement.marker, env) == _holds(requirement.marker, env), (
                f"{lock}: {pin.requirement} versus {requirement} on {env['sys_platform']} "
                f"{env['python_full_version']}"
            )


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_installs_on_some_supported_platform(lock: str) -> None:
    environments = _environments()
    for pin in _lock(lock).values():
        assert any(_holds(pin.requirement.marker, env) for env in environments), pin


def test_the_locks_agree_on_every_version() -> None:
    # The tests run what users run, and the build lock installs what the others would.
    runtime, dev, build = _lock(RUNTIME_LOCK), _lock(DEV_LOCK), _lock(BUILD_LOCK)
    for name, pin in runtime.items():
        assert name in dev, f"{name} is in {RUNTIME_LOCK} but not in {DEV_LOCK}"
        assert dev[name].version == pin.version, (name, pin.version, dev[name].version)
        assert set(dev[name].hashes) == set(pin.hashes), name
    for name, pin in build.items():
        assert name in runtime, f"{name} is in {BUILD_LOCK} but not in {RUNTIME_LOCK}"
        assert runtime[name].version == pin.version, (name, pin.version, runtime[name].version)
        assert set(runtime[name].hashes) == set(pin.hashes), name


def test_the_build_inputs_are_pyprojects_build_system() -> None:
    build_system = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    inputs = {canonicalize_name(r.name): r for r in _build_inputs()}
    for requirement in build_system:
        key = canonicalize_name(requirement.name)
        assert key in inputs, f"{requirement} ([build-system]) is not in {BUILD_IN.name}"
        assert str(inputs[key]) == str(requirement), (
            f"{BUILD_IN.name} has {inputs[key]}, pyproject.toml's [build-system] {requirement}"
        )


def _readme_block(marker: str) -> list[str]:
    match = re.search(rf"<!-- {marker} -->\n```\n(.*?)```\n<!-- /{marker} -->", README, re.DOTALL)
    assert match, f"README.md has no {marker} block"
    return match.group(1).splitlines()


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_shows_the_readmes_refresh_command(lock: str) -> None:
    lines = (REPO / lock).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# This file was autogenerated by uv via the following command:"
    command = lines[1].removeprefix("#").strip()
    args = shlex.split(command)
    assert args[:3] == ["uv", "pip", "compile"], command
    assert {"--universal", "--generate-hashes"} <= set(args), command
    assert args[args.index("--python-version") + 1] == "3.11", command
    assert args[args.index("--output-file") + 1] == lock, command
    assert command in _readme_block("lock-command"), f"README.md does not show: {command}"


def _pip_installs(command: str) -> list[list[str]]:
    steps = [shlex.split(step) for step in command.split("&&")]
    return [s[2:] for s in steps if s[:2] == [".venv/bin/pip", "install"]]


@pytest.mark.parametrize(
    ("marker", "lock", "last"),
    [
        ("start-command", RUNTIME_LOCK, ".venv/bin/dante up --demo"),
        ("test-command", DEV_LOCK, ".venv/bin/pytest"),
    ],
)
def test_the_readmes_commands_install_from_the_locks(marker: str, lock: str, last: str) -> None:
    lines = _readme_block(marker)
    assert len(lines) == 1, f"the {marker} must stay one line: .ci/run evals it"
    command = lines[0]
    assert command.startswith("python3 -m venv .venv && "), command
    assert command.endswith(f" && {last}"), command
    build, dependencies, project = _pip_installs(command)
    # The build tools first, so that the sdists among the dependencies (nkeys) and the project
    # build with pinned, hash-checked tools rather than ones pip would fetch unpinned.
    assert build == ["-q", "-r", BUILD_LOCK], command
    assert dependencies == ["-q", "--no-build-isolation", "-r", lock], command
    assert project == ["-q", "--no-deps", "--no-build-isolation", "-e", "."], command

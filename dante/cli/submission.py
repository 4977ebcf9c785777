"""A job from the command line: its payload, environment and inputs, checked before sending.

Everything here is checked locally first: a bad `--env`, a script too large to go inline, an
input that does not exist are usage errors (exit code 2) and nothing is sent or uploaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from dante.cli.options import UsageError
from dante.cli.render import Progress, size

if TYPE_CHECKING:
    from dante.client.commands import Client
    from dante.schemas.values import FileRef, JobPayload, JobRequirements

Interpreter = Literal["python3", "bash"]

_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_IMAGE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_MAX_VALUE: Final = 32_768
_MAX_NAME: Final = 200


@dataclass(frozen=True, slots=True)
class Upload:
    """A local file and where the job finds it, relative to its work folder."""

    local: Path
    rel_path: str
    size: int


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a submission needs, checked."""

    name: str
    requirements: JobRequirements
    payload: JobPayload
    uploads: list[Upload] = field(default_factory=list)


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """`K=V` pairs; a malformed one or a bad name is a usage error."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--env {item!r} is not NAME=VALUE")
        if not _ENV_NAME.match(name):
            raise UsageError(
                f"--env {item!r}: {name!r} is not a variable name (letters, digits and '_', "
                "not starting with a digit)"
            )
        if len(value) > _MAX_VALUE:
            raise UsageError(f"--env {name}: the value is longer than {_MAX_VALUE} characters")
        if name in env:
            raise UsageError(f"--env {name} is given twice")
        env[name] = value
    return env


def read_script(path: Path) -> str:
    """A script's text, to go inline in the job (at most 1 MiB of UTF-8)."""
    from dante.schemas.values import MAX_SCRIPT_BYTES

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--script {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise UsageError(
            f"--script {path} is {len(data):,} bytes; a script goes inline in the job and may "
            f"be at most {MAX_SCRIPT_BYTES:,} bytes (1 MiB): pass large files with --input "
            "and keep the script small"
        )
    if not data.strip():
        raise UsageError(f"--script {path} is empty")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsageError(f"--script {path} is not UTF-8 text") from None


def interpreter_for(path: Path, explicit: Interpreter | None) -> Interpreter:
    if explicit is not None:
        return explicit
    return "bash" if path.suffix in {".sh", ".bash"} else "python3"


def build_payload(
    *,
    script: Path | None,
    interpreter: Interpreter | None,
    image: str | None,
    command: Sequence[str],
    env: dict[str, str],
    network: bool,
) -> JobPayload:
    from dante.schemas.values import DockerPayload, ScriptPayload

    if (script is None) == (image is None):
        raise UsageError("give either --script FILE or --image IMAGE (exactly one)")
    if any(len(arg) > _MAX_VALUE for arg in command):
        raise UsageError(f"a command argument is longer than {_MAX_VALUE} characters")
    if script is not None:
        if network:
            raise UsageError("--network is for --image jobs; scripts run without a container")
        return ScriptPayload(
            script=read_script(script),
            interpreter=interpreter_for(script, interpreter),
            args=list(command),
            env=env,
        )
    assert image is not None
    if interpreter is not None:
        raise UsageError("--interpreter is for --script jobs; an image brings its own")
    if len(image) > 512 or not _IMAGE.match(image):
        raise UsageError(f"--image {image!r} is not a Docker image reference")
    return DockerPayload(image=image, command=list(command), env=env, network=network)


def gather_uploads(paths: Sequence[Path]) -> list[Upload]:
    """Each `--input`: a file goes in by its name, a folder with everything under it."""
    from dante.schemas.values import check_relative_path

    uploads: list[Upload] = []
    for path in paths:
        if path.is_file():
            uploads.append(Upload(path, path.name, path.stat().st_size))
        elif path.is_dir():
            base = path.resolve().name
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
            if not files:
                raise UsageError(f"--input {path} is an empty folder")
            uploads.extend(
                Upload(p, f"{base}/{p.relative_to(path).as_posix()}", p.stat().st_size)
                for p in files
            )
        else:
            raise UsageError(f"--input {path}: no such file or folder")
    seen: dict[str, Path] = {}
    for upload in uploads:
        try:
            check_relative_path(upload.rel_path)
        except ValueError as exc:
            raise UsageError(f"--input {upload.local}: {exc}") from None
        if upload.rel_path in seen:
            raise UsageError(
                f"--input {upload.local} and {seen[upload.rel_path]} would both be "
                f"{upload.rel_path} in the job's folder"
            )
        seen[upload.rel_path] = upload.local
    return uploads


def job_spec(
    *,
    name: str | None,
    requirements: JobRequirements,
    payload: JobPayload,
    inputs: Sequence[Path],
) -> JobSpec:
    text = (name or "").strip()
    if len(text) > _MAX_NAME:
        raise UsageError(f"--name is longer than {_MAX_NAME} characters")
    return JobSpec(
        name=text, requirements=requirements, payload=payload, uploads=gather_uploads(inputs)
    )


def describe_payload(payload: Any) -> str:
    from dante.schemas.values import DockerPayload

    if isinstance(payload, DockerPayload):
        return f"image {payload.image}" + (
            f" {' '.join(payload.command)}" if payload.command else ""
        )
    return f"{payload.interpreter} script"


async def upload_inputs(client: Client, uploads: Sequence[Upload]) -> list[FileRef]:
    """Upload each input; the references to submit the job with."""
    from dante.client.transfer import upload_input

    progress = Progress()
    refs = []
    total = sum(u.size for u in uploads)
    done = 0
    try:
        for n, upload in enumerate(uploads, start=1):
            progress.show(
                f"uploading {n}/{len(uploads)}: {upload.rel_path} ({size(upload.size)}; "
                f"{size(done)} of {size(total)} sent)",
                force=True,
            )
            refs.append(await upload_input(client, upload.local, upload.rel_path))
            done += upload.size
    finally:
        progress.clear()
    return refs

"""A job's work folder: its inputs going in, its results (the `out/` folder) coming out.

Everything a job or a renter supplies is treated as hostile: names may try to climb out of the
folder ('../', absolute paths), archives may carry links pointing elsewhere, and a finished job
may have replaced `out/` with a link to somewhere else on the provider's disk.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from dante.schemas.values import check_relative_path

OUT_DIR: Final = "out"
#: Beside `out/` (`$DANTE_OUTPUT_DIR/../stop-reason`, also `$DANTE_STOP_FILE`): why the job
#: is being stopped, written just before its SIGTERM.
STOP_REASON: Final = "stop-reason"
_CHUNK: Final = 1024 * 1024


class WorkspaceError(Exception):
    """A file operation on a job's folder was refused or failed; the message says why."""


class UnsafeArchive(WorkspaceError):
    """An input archive holds a name or link that would land outside the job's folder."""


class UnsafeResults(WorkspaceError):
    """The job's results folder is not a plain folder inside its work folder."""


def prepare_work_dir(work_dir: Path) -> Path:
    """Create the work folder and its `out/` folder; return the `out/` folder."""
    out = work_dir / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_stop_reason(work_dir: Path, code: str, reason: str = "") -> bool:
    """Tell the job why it is being stopped: `CODE: REASON` in `work_dir/stop-reason`.

    The job owns its folder and may have put anything at that name (a link to a provider's
    file, a pipe that would block a writer): the text goes into a new file of a random name,
    which then replaces whatever was there, and a link is replaced, never followed. False if
    it could not be written (a folder of that name, the folder gone).
    """
    import tempfile

    text = f"{code}: {reason}\n" if reason else f"{code}\n"
    try:
        descriptor, name = tempfile.mkstemp(prefix=".stop-reason-", dir=work_dir)
    except OSError:
        return False
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        temporary = Path(name)
        temporary.chmod(0o644)  # the job, under another user id, reads it
        temporary.replace(work_dir / STOP_REASON)
    except OSError:
        with contextlib.suppress(OSError):
            Path(name).unlink()
        return False
    return True


def safe_path(root: Path, relative: str) -> Path:
    """`root/relative`, refusing anything that would resolve outside `root`.

    For placing a downloaded input file at the path its `FileRef` names. Parent folders are
    created; a symbolic link anywhere on the way is refused, since it could lead out.
    """
    try:
        check_relative_path(relative)
    except ValueError as exc:
        raise UnsafeArchive(str(exc)) from exc
    target = root.joinpath(*relative.split("/"))
    current = root
    for part in relative.split("/")[:-1]:
        current = current / part
        if current.is_symlink():
            raise UnsafeArchive(f"path {relative!r} goes through a symbolic link")
        current.mkdir(exist_ok=True)
    if target.is_symlink():
        raise UnsafeArchive(f"path {relative!r} is a symbolic link")
    return target


@dataclass(frozen=True, slots=True)
class ResultsArchive:
    """The packed results: a .tar.gz of `out/`, its size and SHA-256, and what was left out."""

    path: Path
    size: int
    sha256: str
    files: int
    #: Entries of out/ that are not regular files or folders (links, devices, pipes), or that
    #: could not be read; named relative to out/, with the reason.
    skipped: tuple[str, ...] = ()


def pack_results(work_dir: Path, archive: Path) -> ResultsArchive:
    """Pack `work_dir/out` into `archive` (.tar.gz), the same bytes for the same files.

    Entries are sorted, owners are blanked and the gzip header carries no time, so packing
    unchanged results twice gives the same SHA-256. Only regular files and folders are
    packed; symbolic links are left out, since they could point at the provider's files.
    """
    out = work_dir / OUT_DIR
    if out.is_symlink():
        raise UnsafeResults(f"{OUT_DIR}/ is a symbolic link; results must be files in it")
    if out.exists() and not out.is_dir():
        raise UnsafeResults(f"{OUT_DIR}/ is not a folder")
    skipped: list[str] = []
    files = 0
    archive.parent.mkdir(parents=True, exist_ok=True)
    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative, kind in _walk(out):
            path = out / relative
            if kind == "dir":
                tar.addfile(_tar_info(relative, path.lstat()))
                continue
            if kind != "file":
                skipped.append(f"{relative} ({kind})")
                continue
            try:
                with _open_no_follow(path) as handle:
                    info = _tar_info(relative, os.fstat(handle.fileno()))
                    if not info.isfile():
                        skipped.append(f"{relative} (changed while packing)")
                        continue
                    tar.addfile(info, handle)
            except OSError as exc:
                skipped.append(f"{relative} (unreadable: {exc.strerror})")
                continue
            files += 1
    return ResultsArchive(
        path=archive,
        size=archive.stat().st_size,
        sha256=_sha256(archive),
        files=files,
        skipped=tuple(skipped),
    )


def extract_inputs(archive: Path, dest: Path, *, max_bytes: int | None = None) -> list[str]:
    """Extract a renter's archive into `dest`, or refuse it whole if any entry is unsafe.

    Refused: absolute names, '..', links pointing outside `dest` (or absolute), hard links
    to names outside the archive, devices and pipes, and more than `max_bytes` in total.
    Returns the names extracted.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeArchive(f"{archive.name} is not a readable tar archive: {exc}") from exc
    with tar:
        members = tar.getmembers()
        names = _check_members(members, max_bytes)
        # The checks above give clear reasons; the data filter is a second line of defence
        # (it also resolves every destination and drops set-uid bits).
        try:
            tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise UnsafeArchive(str(exc)) from exc
    return names


def _check_members(members: list[tarfile.TarInfo], max_bytes: int | None) -> list[str]:
    names: list[str] = []
    total = 0
    for member in members:
        name = member.name.removeprefix("./").rstrip("/")
        if name in {"", "."}:
            continue
        _check_name(name, member.name)
        if member.issym():
            _check_link(name, member.linkname)
        elif member.islnk():
            _check_name(member.linkname.removeprefix("./"), member.linkname, what="hard link")
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchive(f"{member.name!r} is a device or pipe; only files are accepted")
        total += member.size if member.isfile() else 0
        if max_bytes is not None and total > max_bytes:
            raise UnsafeArchive(f"the archive unpacks to more than {max_bytes} bytes")
        names.append(name)
    return names


def _check_name(name: str, original: str, what: str = "entry") -> None:
    try:
        check_relative_path(name)
    except ValueError:
        raise UnsafeArchive(f"{what} {original!r} would land outside the job's folder") from None


def _check_link(name: str, target: str) -> None:
    if target.startswith("/"):
        raise UnsafeArchive(f"link {name!r} points to the absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchive(f"link {name!r} points outside the job's folder ({target!r})")


def _walk(root: Path) -> Iterator[tuple[str, str]]:
    """(relative name, kind) of everything under `root`, sorted, never following links."""
    if not root.is_dir():
        return
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(current).relative_to(root)
        entries = sorted([*dirnames, *filenames])
        for name in entries:
            relative = (base / name).as_posix()
            mode = (Path(current) / name).lstat().st_mode
            if stat.S_ISLNK(mode):
                kind = "symbolic link"
            elif stat.S_ISDIR(mode):
                kind = "dir"
            elif stat.S_ISREG(mode):
                kind = "file"
            else:
                kind = "special file"
            yield relative, kind


def _tar_info(name: str, status: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(status.st_mode)
    info.mtime = int(status.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(status.st_mode):
        info.size = status.st_size
    else:
        info.type = tarfile.SYMTYPE  # anything else: refused by the caller
    return info


@contextlib.contextmanager
def _open_no_follow(path: Path) -> Iterator[BinaryIO]:
    # A file swapped after the walk is not followed if it became a link (O_NOFOLLOW), nor
    # waited on if it became a pipe (O_NONBLOCK); the caller checks what was opened.
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        yield handle


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

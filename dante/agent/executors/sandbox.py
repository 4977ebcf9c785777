"""Confining a script job with Landlock: what it may read, write and signal.

A script job runs as the agent's own user, so without this it could read whatever the
agent can: the stored login, the `.env` with the provider's password, the journal and the
folders of other jobs. Landlock (Linux 5.13+, no privileges needed) lets the child restrict
itself just before `exec`, for good and for everything it starts:

- read and execute beneath the system folders (`/usr`, `/etc`, `/opt`, ...), the folders of
  its interpreter and the job's PATH, and `/proc`, `/sys`;
- read, write and device ioctls beneath `/dev` (GPUs are driven through ioctls on
  `/dev/nvidia*`, `/dev/kfd`, `/dev/dri`), everything beneath `/dev/shm`;
- everything beneath its own work folder, `/tmp` and `/var/tmp`;
- nothing else: not the provider's home, not the agent's work folder, and never a *hidden*
  path (the agent's credentials, configuration and data), even where one lies beneath a
  folder granted above: such a folder is granted child by child, around the hidden path.

Since Landlock ABI 6 the job also cannot signal processes outside its sandbox (the agent).
`no_new_privs` is set, so set-uid programs (sudo) cannot lift any of this, and a job of an
agent that runs as root loses every capability (the bounding set is emptied before exec).
The agent's own environment (`/proc/<agent>/environ`, which Landlock does not guard) is kept
from its jobs by `protect_agent_process`: an undumpable process's `/proc` files are readable
only with CAP_SYS_PTRACE, which no job has.

Where the kernel has no Landlock, mode "auto" runs scripts unconfined (the agent warns once
at start) and mode "require" refuses to run them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

SandboxMode = Literal["auto", "require", "off"]
SANDBOX_MODES: Final[tuple[SandboxMode, ...]] = ("auto", "require", "off")

# System call numbers: the same on every Linux architecture (the generic table).
_SYS_CREATE_RULESET: Final = 444
_SYS_ADD_RULE: Final = 445
_SYS_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1
_RULE_PATH_BENEATH: Final = 1
_PR_SET_DUMPABLE: Final = 4
_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38

# Filesystem access rights (linux/landlock.h) and the ABI that introduced each.
EXECUTE: Final = 1 << 0
WRITE_FILE: Final = 1 << 1
READ_FILE: Final = 1 << 2
READ_DIR: Final = 1 << 3
_ABI1_ALL: Final = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
REFER: Final = 1 << 13  # ABI 2
TRUNCATE: Final = 1 << 14  # ABI 3
IOCTL_DEV: Final = 1 << 15  # ABI 5
#: Rights that apply to a file (a rule on a file may only name these).
_FILE_RIGHTS: Final = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1  # ABI 6
_SCOPE_SIGNAL: Final = 2  # ABI 6

READ: Final = EXECUTE | READ_FILE | READ_DIR
DEVICES: Final = READ | WRITE_FILE | TRUNCATE | IOCTL_DEV

#: Read-only system folders (those that exist are granted).
SYSTEM_FOLDERS: Final = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/etc", "/nix",
    "/snap", "/proc", "/sys",
)  # fmt: skip
#: Folders a job may write beside its own.
SCRATCH_FOLDERS: Final = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - granted, not used


class SandboxUnavailable(RuntimeError):
    """Mode "require", and this kernel cannot confine a script."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a Linux without a C library
        return None


_LIBC: Final = _libc()


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (or it is disabled)."""
    if _LIBC is None:
        return 0
    version = int(_LIBC.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    return max(version, 0)


def handled_rights(abi: int) -> int:
    """Every filesystem right this ABI knows: what is not granted is denied."""
    rights = _ABI1_ALL
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """How script jobs are confined: the mode, and paths a job must never see."""

    mode: SandboxMode = "auto"
    hidden: tuple[Path, ...] = ()

    def describe(self) -> str:
        """One line for the agent's start-up log."""
        if self.mode == "off":
            return "off: script jobs can read and write whatever the agent's user can"
        abi = landlock_abi()
        if abi == 0:
            return "unavailable: this kernel has no Landlock, script jobs are not confined"
        return f"Landlock ABI {abi}"

    def abi(self) -> int:
        """The Landlock ABI jobs are confined with; 0: not confined (mode "off", or "auto"
        on a kernel without Landlock). Raises `SandboxUnavailable` for "require" there."""
        if self.mode == "off":
            return 0
        abi = landlock_abi()
        if abi == 0 and self.mode == "require":
            raise SandboxUnavailable(
                "--script-sandbox require, but this kernel has no Landlock (Linux 5.13 or "
                "later with landlock among its LSMs): run jobs in Docker, or allow unconfined "
                "scripts with --script-sandbox auto"
            )
        return abi

    def prepare(self, *, work_dir: Path, search_path: str, interpreter: str) -> Confinement | None:
        """The confinement for one job, built in the agent (the child only applies it);
        None where jobs are not confined (see `abi`)."""
        abi = self.abi()
        if abi == 0:
            return None
        return Confinement.build(
            abi,
            own=work_dir,
            grants=job_grants(search_path, interpreter),
            hidden=self.hidden,
        )


def protect_agent_process() -> bool:
    """Make the agent undumpable, so its jobs (same user, no capabilities) cannot read its
    environment, memory or open files through `/proc`. False where this is not Linux."""
    if _LIBC is None:
        return False
    return int(_LIBC.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0


def job_grants(search_path: str, interpreter: str) -> list[tuple[Path, int]]:
    """(folder, rights) a script job gets beside its own folder; masked to the ABI later."""
    everything = -1
    grants: list[tuple[Path, int]] = [(Path(folder), READ) for folder in SYSTEM_FOLDERS]
    grants.extend((folder, READ) for folder in _program_folders(search_path, interpreter))
    grants.append((Path("/dev"), DEVICES))
    grants.extend((Path(folder), everything) for folder in SCRATCH_FOLDERS)
    return grants


def _program_folders(search_path: str, interpreter: str) -> Iterable[Path]:
    """The PATH folders, and the installation each program folder belongs to (a conda
    environment's `bin` needs its `lib`): `<prefix>/bin` grants `<prefix>` when that has a
    `lib` beside it, never a home folder (`~/bin` must not open `~/.ssh`)."""
    folders = [Path(entry) for entry in search_path.split(os.pathsep) if entry]
    folders.append(Path(interpreter).parent)
    folders.append(Path(interpreter).resolve().parent)
    homes = {Path("/"), Path("/root"), Path("/home"), Path.home()}
    for folder in folders:
        if not folder.is_absolute():
            continue
        yield folder
        prefix = folder.parent
        installed = folder.name in ("bin", "sbin") and (prefix / "lib").is_dir()
        if installed and prefix not in homes and prefix.parent != Path("/home"):
            yield prefix


@dataclass(slots=True)
class Confinement:
    """A Landlock ruleset, open in the agent until the job's process has started."""

    abi: int
    ruleset_fd: int
    #: The highest capability number, for emptying the bounding set of a root job.
    last_capability: int

    @classmethod
    def build(
        cls,
        abi: int,
        *,
        own: Path,
        grants: Sequence[tuple[Path, int]],
        hidden: Sequence[Path],
    ) -> Confinement:
        """Everything beneath `own` (the job's folder, even inside a hidden one), each grant
        beneath its folder except beneath the hidden paths."""
        assert _LIBC is not None
        handled = handled_rights(abi)
        attr = _RulesetAttr(
            handled_access_fs=handled,
            handled_access_net=0,
            scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
        )
        # The struct grew with the ABI: older kernels refuse a size they do not know.
        size = ctypes.sizeof(attr) if abi >= 6 else 16 if abi >= 4 else 8
        fd = int(_LIBC.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0))
        if fd < 0:
            raise _os_error("landlock_create_ruleset")
        confinement = cls(abi=abi, ruleset_fd=fd, last_capability=_last_capability())
        try:
            secret = [_resolved(path) for path in hidden]
            for folder, rights in grants:
                confinement._grant_around(folder, rights & handled, secret)
            confinement._add(_resolved(own), handled)
        except BaseException:
            confinement.close()
            raise
        return confinement

    def _grant_around(self, path: Path, rights: int, hidden: Sequence[Path]) -> None:
        """Grant `rights` beneath `path`, except beneath any hidden path."""
        if not os.path.lexists(path):
            return
        real = _resolved(path)
        if any(real == secret or real.is_relative_to(secret) for secret in hidden):
            return
        inside = [secret for secret in hidden if secret.is_relative_to(real)]
        if not inside:
            self._add(real, rights)
            return
        # A hidden path lies beneath: grant the folder's children one by one instead. A
        # link is granted by its target, never followed down (it could lead back up).
        try:
            children = list(os.scandir(real))
        except OSError:
            return
        for child in children:
            if child.is_symlink():
                target = _resolved(Path(child.path))
                if not any(secret.is_relative_to(target) for secret in hidden):
                    self._grant_around(target, rights, hidden)
                continue
            self._grant_around(Path(child.path), rights, hidden)

    def _add(self, path: Path, rights: int) -> None:
        assert _LIBC is not None
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # gone meanwhile, or not ours to open: nothing to grant
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                rights &= _FILE_RIGHTS
            if not rights:
                return
            rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
            done = _LIBC.syscall(
                _SYS_ADD_RULE, self.ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0
            )
            if done != 0:
                raise _os_error(f"landlock_add_rule {path}")
        finally:
            os.close(fd)

    def apply(self) -> None:
        """Restrict the calling process, for good. Runs in the child between fork and exec:
        only system calls, nothing that could take a lock."""
        assert _LIBC is not None
        if os.geteuid() == 0:
            # Root gets its bounding set as capabilities at exec: empty it first.
            for capability in range(self.last_capability + 1):
                if _LIBC.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                    raise _os_error(f"prctl(PR_CAPBSET_DROP, {capability})")
        if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _os_error("prctl(PR_SET_NO_NEW_PRIVS)")
        if _LIBC.syscall(_SYS_RESTRICT_SELF, self.ruleset_fd, 0) != 0:
            raise _os_error("landlock_restrict_self")

    def close(self) -> None:
        if self.ruleset_fd >= 0:
            os.close(self.ruleset_fd)
            self.ruleset_fd = -1


def _last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, the last one since Linux 5.9


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _os_error(what: str) -> OSError:
    code = ctypes.get_errno() or errno.EINVAL
    return OSError(code, f"{what}: {os.strerror(code)}")

"""Results packing and safe input extraction, on real files."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from dante.agent.workspace import (
    UnsafeArchive,
    UnsafeResults,
    extract_inputs,
    pack_results,
    prepare_work_dir,
    safe_path,
)


def _make_results(work: Path) -> None:
    out = prepare_work_dir(work)
    (out / "metrics.json").write_text('{"loss": 0.1}')
    (out / "models").mkdir()
    (out / "models" / "b.bin").write_bytes(b"\x00" * 1000)
    (out / "models" / "a.bin").write_bytes(b"\x01" * 10)


def test_results_are_packed_in_sorted_order_with_size_and_hash(tmp_path: Path) -> None:
    work = tmp_path / "job"
    _make_results(work)

    packed = pack_results(work, tmp_path / "results.tar.gz")

    assert packed.files == 3
    assert packed.skipped == ()
    data = packed.path.read_bytes()
    assert packed.size == len(data)
    assert packed.sha256 == hashlib.sha256(data).hexdigest()
    with tarfile.open(packed.path, "r:gz") as tar:
        assert tar.getnames() == ["metrics.json", "models", "models/a.bin", "models/b.bin"]
        member = tar.getmember("models/b.bin")
        assert member.size == 1000
        assert (member.uid, member.uname) == (0, "")
        extracted = tar.extractfile("metrics.json")
        assert extracted is not None
        assert extracted.read() == b'{"loss": 0.1}'


def test_packing_the_same_results_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    work = tmp_path / "job"
    _make_results(work)

    first = pack_results(work, tmp_path / "one.tar.gz")
    second = pack_results(work, tmp_path / "two.tar.gz")

    assert first.sha256 == second.sha256


def test_links_and_pipes_in_results_are_left_out(tmp_path: Path) -> None:
    work = tmp_path / "job"
    out = prepare_work_dir(work)
    (out / "real.txt").write_text("mine")
    secret = tmp_path / "provider-secret.txt"
    secret.write_text("the provider's key")
    (out / "leak.txt").symlink_to(secret)
    (out / "leakdir").symlink_to(tmp_path)
    os.mkfifo(out / "pipe")

    packed = pack_results(work, tmp_path / "results.tar.gz")

    with tarfile.open(packed.path, "r:gz") as tar:
        assert tar.getnames() == ["real.txt"]
    assert sorted(packed.skipped) == [
        "leak.txt (symbolic link)",
        "leakdir (symbolic link)",
        "pipe (special file)",
    ]
    assert b"provider's key" not in packed.path.read_bytes()


def test_out_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "job"
    work.mkdir()
    (work / "out").symlink_to("/etc")

    with pytest.raises(UnsafeResults, match="out/ is a symbolic link"):
        pack_results(work, tmp_path / "results.tar.gz")


def test_no_out_folder_gives_an_empty_archive(tmp_path: Path) -> None:
    work = tmp_path / "job"
    work.mkdir()

    packed = pack_results(work, tmp_path / "results.tar.gz")

    assert packed.files == 0
    with tarfile.open(packed.path, "r:gz") as tar:
        assert tar.getnames() == []


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_a_plain_archive_is_extracted(tmp_path: Path) -> None:
    directory = tarfile.TarInfo("data")
    directory.type = tarfile.DIRTYPE
    archive = _archive(
        tmp_path / "in.tar.gz",
        (directory, None),
        (_file("data/train.csv"), b"a,b\n1,2\n"),
        (_file("./config.yaml"), b"lr: 0.1\n"),
        (_link("data/latest.csv", "train.csv"), None),
    )
    dest = tmp_path / "job"

    names = extract_inputs(archive, dest)

    assert names == ["data", "data/train.csv", "config.yaml", "data/latest.csv"]
    assert (dest / "data" / "train.csv").read_text() == "a,b\n1,2\n"
    assert (dest / "config.yaml").read_text() == "lr: 0.1\n"
    assert (dest / "data" / "latest.csv").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file("../escape.txt"), "would land outside the job's folder"),
        (_file("data/../../escape.txt"), "would land outside the job's folder"),
        (_file("/etc/cron.d/evil"), "would land outside the job's folder"),
        (_link("passwd", "/etc/passwd"), "points to the absolute path"),
        (_link("up", "../../home"), "points outside the job's folder"),
        (_link("data/up", "../.."), "points outside the job's folder"),
        (_link("hard", "../../etc/shadow", tarfile.LNKTYPE), "hard link"),
    ],
)
def test_unsafe_archives_are_refused_whole(
    tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    data = b"x" if member.isfile() else None
    archive = _archive(tmp_path / "in.tar.gz", (_file("fine.txt"), b"ok"), (member, data))
    dest = tmp_path / "job"

    with pytest.raises(UnsafeArchive, match=message):
        extract_inputs(archive, dest)
    # Nothing at all was extracted, not even the harmless first file.
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_devices_are_refused(tmp_path: Path) -> None:
    device = tarfile.TarInfo("disk")
    device.type = tarfile.BLKTYPE
    archive = _archive(tmp_path / "in.tar", (device, None))

    with pytest.raises(UnsafeArchive, match="device or pipe"):
        extract_inputs(archive, tmp_path / "job")


def test_size_limit(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "in.tar.gz", (_file("big.bin"), b"\x00" * 5000))

    with pytest.raises(UnsafeArchive, match="more than 4096 bytes"):
        extract_inputs(archive, tmp_path / "job", max_bytes=4096)


def test_something_that_is_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "in.tar.gz"
    junk.write_bytes(b"not an archive at all")

    with pytest.raises(UnsafeArchive, match="not a readable tar archive"):
        extract_inputs(junk, tmp_path / "job")


def test_safe_path_places_inputs_inside_the_folder(tmp_path: Path) -> None:
    target = safe_path(tmp_path, "data/sub/file.bin")

    assert target == tmp_path / "data" / "sub" / "file.bin"
    assert (tmp_path / "data" / "sub").is_dir()


@pytest.mark.parametrize("relative", ["../x", "/etc/passwd", "a/../../x", "a//b", "C:/x"])
def test_safe_path_refuses_escapes(tmp_path: Path, relative: str) -> None:
    with pytest.raises(UnsafeArchive):
        safe_path(tmp_path, relative)


def test_safe_path_refuses_to_go_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "job"
    work.mkdir()
    (work / "data").symlink_to(outside)

    with pytest.raises(UnsafeArchive, match="goes through a symbolic link"):
        safe_path(work, "data/file.bin")


def test_the_stop_reason_replaces_a_link_or_pipe_the_job_left_and_follows_neither(
    tmp_path: Path,
) -> None:
    from dante.agent.workspace import STOP_REASON, write_stop_reason

    providers_file = tmp_path / "providers-file"
    providers_file.write_text("keep me\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / STOP_REASON).symlink_to(providers_file)

    assert write_stop_reason(work, "cancelled", "cancelled by the renter")
    assert providers_file.read_text() == "keep me\n"
    assert not (work / STOP_REASON).is_symlink()
    assert (work / STOP_REASON).read_text() == "cancelled: cancelled by the renter\n"

    (work / STOP_REASON).unlink()
    os.mkfifo(work / STOP_REASON)  # a writer opening it would wait for a reader forever
    assert write_stop_reason(work, "shutdown")
    assert (work / STOP_REASON).read_text() == "shutdown\n"

    (work / STOP_REASON).unlink()
    (work / STOP_REASON).mkdir()
    assert not write_stop_reason(work, "max_duration", "too long")
    assert [p.name for p in work.iterdir()] == [STOP_REASON]  # no temporary file left

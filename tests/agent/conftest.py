"""Docker for the agent's tests: a client to the real engine and a tiny image built from busybox.

Tests marked `docker` are skipped when no engine answers, unless DANTE_REQUIRE_DOCKER=1 (CI),
which turns that into a failure. No registry is needed: the test image is imported from a root
filesystem holding Debian's static busybox.
"""

from __future__ import annotations

import gc
import io
import os
import shutil
import subprocess
import tarfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException, ImageNotFound

TEST_IMAGE = "dante-test/busybox:1"
REQUIRE_DOCKER = os.environ.get("DANTE_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client: docker.DockerClient | None = None
    reason = ""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except DockerException as exc:
        reason = f"no Docker engine answers ({exc})"
        client = None
    if client is None:
        # The failed attempt leaves a socket behind inside the SDK; release it now, quietly,
        # rather than as a ResourceWarning (an error in this suite) at a later collection.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        if REQUIRE_DOCKER:
            pytest.fail(f"DANTE_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(f"{reason}; start dockerd, or set DANTE_REQUIRE_DOCKER=1 to fail instead")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _docker_marker_needs_an_engine(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_client")


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """`dante-test/busybox:1`, imported from a busybox root filesystem if the engine lacks it."""
    try:
        docker_client.images.get(TEST_IMAGE)
    except ImageNotFound:
        repository, tag = TEST_IMAGE.split(":")
        docker_client.api.import_image_from_data(_rootfs_tar(), repository=repository, tag=tag)
        docker_client.images.get(TEST_IMAGE)
    return TEST_IMAGE


@pytest.fixture(scope="session")
def agent_id() -> str:
    """A label value unique to this test session: other sessions share the engine."""
    return f"test-{uuid.uuid4().hex[:12]}"


def _rootfs_tar() -> bytes:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        found = shutil.which("busybox")
        if found is None:
            pytest.fail("the Docker tests need a static busybox (Debian: busybox-static)")
        busybox = Path(found)
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("proc", 0o755),
                             ("sys", 0o755), ("dev", 0o755)):  # fmt: skip
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buffer.getvalue()

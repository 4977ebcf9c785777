"""A program on a pseudo-terminal, driven like a person at a keyboard."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self._master = master
        self._pending = ""
        #: Everything the program wrote, for failure messages.
        self.transcript = ""

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read until `text` appears; what was read up to and including it."""
        deadline = time.monotonic() + timeout
        while text not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._master], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.transcript}")
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: the program closed the terminal
                data = b""
            if not data:
                raise AssertionError(f"the program ended before {text!r}:\n{self.transcript}")
            chunk = data.decode(errors="replace").replace("\r\n", "\n")
            self._pending += chunk
            self.transcript += chunk
        end = self._pending.index(text) + len(text)
        seen, self._pending = self._pending[:end], self._pending[end:]
        return seen

    def send(self, line: str) -> None:
        os.write(self._master, (line + "\n").encode())

    def wait(self, timeout: float = 30) -> int:
        try:
            while True:  # drain, or the program may block writing to a full terminal
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if ready:
                    try:
                        if not os.read(self._master, 4096):
                            break
                    except OSError:
                        break
                elif self.process.poll() is not None:
                    break
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1

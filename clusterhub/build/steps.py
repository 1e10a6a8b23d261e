"""Build steps: numbered progress lines, each step's output in the build log, and a failure
that names the step and shows its output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..accounts import Account

OUTPUT_TAIL_LINES = 60


class BuildError(RuntimeError):
    """A build step failed; ``step`` names it and ``output`` is what it said."""

    def __init__(self, step: str, message: str, output: str = ""):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.output = output


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Progress:
    """Prints ``[i/n] step ...`` lines as a build goes, and keeps a full log in a file."""

    def __init__(self, steps: Sequence[str], log_path: str, out: TextIO | None = None):
        self.steps = list(steps)
        self.out = out or sys.stdout
        self.log_path = log_path
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self._log = open(log_path, "a")
        self.current = ""

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)
        self.log(message)

    def log(self, text: str) -> None:
        self._log.write(text if text.endswith("\n") else text + "\n")
        self._log.flush()

    def close(self) -> None:
        self._log.close()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        number = self.steps.index(name) + 1
        self.current = name
        self.say(f"[{number}/{len(self.steps)}] {name} ...")
        started = time.monotonic()
        yield
        self.say(f"[{number}/{len(self.steps)}] {name}: done in {time.monotonic() - started:.1f} s")

    def skip(self, name: str, why: str) -> None:
        number = self.steps.index(name) + 1
        self.say(f"[{number}/{len(self.steps)}] {name}: skipped ({why})")

    def run(
        self,
        command: Sequence[str],
        *,
        what: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        account: Account | None = None,
    ) -> str:
        """Run one command of the current step (as ``account`` if given); its output goes
        to the log, and a non-zero exit raises :class:`BuildError` naming the step with the
        output's tail."""
        self.log(f"$ {' '.join(command)}")
        try:
            result = subprocess.run(
                list(command),
                cwd=cwd,
                env=env,
                **(account.popen_kwargs() if account else {}),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except FileNotFoundError as exc:
            raise BuildError(self.current, f"{what}: {exc.filename} is not installed") from None
        except subprocess.TimeoutExpired as exc:
            output = exc.output or ""
            if isinstance(output, bytes):
                output = output.decode(errors="replace")
            self.log(output)
            raise BuildError(self.current, f"{what} took over {timeout:.0f} s", output) from None
        self.log(result.stdout)
        if result.returncode != 0:
            raise BuildError(
                self.current, f"{what} failed (exit code {result.returncode})", result.stdout
            )
        return result.stdout

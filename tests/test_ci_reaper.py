""".ci/reap.py, the CI's subreaper: orphans that exit are waited for at once, as init does
(a zombie's pid looks alive to whoever checks it), and the command's own status is kept."""

from __future__ import annotations

import os
import subprocess
import sys

REAPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".ci", "reap.py")

COMMAND = """
import os, subprocess, sys, time
# An orphan: its shell exits at once, the sleep goes on for a moment, then exits.
pid = int(subprocess.run(["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True).stdout)
time.sleep(2.5)
try:
    with open(f"/proc/{pid}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
except FileNotFoundError:
    state = "gone"
print(state)
sys.exit(3)
"""


def test_exited_orphans_are_reaped_while_the_command_runs_and_its_status_is_kept(tmp_path):
    result = subprocess.run(
        [sys.executable, REAPER, sys.executable, "-c", COMMAND],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "gone", (result.stdout, result.stderr)
    assert result.returncode == 3, result.stderr
    # No process of this command is left. (Files, accounts and control groups the reaper
    # reports may be another test's, running beside this one in the other worker.)
    reported = [line.split() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert not [line for line in reported if line[0].isdigit()], result.stderr

"""Stopping a run that another process executes (`trialrun stop`): a detached run, or one
in another shell or a shard's job on this machine.

The run's own SIGTERM handling stops it cleanly (in-flight trials go back to pending,
results.jsonl is rewritten, the final sync is made) and leaves it resumable; this module
only finds the process, checks that it holds the run, signals it and waits for it to let
the run go.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from trialrun.errors import RunIncomplete, StoreError
from trialrun.runs import Run, locked_by_other, open_run, owner_pid
from trialrun.store import DB_NAME


def stop_run(
    ref: str | Path | Run | None = None, runs_dir: str | Path = "runs", *, timeout_s: float = 30.0
) -> int | None:
    """SIGTERM to the process executing the run, then wait until it has let the run go.
    Returns its pid, or None when no process runs the run."""
    target = ref if isinstance(ref, Run) else open_run(ref, runs_dir)
    if not locked_by_other(target.path):
        return None
    pid = owner_pid(target.path)
    if pid is None or pid == os.getpid() or not holds_run(pid, target.path):
        raise StoreError(
            f"{target.path}: a process holds this run but run.lock does not name it "
            f"(pid {pid}); find it with `fuser {target.path / DB_NAME}`"
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while locked_by_other(target.path):
        if time.monotonic() > deadline:
            raise RunIncomplete(
                f"{target.path}: process {pid} was asked to stop but still holds the run after "
                f"{timeout_s:g} s (finishing its in-flight calls?); check again with `trialrun "
                f"status`; kill -9 {pid} also leaves the run resumable"
            )
        time.sleep(0.05)
    return pid


def holds_run(pid: int, folder: Path) -> bool:
    """Whether process `pid` has the run's database open (read from /proc where there is
    one; where there is none, or it may not be read, run.lock's word is taken)."""
    fds = Path(f"/proc/{pid}/fd")
    if not Path("/proc/self/fd").is_dir():
        return True
    database = str((folder / DB_NAME).resolve())
    try:
        entries = list(fds.iterdir())
    except FileNotFoundError:
        return False  # no such process
    except PermissionError:
        return True
    for entry in entries:
        try:
            if os.readlink(entry) == database:
                return True
        except OSError:
            continue
    return False

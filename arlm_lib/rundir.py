"""Run directories: refuse to clobber someone else's files, and allow one writer at a time."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from .checkpoint import CHECKPOINT_FILE
from .errors import CheckpointError

LOCK_FILE = "train.lock"


def prepare_run_dir(out: str | os.PathLike, resume: bool) -> Path:
    """Create or validate ``out`` for a training run.

    A new run needs a missing or empty directory; ``resume`` needs one holding a checkpoint. Anything
    else (a directory of unrelated files, or a finished run without ``--resume``) is refused, so a typo
    in ``--out`` can never overwrite another run.
    """
    out = Path(out)
    has_checkpoint = (out / CHECKPOINT_FILE).is_file()
    if resume:
        if not has_checkpoint:
            raise CheckpointError(f"--resume was given but {out} holds no {CHECKPOINT_FILE} to resume from")
        return out
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file, not a directory")
    if has_checkpoint:
        raise CheckpointError(
            f"--out {out} already holds a checkpoint: pass --resume to continue it, or choose another --out"
        )
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise CheckpointError(f"--out {out} is a non-empty directory that is not an arlm run: refusing to clobber it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock file in the run directory, naming the process that holds it.

    A lock left behind by a process that died (SIGKILL, power loss) is detected by its pid and taken
    over, so a crash never blocks the directory forever.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    owner = {}
                same_host = owner.get("host") == me["host"]
                if same_host and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"]):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise CheckpointError(
                    f"{self.path.parent} is in use by another training run (pid {owner.get('pid')} on "
                    f"{owner.get('host')}); wait for it to finish, or delete {self.path} if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise CheckpointError(f"could not acquire {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

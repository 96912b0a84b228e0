"""Run directories: refuse to clobber someone else's files, and allow one writer at a time."""

from __future__ import annotations

import errno
import json
import os
import socket
import warnings
from pathlib import Path

from .checkpoint import CHECKPOINT_FILE, pid_alive, remove_stale_temp_files
from .errors import CheckpointError, NotWritableError

try:  # POSIX: an advisory lock the kernel drops when its process dies, however it dies
    import fcntl
except ImportError:  # pragma: no cover - Windows falls back to the pid recorded in the lock file
    fcntl = None

LOCK_FILE = "train.lock"
# What a read-only filesystem or a directory without write permission says: "cannot write here".
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _is_run_debris(path: Path) -> bool:
    """Files a crashed arlm run may leave behind: its lock, and a checkpoint temp file cut off mid-write."""
    return path.name == LOCK_FILE or path.name.startswith(f".{CHECKPOINT_FILE}.tmp-")


def prepare_run_dir(
    out: str | os.PathLike,
    resume: bool,
    name: str = "--out",
    how_to_resume: str = "pass --resume to continue it",
    create: bool = True,
) -> Path:
    """Create or validate ``out`` for a training run.

    A new run needs a missing or empty directory; ``resume`` needs one holding a checkpoint. Anything
    else (a file, a directory of unrelated files, or a finished run without ``--resume``) is refused, so
    a typo in ``--out`` can never overwrite another run. A run that crashed before its first checkpoint
    leaves only a lock and maybe a temp file; such a directory counts as empty. ``name`` and
    ``how_to_resume`` word the errors for the caller: the command line, or ``Trainer(out_dir=...)``.
    ``create=False`` only checks, so that a caller with more checks to make leaves nothing behind.
    """
    if not os.fspath(out).strip():
        raise CheckpointError(f"{name} is empty: give the directory the run should be written to")
    out = Path(out)
    has_checkpoint = (out / CHECKPOINT_FILE).is_file()
    if resume:
        if out.is_file():  # most often the checkpoint file itself, where its directory is meant
            raise CheckpointError(
                f"{name} {out} is a file: {name} takes the run directory that holds {CHECKPOINT_FILE}"
                + (f" ({out.parent})" if out.name == CHECKPOINT_FILE else "")
            )
        if not has_checkpoint:
            raise CheckpointError(f"--resume was given but {out} holds no {CHECKPOINT_FILE} to resume from")
        return out
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{name} {out} is a file, not a directory")
    if has_checkpoint:
        raise CheckpointError(
            f"{name} {out} already holds a checkpoint: {how_to_resume}, or choose another {name}"
        )
    if out.exists() and any(not _is_run_debris(p) for p in out.iterdir()):
        raise CheckpointError(
            f"{name} {out} is a non-empty directory that is not an arlm run: refusing to clobber it"
        )
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in _NOT_WRITABLE:
                raise  # a path through a file, say: the OS's own message names it
            raise NotWritableError(
                f"{name} {out} cannot be created: {exc.strerror} ({exc.filename}); choose a writable {name}"
            ) from None
        remove_stale_temp_files(out / CHECKPOINT_FILE)
    return out


class RunLock:
    """An exclusive lock on ``<run_dir>/train.lock``; the file names the process that holds it.

    On POSIX the lock is an ``flock`` on the file, which the kernel releases when the holder dies
    (SIGKILL, OOM killer, power loss), so a crash never blocks the directory and a recycled pid can
    never fake a live owner. Elsewhere, a lock whose recorded pid is dead (same host) is taken over.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False
        self._fd: int | None = None

    def _owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _refuse(self) -> CheckpointError:
        owner = self._owner()
        return CheckpointError(
            f"{self.path.parent} is in use by another training run (pid {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')}): only one run may write to a run directory; wait for it to finish or "
            "choose another --out"
        )

    def _open(self, flags: int) -> int:
        """Open the lock file. A directory that cannot be written fails here, before any checkpoint
        write could: a NotWritableError that says so (exit 2, as for a checkpoint that cannot be written),
        not a bare OSError about a lock file the user never named."""
        try:
            return os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in _NOT_WRITABLE:
                raise
            raise NotWritableError(
                f"the run directory {self.path.parent} is not writable ({exc.strerror}: cannot create its "
                f"lock file {LOCK_FILE}); nothing was written, and a checkpoint in it is kept as it is; "
                "make it writable, or choose another --out"
            ) from None

    def acquire(self) -> RunLock:
        """Take the lock, or raise CheckpointError naming the process that holds it."""
        if self.held:
            return self
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        if fcntl is None:  # pragma: no cover
            return self._acquire_by_pid(me)
        for _ in range(10):
            fd = self._open(os.O_CREAT | os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refuse() from None
            # The previous holder may have unlinked the file between our open and our flock: then we
            # locked an orphaned inode, and must retry on the file that is at the path now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, me.encode())
            except OSError as exc:  # a full disk or quota: the lock file cannot even hold a pid
                self.path.unlink(missing_ok=True)  # still ours (locked): nothing is left behind
                os.close(fd)
                raise NotWritableError(
                    f"the run directory {self.path.parent} cannot be written ({exc.strerror}: could not "
                    f"write its lock file {LOCK_FILE}); nothing was written, and a checkpoint in it is kept "
                    "as it is; free some space, or choose another --out"
                ) from None
            self._fd, self.held = fd, True
            return self
        raise CheckpointError(f"could not acquire {self.path}: it keeps being replaced by another process")

    def _acquire_by_pid(self, me: str) -> RunLock:  # pragma: no cover - used where fcntl is missing
        for _ in range(2):
            try:
                fd = self._open(os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                same_host = owner.get("host") == socket.gethostname()
                if same_host and isinstance(owner.get("pid"), int) and not pid_alive(owner["pid"]):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise self._refuse() from None
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            self.held = True
            return self
        raise CheckpointError(f"could not acquire {self.path}")

    def release(self) -> None:
        """Remove the lock file and drop the lock (unlink first, so no one locks a file about to vanish)."""
        if not self.held:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            # The directory may have turned read-only mid-run. Raising here would replace the error that
            # ended the run (often the reason itself, a failed checkpoint write) with this lesser one; the
            # file left behind is harmless, since the flock goes with the descriptor closed below.
            warnings.warn(
                f"could not remove the lock file {self.path} ({exc.strerror or exc}); it is unlocked, so it "
                "does not block the next run",
                stacklevel=2,
            )
        finally:
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor drops the flock
                self._fd = None
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

"""Writing files so that a reader never sees half of one, with the permissions the user's umask asks for.

Every file arlm_lib writes (checkpoints, tokenizers, token arrays, cached corpora) goes to a temporary
file in the same directory and is then renamed over the destination, which is atomic on POSIX and
Windows. ``tempfile.mkstemp`` and safetensors create their files readable by the owner only (0600); a
rename keeps that mode, which would make a shared run or data directory unreadable to the rest of a
group. :func:`publish` gives the file the mode a plain ``open(path, "w")`` would have, then renames it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _read_umask() -> int | None:
    """The process's umask from ``/proc/self/status`` (Linux 4.7+), without changing it; else None."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process's umask."""
    umask = _read_umask()
    if umask is None:
        # Elsewhere the only portable way to read the umask is to set it and put it back at once. Between
        # the two calls the umask is 0 for the whole process, so a file another thread creates then is
        # world-writable: that is why Linux reads /proc above instead.
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give the finished temporary file ``tmp`` the default mode, then rename it over ``path`` atomically."""
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

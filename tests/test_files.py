"""Files arlm_lib writes get the permissions the user's umask asks for (temporary files start as 0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from arlm_lib.checkpoint import save_checkpoint
from arlm_lib.data import encode_file_to_memmap
from arlm_lib.files import atomic_write_bytes
from arlm_lib.model import GPT, GPTConfig
from arlm_lib.tokenizers import CharTokenizer


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_written_file_follows_the_umask(tmp_path: Path, umask: int):
    expected = 0o666 & ~umask
    text = tmp_path / "text.txt"
    atomic_write_bytes(text, b"abcabc\n")
    tokenizer = CharTokenizer.train("abc\n")
    tokenizer.save(tmp_path / "tokenizer.json")
    encode_file_to_memmap(text, tokenizer, tmp_path / "tokens.npy")
    model = GPT(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=8))
    checkpoint = save_checkpoint(tmp_path / "run", model, tokenizer=tokenizer)
    for path in (text, tmp_path / "tokenizer.json", tmp_path / "tokens.npy", checkpoint):
        assert mode(path) == expected, f"{path.name}: {oct(mode(path))}, umask {oct(umask)}"
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the umask from Linux's /proc")
def test_reading_the_umask_never_changes_it(umask: int, monkeypatch):
    from arlm_lib.files import default_file_mode

    # os.umask(0) even for an instant makes any file another thread creates meanwhile world-writable.
    def umask_must_not_change(value: int) -> int:
        raise AssertionError(f"os.umask({oct(value)}) was called")

    monkeypatch.setattr(os, "umask", umask_must_not_change)
    assert default_file_mode() == 0o666 & ~umask


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from arlm_lib import files

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(tmp_path / "out.txt", b"data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_do_not_depend_on_the_system_temp_directory(tmp_path, monkeypatch):
    """The temporary file sits next to the destination: a full or missing /tmp (or one on another
    filesystem, where a rename is not atomic) does not matter."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))
    atomic_write_bytes(tmp_path / "data" / "out.txt", b"data")
    assert (tmp_path / "data" / "out.txt").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["out.txt"]

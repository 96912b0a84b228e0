"""Reading text files and downloading public corpora into a local cache, with checksums.

Library code never downloads on its own: only an explicit ``load_text(url)`` call touches the network.

Example, Tiny Shakespeare (public domain; about 1.1 MB; not shipped with the project)::

    from arlm_lib.corpus import load_text, TINY_SHAKESPEARE_URL, TINY_SHAKESPEARE_SHA256
    text = load_text(TINY_SHAKESPEARE_URL, sha256=TINY_SHAKESPEARE_SHA256)

Offline, fetch the file by hand (``curl -L -o input.txt URL``) and pass its path instead.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shlex
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from arlm_lib.errors import DataError
from arlm_lib.files import atomic_write_bytes

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = (
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # 1,115,394 bytes
)

DOWNLOAD_TIMEOUT_S = 30.0


def resolve_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``override``, else ``$ARLM_CACHE_DIR``, else ``~/.cache/arlm`` (not created here)."""
    if override is not None:
        return Path(override)
    env = os.environ.get("ARLM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "arlm"


def decode_utf8(data: bytes, source: str) -> str:
    """Decode UTF-8 (a leading BOM is dropped); DataError naming ``source`` and the byte offset otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{source} is not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start} ({e.reason}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    return text.removeprefix("\ufeff")


def read_text_file(path: str | os.PathLike, sha256: str | None = None) -> str:
    """Read a local UTF-8 text file; DataError if it is missing, empty, not UTF-8 or fails its checksum."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such file: {str(p)!r}")
    data = p.read_bytes()
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise DataError(f"checksum mismatch for {str(p)!r}: expected sha256 {sha256}, got {actual}")
    text = decode_utf8(data, repr(str(p)))
    if not text:
        raise DataError(f"{str(p)!r} is empty; a corpus needs at least one character")
    return text


def is_url(s: str) -> bool:
    """True for http(s) and file URLs."""
    return urllib.parse.urlparse(s).scheme in ("http", "https", "file")


def file_url_path(url: str) -> Path:
    """The local path of a ``file:`` URL (``%20`` read as a space); DataError for another host's file."""
    parts = urllib.parse.urlparse(url)
    if parts.netloc not in ("", "localhost"):
        raise DataError(
            f"{url} names a file on host {parts.netloc!r}, which cannot be read from here: give a local "
            "file:///path URL or the plain path"
        )
    return Path(urllib.request.url2pathname(parts.path))


def cached_path(url: str, cache: Path) -> Path:
    """Where a download of ``url`` lives in the cache: a hash of the URL plus its file name."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    return cache / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def load_text(
    path_or_url: str | os.PathLike,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> str:
    """Text of a local file or of a URL (downloaded once into the cache dir, checked against ``sha256``).

    A ``file:`` URL is read directly, as its path would be, and never cached.

    A checksum mismatch removes the downloaded file and raises DataError with both hashes. When the
    download fails (offline), the DataError says how to fetch the file by hand and where to put it.
    """
    source = os.fspath(path_or_url)
    if not is_url(source):
        return read_text_file(source, sha256)
    if urllib.parse.urlparse(source).scheme == "file":
        # A local file is read where it is, like a plain path: a cached copy would go stale silently
        # when the file is rewritten, and copying it saves nothing.
        try:
            return read_text_file(file_url_path(source), sha256)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None  # the URL as typed, then the path it names
    dest = cached_path(source, resolve_cache_dir(cache_dir))
    if dest.is_file():
        data = dest.read_bytes()
        if sha256 is None or hashlib.sha256(data).hexdigest() == sha256.lower():
            return _check_text(data, source)
        dest.unlink()  # a stale or corrupted copy: fetch it again
    data = _download(source, dest, timeout)
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256.lower():
        raise DataError(
            f"checksum mismatch for {source}: expected sha256 {sha256.lower()}, got {actual}; "
            "the downloaded file was removed"
        )
    text = _check_text(data, source)
    atomic_write_bytes(dest, data)
    return text


def _check_text(data: bytes, source: str) -> str:
    text = decode_utf8(data, source)
    if not text:
        raise DataError(f"{source} is empty; a corpus needs at least one character")
    return text


def _download(url: str, dest: Path, timeout: float) -> bytes:
    """Fetch ``url`` into memory; on failure a DataError with instructions for a manual download.

    A download cut short is a failure, never a corpus: a chunked body that ends early raises
    ``http.client.IncompleteRead``, and a body shorter than its ``Content-Length`` is refused here (so
    neither is cached). A server that sends neither can only be checked by passing ``sha256``.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
            expected = response.headers.get("Content-Length")
            if expected is not None and expected.strip().isdigit() and int(expected) != len(data):
                raise http.client.IncompleteRead(data, int(expected) - len(data))
            return data
    except (
        TimeoutError, urllib.error.URLError, ConnectionError, OSError, ValueError, http.client.HTTPException
    ) as e:  # fmt: skip
        if isinstance(e, http.client.IncompleteRead):
            more = f", {e.expected:,} more expected" if isinstance(e.expected, int) else ""
            e = f"the download was cut short: {len(e.partial):,} bytes received{more}"
        reason = getattr(e, "reason", e)
        raise DataError(
            f"could not download {url} ({reason}). If this machine is offline, download the file by hand "
            f"(e.g. `curl -L -o {shlex.quote(dest.name)} {shlex.quote(url)}`) and either put it at {dest} or "
            "pass its local path instead of the URL (load_text(path) / --data PATH)"
        ) from None

"""Built-in corpora, the cache, local files and downloads (served from 127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import shlex
import socket
from pathlib import Path

import pytest
from offline_web import serve_directory

from arlm_lib.corpus import (
    corpus_names,
    format_corpus_info,
    format_corpus_list,
    list_corpora,
    load_corpus,
    load_text,
    prose_text,
    registry,
)
from arlm_lib.corpus.loading import cached_path
from arlm_lib.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty cache directory through $ARLM_CACHE_DIR."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ARLM_CACHE_DIR", str(path))
    return path


@pytest.fixture
def server(tmp_path):
    """A static file server on 127.0.0.1 in a thread; yields (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_directory(root) as url:
        yield root, url


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- built-in corpora ------------------------------------------------------------------------------
def test_list_names_sizes_and_descriptions():
    infos = list_corpora()
    assert [c.name for c in infos][:1] == ["synthetic"]
    assert {"synthetic", "synthetic-copy", "synthetic-agreement", "prose"} <= set(corpus_names())
    table = format_corpus_list()
    for c in infos:
        assert c.name in table and c.description[:30] in table
        assert c.approx_chars > 0


def test_synthetic_corpus_is_deterministic_cached_and_prefix_consistent(cache, monkeypatch):
    text = load_corpus("synthetic-agreement")
    assert 0.95e6 < len(text) <= 1e6 and text.endswith("\n")
    files = list((cache / "corpora").glob("synthetic-agreement-*.txt"))
    assert len(files) == 1 and files[0].read_text(encoding="utf-8") == text
    assert not list((cache / "corpora").glob(".*.tmp"))  # the atomic write left no temporary file
    # A second load reads the cache: generating again would fail here.
    monkeypatch.setattr(registry.SyntheticLanguage, "text", _must_not_generate)
    assert load_corpus("synthetic-agreement") == text
    small = load_corpus("synthetic-agreement", size=5_000)
    assert text.startswith(small) and len(small) <= 5_000 and small.endswith("\n")


def _must_not_generate(*args, **kwargs):
    raise AssertionError("the corpus should have come from the cache")


def test_corrupted_cache_entry_is_regenerated(cache):
    text = load_corpus("synthetic-copy")
    (path,) = (cache / "corpora").glob("synthetic-copy-*.txt")
    path.write_bytes(b"\xff\xfe broken")
    assert load_corpus("synthetic-copy") == text


def test_variants_contain_only_their_construction():
    copy = load_corpus("synthetic-copy", size=20_000).splitlines()
    agreement = load_corpus("synthetic-agreement", size=20_000).splitlines()
    assert all(' repeats "' in line for line in copy)
    assert not any('"' in line or "(" in line or "[" in line for line in agreement)
    assert sum(" that " in line for line in agreement) > 0.5 * len(agreement)


def test_prose_corpus_is_plain_english_paragraphs():
    text = load_corpus("prose")
    assert text == prose_text()
    assert len(text) > 20_000 and text.isascii()
    lines = text.splitlines()
    assert len(lines) == text.count("\n") and all(len(line) > 200 for line in lines)
    assert "attention" in text and "token" in text
    assert load_corpus("prose", size=3_000) == "".join(line + "\n" for line in lines[: _fit(lines, 3_000)])


def _fit(lines: list[str], size: int) -> int:
    total, n = 0, 0
    for line in lines:
        if total + len(line) + 1 > size:
            break
        total += len(line) + 1
        n += 1
    return n


def test_info_reports_entropy_in_bits_per_char_and_per_token():
    report = format_corpus_info("synthetic-agreement", n_sentences=2_000)
    assert "synthetic-agreement" in report and "bits/char" in report and "95% CI" in report
    char_line = next(line for line in report.splitlines() if line.startswith("char tokens"))
    bpe_line = next(line for line in report.splitlines() if line.startswith("bpe tokens"))
    assert "bits/token" in char_line and "bits/token" in bpe_line
    rate = float(report.split("entropy:")[1].split()[0])
    assert float(char_line.split()[2]) == pytest.approx(rate, abs=1e-4)  # a char is one token
    assert float(bpe_line.split()[2]) > 1.5 * rate  # a BPE token carries several characters' bits
    assert "unknown" in format_corpus_info("prose")


def test_unknown_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        load_corpus("shakespeare")
    for name in corpus_names():
        assert name in str(err.value)
    with pytest.raises(DataError, match="synthetic-copy"):
        format_corpus_info("nope")


@pytest.mark.parametrize("size", [0, -5, 2.5, True])
def test_size_must_be_positive(size):
    with pytest.raises(ConfigError, match="size"):
        load_corpus("prose", size=size)


# --- local files ---------------------------------------------------------------------------------------
def test_local_files_load_and_truncate(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first line\nsecond line\n", encoding="utf-8")
    assert load_corpus(str(path)) == "first line\nsecond line\n"
    assert load_corpus(path, size=15) == "first line\n"
    assert load_text(path) == "first line\nsecond line\n"


def test_non_utf8_file_names_the_file_and_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf" + "\u00e9 au lait".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_corpus(str(path))
    assert "latin1.txt" in str(err.value) and "byte offset 3" in str(err.value)
    with pytest.raises(DataError, match="byte offset 3"):
        load_text(path)


def test_empty_and_missing_files_are_rejected(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_corpus(str(empty))
    with pytest.raises(DataError, match="no such file"):
        load_text(tmp_path / "missing.txt")


# --- downloads ----------------------------------------------------------------------------------------
def test_download_checks_the_checksum_and_caches(server, cache):
    root, base = server
    body = "to be, or not to be\n" * 50
    (root / "input.txt").write_text(body, encoding="utf-8")
    digest = hashlib.sha256(body.encode()).hexdigest()
    url = f"{base}/input.txt"
    assert load_text(url, sha256=digest) == body
    assert cached_path(url, cache).read_text(encoding="utf-8") == body
    (root / "input.txt").unlink()  # now only the cache can answer
    assert load_text(url, sha256=digest) == body
    assert load_corpus(url) == body


def test_checksum_mismatch_removes_the_download(server, cache):
    root, base = server
    (root / "input.txt").write_text("tampered text\n", encoding="utf-8")
    url = f"{base}/input.txt"
    wanted = "0" * 64
    actual = hashlib.sha256(b"tampered text\n").hexdigest()
    with pytest.raises(DataError) as err:
        load_text(url, sha256=wanted)
    assert wanted in str(err.value) and actual in str(err.value)
    assert not cached_path(url, cache).exists()
    downloads = cache / "downloads"
    assert not downloads.exists() or not any(downloads.iterdir())


def test_bad_cached_copy_is_fetched_again(server, cache):
    root, base = server
    (root / "input.txt").write_text("good text\n", encoding="utf-8")
    url = f"{base}/input.txt"
    cached = cached_path(url, cache)
    cached.parent.mkdir(parents=True)
    cached.write_text("stale text\n", encoding="utf-8")
    assert load_text(url, sha256=hashlib.sha256(b"good text\n").hexdigest()) == "good text\n"
    assert cached.read_text(encoding="utf-8") == "good text\n"


def test_offline_download_says_how_to_supply_the_file(cache):
    url = f"http://127.0.0.1:{_closed_port()}/data/input.txt?a=1&b=2"  # & would end a shell command
    with pytest.raises(DataError) as err:
        load_text(url, timeout=5)
    message = str(err.value)
    assert url in message and "by hand" in message
    curl = message.split("`")[1]
    words = list(shlex.shlex(curl, posix=True, punctuation_chars=True))  # as a shell splits it, at &
    assert words == ["curl", "-L", "-o", cached_path(url, cache).name, url]
    assert str(cached_path(url, cache)) in message  # where to put the file


def test_downloaded_non_utf8_is_rejected_and_not_cached(server, cache):
    root, base = server
    (root / "latin1.txt").write_bytes("na\u00efve".encode("latin-1"))
    url = f"{base}/latin1.txt"
    with pytest.raises(DataError, match="byte offset 2"):
        load_text(url)
    assert not cached_path(url, cache).exists()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_download_cut_short_is_an_error_and_not_cached(cache, chunked):
    """The connection drops after 28 bytes: with a Content-Length this raised a raw IncompleteRead; a
    truncated body must never become (and stay, cached) the corpus."""
    import http.server
    import threading

    class CutShort(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"1c\r\nhello world, this is a trunc\r\n")  # and no final 0-size chunk
            else:
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"hello world, this is a trunc")
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/input.txt"
    try:
        with pytest.raises(DataError, match="cut short: 28 bytes received") as err:
            load_text(url, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert "by hand" in str(err.value)
    assert not cached_path(url, cache).exists()


def test_a_new_grammar_version_does_not_reuse_the_cached_corpus(monkeypatch):
    monkeypatch.setattr(registry.SyntheticLanguage, "text", lambda self, n_chars, seed=None: "old grammar\n")
    assert load_corpus("synthetic-copy") == "old grammar\n"
    monkeypatch.setattr(registry, "GRAMMAR_VERSION", registry.GRAMMAR_VERSION + 1)
    monkeypatch.setattr(registry.SyntheticLanguage, "text", lambda self, n_chars, seed=None: "new grammar\n")
    assert load_corpus("synthetic-copy") == "new grammar\n"


def test_a_file_url_is_read_directly_and_never_cached(tmp_path, cache):
    """A cached copy of a local file went stale silently: the rewritten file must be read again."""
    path = tmp_path / "my data.txt"
    path.write_text("first version\n", encoding="utf-8")
    url = path.as_uri()  # file:///.../my%20data.txt
    assert "%20" in url
    assert load_corpus(url) == "first version\n"
    path.write_text("second version\n", encoding="utf-8")
    assert load_corpus(url) == "second version\n"
    assert load_text(url) == "second version\n"
    assert not cached_path(url, cache).exists()
    path.unlink()
    with pytest.raises(DataError) as err:
        load_corpus(url)
    assert url in str(err.value) and "no such file" in str(err.value)
    with pytest.raises(DataError, match="host 'elsewhere'"):
        load_text("file://elsewhere/data.txt")

"""Tests for arlm_lib.data: shifted windows, seeded batches, splits, memmaps, bad files, DDP slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arlm_lib.data import (
    check_long_enough,
    check_token_stream,
    encode_file,
    encode_file_to_memmap,
    encode_text,
    get_batch,
    load_token_memmap,
    memmap_dtype_for,
    read_text_file,
    split_train_val,
    tensor_dtype_for,
)
from arlm_lib.errors import ConfigError, DataError, TokenizerError
from arlm_lib.tokenizers import BPETokenizer, CharTokenizer

TEXT = (
    "First line of the corpus.\nSecond line, with 中文 characters 😀.\n\n  indented after a blank line\n"
    "Tabs\tand   spaces\n \nend of document\nNext document starts here.\n"
) * 12


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer.train(TEXT)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TEXT, vocab_size=320)


def _stream(n: int = 500, vocab: int = 7, seed: int = 0) -> torch.Tensor:
    # A small vocabulary makes many windows look alike, so "is a real window" is a non-trivial check.
    return torch.randint(vocab, (n,), generator=torch.Generator().manual_seed(seed)).to(torch.int16)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Windows and batches
# --------------------------------------------------------------------------------------------------


def test_windows_are_shifted_by_one_and_cut_from_the_stream() -> None:
    tokens = _stream()
    B, T = 16, 10
    x, y = get_batch(tokens, B, T, _gen(0))
    assert x.shape == y.shape == (B, T)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    # Each (x, last target) row is a contiguous stretch of T + 1 tokens of the stream.
    all_windows = tokens.long().unfold(0, T + 1, 1)  # (n - T, T + 1)
    rows = torch.cat([x, y[:, -1:]], dim=1)
    for row in rows:
        assert (all_windows == row).all(dim=1).any()


def test_windows_reach_both_ends_of_the_stream() -> None:
    # With a stream of distinct ids, the start of each window is its first id.
    tokens = torch.arange(40, dtype=torch.int32)
    x, y = get_batch(tokens, 4000, 8, _gen(1))
    starts = x[:, 0]
    assert starts.min() == 0 and starts.max() == 40 - 8 - 1  # every valid start, and no further
    assert y.max() == 39


def test_seeded_generator_reproduces_batches_and_seeds_differ() -> None:
    tokens = _stream()
    a = get_batch(tokens, 8, 12, _gen(123))
    b = get_batch(tokens, 8, 12, _gen(123))
    c = get_batch(tokens, 8, 12, _gen(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    g = _gen(5)
    first, second = get_batch(tokens, 8, 12, g), get_batch(tokens, 8, 12, g)
    assert not torch.equal(first[0], second[0])  # the generator advances


def test_memmap_and_tensor_give_identical_batches(tmp_path) -> None:
    tokens = _stream(vocab=300)
    np.save(tmp_path / "t.npy", tokens.numpy().astype(np.uint16))
    mm = load_token_memmap(tmp_path / "t.npy")
    assert isinstance(mm, np.memmap)
    for seed in range(3):
        xt, yt = get_batch(tokens, 5, 9, _gen(seed))
        xm, ym = get_batch(mm, 5, 9, _gen(seed))
        assert xm.dtype == torch.long
        assert torch.equal(xt, xm) and torch.equal(yt, ym)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_rank_slices_concatenate_to_the_global_batch(world_size: int) -> None:
    tokens = _stream(1000, vocab=50)
    B, T = 4, 16
    x_all, y_all = get_batch(tokens, B * world_size, T, _gen(7))
    parts = [get_batch(tokens, B, T, _gen(7), rank=r, world_size=world_size) for r in range(world_size)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x_all)
    assert torch.equal(torch.cat([p[1] for p in parts]), y_all)
    assert not torch.equal(parts[0][0], parts[1][0])  # ranks see different data
    # Generators on every rank advance identically, so the next step is consistent too.
    g0, g1 = _gen(9), _gen(9)
    get_batch(tokens, B, T, g0, rank=0, world_size=world_size)
    get_batch(tokens, B, T, g1, rank=1, world_size=world_size)
    assert torch.equal(g0.get_state(), g1.get_state())


@pytest.mark.parametrize(
    ("name", "kwargs"), [("batch_size", {"batch_size": 0}), ("block_size", {"block_size": -3})]
)
def test_batch_and_block_size_must_be_positive(name: str, kwargs: dict) -> None:
    args = {"batch_size": 2, "block_size": 4} | kwargs
    with pytest.raises(ConfigError, match=rf"{name} must be an integer >= 1, got {kwargs[name]}"):
        get_batch(_stream(), args["batch_size"], args["block_size"], _gen(0))


def test_get_batch_rejects_bad_arguments() -> None:
    tokens = _stream()
    with pytest.raises(ConfigError, match="rank"):
        get_batch(tokens, 2, 4, _gen(0), rank=2, world_size=2)
    with pytest.raises(ConfigError, match="generator"):
        get_batch(tokens, 2, 4, 1234)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="1-D"):
        get_batch(tokens.reshape(10, 50), 2, 4, _gen(0))
    with pytest.raises(DataError, match="integer dtype"):
        get_batch(tokens.float(), 2, 4, _gen(0))
    with pytest.raises(DataError, match="list"):
        get_batch(tokens.tolist(), 2, 4, _gen(0))  # type: ignore[arg-type]


def test_get_batch_refuses_bool_sizes() -> None:
    # True is an int to Python: it would silently mean a batch of one row.
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got True"):
        get_batch(_stream(), True, 4, _gen(0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="world_size must be an integer >= 1, got True"):
        get_batch(_stream(), 2, 4, _gen(0), world_size=True)  # type: ignore[arg-type]


def test_get_batch_needs_one_full_window() -> None:
    tokens = torch.arange(10)
    get_batch(tokens, 2, 9, _gen(0))  # exactly T + 1 tokens: one window
    with pytest.raises(DataError, match="10 tokens.*block_size=10 needs at least 11"):
        get_batch(tokens, 2, 10, _gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu() -> None:
    tokens = _stream()
    xc, yc = get_batch(tokens, 4, 8, _gen(3))
    xg, yg = get_batch(tokens, 4, 8, _gen(3), device="cuda")
    assert xg.is_cuda and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
    xd, _ = get_batch(tokens.cuda(), 4, 8, _gen(3), device="cuda")  # stream already on the GPU
    assert torch.equal(xd.cpu(), xc)


def test_a_cuda_batch_is_the_cpu_batch_copied_through_pinned_memory_without_a_gpu(monkeypatch) -> None:
    """The CPU-runnable half of the test above: with device="cuda", get_batch draws the very windows
    it draws for the CPU, pins them (unless pin_memory=False) and queues non-blocking copies.
    ``Tensor.to`` and ``Tensor.pin_memory`` are spied on, so no GPU is needed: a copy "to CUDA"
    records what was copied and how, and returns the CPU tensor itself."""
    real_to = torch.Tensor.to
    copies = []

    def spy_to(self, *args, **kwargs):
        named = [a for a in (*args, kwargs.get("device")) if isinstance(a, (str, torch.device))]
        if named and torch.device(named[0]).type == "cuda":
            copies.append((getattr(self, "pinned_by_test", False), kwargs.get("non_blocking", False)))
            return self
        return real_to(self, *args, **kwargs)

    def spy_pin_memory(self):
        pinned = self.clone()
        pinned.pinned_by_test = True
        return pinned

    tokens = _stream()
    xc, yc = get_batch(tokens, 4, 8, _gen(3))
    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    monkeypatch.setattr(torch.Tensor, "pin_memory", spy_pin_memory)
    for pin_memory, pinned in ((None, True), (True, True), (False, False)):
        copies.clear()
        xg, yg = get_batch(tokens, 4, 8, _gen(3), device="cuda", pin_memory=pin_memory)
        assert torch.equal(xg, xc) and torch.equal(yg, yc)
        assert copies == [(pinned, True)] * 2, pin_memory  # x and y, each queued without waiting


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def test_split_is_deterministic_and_takes_the_tail_for_validation() -> None:
    tokens = _stream(1000)
    train, val = split_train_val(tokens, 0.1)
    train2, val2 = split_train_val(tokens, 0.1)
    assert len(train) == 900 and len(val) == 100
    assert torch.equal(train, tokens[:900]) and torch.equal(val, tokens[900:])
    assert torch.equal(train, train2) and torch.equal(val, val2)
    train, val = split_train_val(tokens, 0.25)
    assert torch.equal(torch.cat([train, val]), tokens) and len(val) == 250


def test_split_of_a_memmap_stays_a_memmap(tmp_path) -> None:
    np.save(tmp_path / "t.npy", np.arange(100, dtype=np.uint16))
    train, val = split_train_val(load_token_memmap(tmp_path / "t.npy"), 0.2)
    assert isinstance(train, np.memmap) and isinstance(val, np.memmap)
    assert train[-1] == 79 and val[0] == 80


def test_split_too_short_names_the_split_and_lengths() -> None:
    tokens = _stream(100)
    split_train_val(tokens, 0.1, block_size=9)  # 90 / 10 tokens: both hold a window
    with pytest.raises(
        DataError, match=r"validation split .* has 10 tokens, but block_size=10 needs at least 11"
    ):
        split_train_val(tokens, 0.1, block_size=10)
    with pytest.raises(DataError, match=r"training split .* has 10 tokens"):
        split_train_val(tokens, 0.9, block_size=10)


def test_check_long_enough_names_the_corpus() -> None:
    check_long_enough(torch.arange(33), 32)
    with pytest.raises(DataError, match="my corpus has 32 tokens, but block_size=32 needs at least 33"):
        check_long_enough(torch.arange(32), 32, "my corpus")


def test_check_token_stream_accepts_every_id_of_the_vocabulary_and_nothing_else() -> None:
    vocab = 7
    check_token_stream(torch.tensor([0, 3, vocab - 1, 2]), 3, vocab, "train tokens")  # both ends allowed
    for bad in (vocab, -1):  # one past the end, and a negative id (an embedding would wrap it around)
        tokens = torch.tensor([0, 3, bad, 2])
        with pytest.raises(
            DataError, match=rf"train tokens hold token id {bad}, outside .* 0\.\.{vocab - 1}"
        ):
            check_token_stream(tokens, 3, vocab, "train tokens")
    with pytest.raises(DataError, match="has 3 tokens"):
        check_token_stream(torch.tensor([0, 1, 2]), 3, vocab, "train tokens")


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "0.1"])
def test_split_rejects_bad_fractions(fraction: object) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        split_train_val(_stream(), fraction)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Files and encoding
# --------------------------------------------------------------------------------------------------


def test_encode_text_is_compact_and_exact(char: CharTokenizer, bpe: BPETokenizer) -> None:
    t = encode_text(TEXT, char)
    assert t.dtype == torch.int16 and t.ndim == 1
    assert t.tolist() == char.encode(TEXT)
    assert encode_text(TEXT, char, dtype=torch.long).dtype == torch.long
    b = encode_text(TEXT, bpe)
    assert bpe.decode(b) == TEXT


def test_a_dtype_too_small_for_the_vocabulary_is_refused(bpe: BPETokenizer) -> None:
    """uint8 wrapped id 264 round to 8, itself a valid id: the stream silently held other text."""
    with pytest.raises(
        ConfigError, match=r"dtype=torch.uint8 .* holds ids up to 255, and this tokenizer has 320"
    ):
        encode_text(TEXT, bpe, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="integer dtype"):
        encode_text(TEXT, bpe, dtype=torch.float32)
    assert encode_text(TEXT, bpe, dtype=torch.int16).tolist() == bpe.encode(TEXT)


def test_a_file_holding_only_a_byte_order_mark_is_empty(tmp_path, char: CharTokenizer) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff".encode())
    with pytest.raises(DataError, match="holds no text"):
        encode_file(path, char)


def test_compact_dtypes_hold_every_id_of_the_vocabulary(tmp_path) -> None:
    """The compact dtypes must hold the largest id: a GPT-2 vocabulary (50,257) in int16 would wrap
    ids >= 32,768 to negative numbers without any error."""
    for vocab_size in (2, 2**15, 2**15 + 1, 50_257, 2**16, 2**16 + 1, 200_000):
        top = vocab_size - 1
        t = torch.tensor([0, top]).to(tensor_dtype_for(vocab_size))
        assert t.tolist() == [0, top], vocab_size
        m = np.array([0, top]).astype(memmap_dtype_for(vocab_size))
        assert m.tolist() == [0, top], vocab_size
    # The smallest that fits: int16 / uint16 up to their limits, int32 after.
    assert tensor_dtype_for(2**15) == torch.int16 and tensor_dtype_for(2**15 + 1) == torch.int32
    assert memmap_dtype_for(2**16) == np.uint16 and memmap_dtype_for(2**16 + 1) == np.int32

    class BigVocab:  # a GPT-2-sized tokenizer: ids past int16's range
        vocab_size = 50_257
        ids = [0, 32_767, 32_768, 40_000, 50_256]

        def encode_array(self, text):
            return np.array(self.ids, dtype=np.int64)

    encoded = encode_text("any text", BigVocab())
    assert encoded.tolist() == BigVocab.ids
    x, y = get_batch(encoded, 2, 4, _gen(0))
    assert torch.equal(x[0], torch.tensor(BigVocab.ids[:4])) and torch.equal(
        y[0], torch.tensor(BigVocab.ids[1:])
    )


def test_read_text_file_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="missing.txt.*does not exist"):
        read_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt.*empty"):
        read_text_file(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="not a regular file"):
        read_text_file(tmp_path)


def test_non_utf8_file_names_file_and_offset(tmp_path, char: CharTokenizer) -> None:
    path = tmp_path / "latin1.txt"
    good = "ascii text and 中文\n" * 50
    offset = len(good.encode("utf-8"))
    path.write_bytes(good.encode("utf-8") + "café\n".encode("latin-1"))
    bad_at = offset + 3  # the latin-1 é
    with pytest.raises(DataError, match=rf"latin1\.txt.*not valid UTF-8.*\be9\b.*byte offset {bad_at}\b"):
        read_text_file(path)
    # The streaming path reports the same absolute offset, even many chunks in.
    out = tmp_path / "tokens.npy"
    for chunk_chars in (1, 7, 1000):  # 1: the bad byte is left pending from one read to the next
        with pytest.raises(DataError, match=rf"byte offset {bad_at}\b"):
            encode_file_to_memmap(path, char, out, chunk_chars=chunk_chars)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.txt"]  # nothing half-written


def test_truncated_utf8_at_end_of_file(tmp_path, char: CharTokenizer) -> None:
    path = tmp_path / "cut.txt"
    raw = "First line\n中".encode()
    path.write_bytes(raw[:-1])  # the last character loses its final byte
    with pytest.raises(DataError, match=rf"byte offset {len(raw) - 3}\b"):
        read_text_file(path)
    with pytest.raises(DataError, match=rf"byte offset {len(raw) - 3}\b"):
        encode_file_to_memmap(path, char, tmp_path / "t.npy", chunk_chars=4)


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("chunk_chars", [5, 64, 1 << 20])
def test_memmap_path_equals_tensor_path(tmp_path, kind: str, chunk_chars: int, char, bpe) -> None:
    tok = {"char": char, "bpe": bpe}[kind]
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    # Small chunks split multi-byte characters between reads and force many encode pieces.
    mm = encode_file_to_memmap(path, tok, tmp_path / "sub" / "tokens.npy", chunk_chars=chunk_chars)
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint16
    expected = encode_file(path, tok)
    np.testing.assert_array_equal(np.asarray(mm, dtype=np.int64), expected.numpy().astype(np.int64))
    assert tok.decode(np.asarray(mm)) == TEXT
    reopened = load_token_memmap(tmp_path / "sub" / "tokens.npy")
    np.testing.assert_array_equal(reopened, mm)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["tokens.npy"]  # no temp files left


@pytest.mark.parametrize("chunk_chars", [1, 2, 64])
def test_a_leading_byte_order_mark_is_dropped_as_load_corpus_drops_it(
    tmp_path, chunk_chars: int, char
) -> None:
    from arlm_lib.corpus import load_corpus

    path = tmp_path / "notepad.txt"
    path.write_text(TEXT, encoding="utf-8-sig")  # what Windows editors write: EF BB BF, then the text
    assert load_corpus(str(path)) == TEXT
    # char was trained on TEXT (no U+FEFF): every path must encode the file as that text.
    assert read_text_file(path) == TEXT
    np.testing.assert_array_equal(encode_file(path, char).numpy(), char.encode_array(TEXT))
    mm = encode_file_to_memmap(path, char, tmp_path / "t.npy", chunk_chars=chunk_chars)
    assert char.decode(np.asarray(mm)) == TEXT
    # Only a mark at the very start is a BOM; one inside the text is a character like any other.
    path.write_text("a\ufeffb\n", encoding="utf-8-sig")
    assert read_text_file(path) == "a\ufeffb\n"


def test_memmap_of_a_file_without_newlines_still_round_trips(tmp_path, bpe: BPETokenizer) -> None:
    text = "one very long line without any line break 中文 " * 1800  # > the 64K-character patience
    path = tmp_path / "oneline.txt"
    path.write_text(text, encoding="utf-8")
    mm = encode_file_to_memmap(path, bpe, tmp_path / "t.npy", chunk_chars=16)
    assert bpe.decode(np.asarray(mm)) == text


def test_encode_file_to_memmap_errors(tmp_path, char: CharTokenizer) -> None:
    with pytest.raises(DataError, match="does not exist"):
        encode_file_to_memmap(tmp_path / "nope.txt", char, tmp_path / "t.npy")
    (tmp_path / "a.txt").write_text("abc\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="chunk_chars"):
        encode_file_to_memmap(tmp_path / "a.txt", char, tmp_path / "t.npy", chunk_chars=0)
    # A character the tokenizer cannot encode, deep in the file: an error, and no partial output.
    (tmp_path / "b.txt").write_text(TEXT + "Ωmega\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="'Ω'"):
        encode_file_to_memmap(tmp_path / "b.txt", char, tmp_path / "t.npy", chunk_chars=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_load_token_memmap_rejects_bad_files(tmp_path) -> None:
    np.save(tmp_path / "2d.npy", np.zeros((3, 3), dtype=np.int32))
    np.save(tmp_path / "float.npy", np.zeros(3, dtype=np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    for name, pattern in [("2d", "1-D integer"), ("float", "1-D integer"), ("obj", "not a valid"),
                          ("junk", "not a valid"), ("missing", "does not exist")]:  # fmt: skip
        with pytest.raises(DataError, match=pattern):
            load_token_memmap(tmp_path / f"{name}.npy")


def test_memmap_of_a_windows_text_encodes_like_the_whole_text(tmp_path) -> None:
    """CRLF line ends: pieces are cut before "\\r\\n" (after it, BPE would merge "\\r\\n" into one token at
    the end of a piece, where the whole text has "\\r" and "\\n"). Longer than the 64K-character patience,
    so a file with no clean cut would show it."""
    # Paragraphs: the blank lines put "\r\n" inside whitespace pre-tokens, so BPE learns it as one token.
    text = "".join(f"line {i} of a Windows text, with words\r\n" + "\r\n" * (i % 3 == 2) for i in range(2500))
    bpe = BPETokenizer.train(text, vocab_size=400)
    path = tmp_path / "crlf.txt"
    path.write_bytes(text.encode("utf-8"))
    mm = encode_file_to_memmap(path, bpe, tmp_path / "t.npy", chunk_chars=4096)
    np.testing.assert_array_equal(
        np.asarray(mm, dtype=np.int64), np.asarray(bpe.encode(text), dtype=np.int64)
    )


def test_split_rounds_the_validation_size_to_the_nearest_token():
    # 100 * 0.29 is 28.999999999999996 in floating point: truncating would give 28 validation tokens.
    train, val = split_train_val(torch.arange(100), val_fraction=0.29)
    assert (len(train), len(val)) == (71, 29)
    assert torch.equal(torch.cat([train, val]), torch.arange(100))


def test_token_memmaps_open_read_only(tmp_path) -> None:
    np.save(tmp_path / "t.npy", np.arange(10, dtype=np.uint16))
    mm = load_token_memmap(tmp_path / "t.npy")
    assert not mm.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        mm[0] = 5
    assert np.load(tmp_path / "t.npy")[0] == 0

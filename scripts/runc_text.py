"""Greedy decoding and text output exactly as llama2.c's run.c does it.

Shared by check_hf_export.py and check_gguf_export.py. Nothing here knows
about whittle: it reproduces run.c's generate(), decode() and safe_printf()
so the checkers' output can be compared byte for byte with
expected_greedy_200.txt (made by run.c) or with `whittle generate`.
"""

import re
import struct
import sys

# run.c's decode() parses byte pieces with sscanf(piece, "<0x%02hhX>"):
# up to two hex digits after "<0x" (the closing '>' is not verified).
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{1,2})")

# C's isprint || isspace in the "C" locale, for one unsigned byte.
_PRINTABLE = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0B, 0x0C, 0x0D}


def llama2c_piece(piece, tok_id, bos, eos):
    """A SentencePiece piece as llama2.c's tokenizer.py exports it:
    BOS and EOS become "\\n<s>\\n" and "\\n</s>\\n", U+2581 becomes a space."""
    if tok_id == bos:
        piece = "\n<s>\n"
    elif tok_id == eos:
        piece = "\n</s>\n"
    return piece.replace("\u2581", " ").encode("utf-8")


def read_llama2c_tokenizer(path):
    """tokenizer.bin: int32 max_token_length, then per token float32 score,
    int32 length and the bytes. The count is not stored (run.c takes it from
    the model); every record up to end of file is read."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for a llama2.c tokenizer")
    (max_len,) = struct.unpack_from("<i", data, 0)
    pieces, off = [], 4
    while off < len(data):
        if off + 8 > len(data):
            raise ValueError(f"{path}: offset {off}: truncated token record {len(pieces)}")
        _score, n = struct.unpack_from("<fi", data, off)
        off += 8
        if n < 0 or off + n > len(data):
            raise ValueError(f"{path}: offset {off - 4}: token {len(pieces)} has bad length {n}")
        if n > max_len:
            raise ValueError(f"{path}: token {len(pieces)} is {n} bytes, over max_token_length {max_len}")
        pieces.append(data[off:off + n])
        off += n
    return pieces


def decode(pieces, prev, tok, bos=1):
    """run.c's decode(): strip one leading space after BOS, map <0xXX> to
    the raw byte."""
    piece = pieces[tok]
    if prev == bos and piece[:1] == b" ":
        piece = piece[1:]
    m = _BYTE_PIECE.match(piece)
    if m:
        piece = bytes([int(m.group(1), 16)])
    return piece


def safe_piece(piece):
    """run.c's safe_printf(): what it would print for piece (a lone
    unprintable byte prints nothing). C strings stop at a NUL."""
    piece = piece.split(b"\0", 1)[0]
    if len(piece) == 1 and piece[0] not in _PRINTABLE:
        return b""
    return piece


def generate(next_logits, pieces, steps, bos=1):
    """run.c's generate() with an empty prompt and temperature 0:
    start at BOS, take the argmax (first index on ties, like run.c's
    sample_argmax), stop when BOS comes out, finish with a newline.
    next_logits(tokens) returns the logits after the last of tokens."""
    tokens = [bos]
    out = bytearray()
    pos = 0
    while pos < steps:
        logits = next_logits(tokens)
        nxt = int(_argmax(logits))
        pos += 1
        if nxt == bos:
            break
        if nxt >= len(pieces):
            raise ValueError(f"generated token {nxt} is outside the {len(pieces)}-piece vocabulary")
        out += safe_piece(decode(pieces, tokens[-1], nxt, bos))
        tokens.append(nxt)
    out += b"\n"
    return bytes(out), tokens


def _argmax(logits):
    best, bi = None, 0
    for i, v in enumerate(logits.tolist()):
        if best is None or v > best:
            best, bi = v, i
    return bi


def compare(got, expected_path, label):
    """Print the verdict; return 0 when got equals the file's bytes, else 1
    after showing the first difference."""
    with open(expected_path, "rb") as f:
        want = f.read()
    if got == want:
        print(f"PASS {label}: {len(got)} bytes identical to {expected_path}")
        return 0
    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
    line = want[:i].count(b"\n") + 1
    print(f"FAIL {label}: differs from {expected_path} at byte {i} (line {line}); "
          f"got {len(got)} bytes, want {len(want)}")
    print(f"  want: {want[max(0, i - 40):i + 40]!r}")
    print(f"  got:  {got[max(0, i - 40):i + 40]!r}")
    return 1


def emit(text, out_path):
    """Write the generated text to out_path ('-' for stdout)."""
    if out_path == "-":
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
    elif out_path:
        with open(out_path, "wb") as f:
            f.write(text)

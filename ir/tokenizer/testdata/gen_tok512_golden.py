#!/usr/bin/env python3
"""Regenerates tok512_golden.json with Google's SentencePiece as the reference.

Needs the sentencepiece Python binding (Debian: apt-get install
python3-sentencepiece; the file was made with 0.1.97) and the shared test data.
Run from this directory:  python3 gen_tok512_golden.py

The reference model is ../shared/data/models/stories260K/tok512.model (the same
512 pieces and scores as tok512.bin) with its normalizer spec replaced by
{name: "identity", add_dummy_prefix: true, remove_extra_whitespaces: false}:
tok512.model leaves remove_extra_whitespaces unset, which means true, whereas
llama2.c's encode keeps every space. The spec is rewritten on the raw protobuf
bytes here so that the Go code under test plays no part in making the
reference. BOS (1) and EOS (2) are added around SentencePiece's ids as
requested, as llama2.c's encode does.
"""

import json
import os
import sys

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "shared", "data"))


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def put_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def field(num, wire, payload):
    return put_varint(num << 3 | wire) + payload


def with_identity_normalizer(model):
    """Returns model with ModelProto field 3 (normalizer_spec) replaced."""
    out = bytearray()
    i = 0
    while i < len(model):
        start = i
        key, i = varint(model, i)
        assert key & 7 == 2, "ModelProto top-level fields are all messages"
        n, i = varint(model, i)
        i += n
        if key >> 3 != 3:
            out += model[start:i]
    norm = (
        field(1, 2, put_varint(8) + b"identity")  # name
        + field(3, 0, b"\x01")  # add_dummy_prefix
        + field(4, 0, b"\x00")  # remove_extra_whitespaces
    )
    out += field(3, 2, put_varint(len(norm)) + norm)
    return bytes(out)


CASES = [
    # (text, bos, eos, note)
    ("Once upon a time", True, False, "common words merge into ' Once' ' upon' ' a' ' time'"),
    ("The little dog was happy.", True, True, "' dog' is no piece: ' do' + 'g'"),
    ("Hello, 世界!\n", False, False, "CJK and newline fall back to byte tokens (byte + 3)"),
    ("", True, False, "empty text: no dummy prefix"),
    ("", False, True, "empty text, EOS only"),
    ("a", False, False, "dummy prefix ' ' merges with 'a' into ' a'"),
    (" ", True, False, "a lone space: dummy ' ' then ' '"),
    ("  two  spaces ", True, False, "runs of spaces are kept (no whitespace folding)"),
    ("a\n\nb", False, False, "newlines are byte tokens <0x0A>"),
    ("tab\there", False, False, "tab is a byte token <0x09>"),
    ("caf\u00e9 na\u00efve", True, False, "2-byte characters without pieces"),
    ("emoji \U0001F642!", True, False, "4-byte character: four byte tokens"),
    ("\u2122 and \u200a", True, False, "3-byte characters that are pieces (ids 507, 511)"),
    ("<s> and </s> are text", True, False, "control spellings in text are ordinary characters"),
    ("1234567890", False, False, "digits"),
]


def main():
    with open(os.path.join(DATA, "models", "stories260K", "tok512.model"), "rb") as f:
        model = with_identity_normalizer(f.read())
    sp = spm.SentencePieceProcessor(model_proto=model)
    assert sp.get_piece_size() == 512 and sp.bos_id() == 1 and sp.eos_id() == 2

    cases = list(CASES)
    for name, count in (("tinystories_val.txt", 3), ("tinyshakespeare.txt", 3)):
        with open(os.path.join(DATA, "corpora", name), encoding="utf-8") as f:
            paras = [p for p in f.read().split("\n\n") if p]
        for p in paras[:count]:
            cases.append((p, True, False, "a paragraph of corpora/" + name))
    # A TinyStories paragraph with mojibake ("â€œ"): mixed pieces and bytes.
    with open(os.path.join(DATA, "corpora", "tinystories_val.txt"), encoding="utf-8") as f:
        moji = next(p for p in f.read().split("\n\n") if "\u20ac" in p)
    cases.append((moji, True, True, "a corpora/tinystories_val.txt paragraph with mojibake"))

    out = []
    for text, bos, eos, note in cases:
        ids = ([1] if bos else []) + sp.encode(text) + ([2] if eos else [])
        out.append({"text": text, "bos": bos, "eos": eos, "ids": ids, "note": note})
    with open(os.path.join(HERE, "tok512_golden.json"), "w", encoding="utf-8") as f:
        f.write("[\n")
        for i, c in enumerate(out):
            f.write("  " + json.dumps(c, ensure_ascii=False))
            f.write(",\n" if i + 1 < len(out) else "\n")
        f.write("]\n")
    print("wrote", len(out), "cases with sentencepiece", spm.__version__, file=sys.stderr)


if __name__ == "__main__":
    main()

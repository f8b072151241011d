#!/usr/bin/env python3
"""Regenerates testdata/normalizer/: four small SentencePiece BPE models that
differ only in their normalizer spec, and the ids Google's SentencePiece gives
for a set of texts under each (normalizer_golden.json).

Needs the sentencepiece Python binding (Debian: apt-get install
python3-sentencepiece; made with 0.1.97) and the shared test data.
Run from this directory:  python3 gen_normalizer_golden.py

Models (identity normalizer, byte fallback, 400 pieces, trained on the first
200,000 bytes of tinystories_val.txt):
  llama         add_dummy_prefix=true,  remove_extra_whitespaces=false (Llama 2)
  nodummy       add_dummy_prefix=false, remove_extra_whitespaces=false (Gemma-like)
  fold          add_dummy_prefix=true,  remove_extra_whitespaces=true  (the proto's defaults)
  nodummy_fold  add_dummy_prefix=false, remove_extra_whitespaces=true
"""

import json
import os
import tempfile

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "shared", "data"))
OUT = os.path.join(HERE, "normalizer")

MODELS = [("llama", True, False), ("nodummy", False, False), ("fold", True, True), ("nodummy_fold", False, True)]

TEXTS = [
    "", " ", "   ", "x", " x", "x ", "  Hello   world  ", "a\tb\n c", "\n\nOnce upon a time.\n",
    "Lily said, \"Wow!\"  Then   she ran.", "naïve café — 日本語 🙂", "\u3000full width space",
    "tabs\t\tand  spaces \t mixed ", "trailing newline\n", " leading space",
]


def main():
    with open(os.path.join(DATA, "corpora", "tinystories_val.txt"), "rb") as f:
        corpus = f.read(200000).decode("utf-8", "ignore")
    paragraphs = [p for p in corpus.split("\n\n") if p.strip()][:40]
    os.makedirs(OUT, exist_ok=True)
    golden = {"texts": TEXTS + paragraphs, "ids": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "corpus.txt")
        with open(src, "w", encoding="utf-8") as f:
            f.write(corpus)
        for name, dummy, fold in MODELS:
            prefix = os.path.join(OUT, name)
            spm.SentencePieceTrainer.train(
                input=src, model_prefix=prefix, model_type="bpe", vocab_size=400, byte_fallback=True,
                normalization_rule_name="identity", add_dummy_prefix=dummy, remove_extra_whitespaces=fold,
                character_coverage=1.0, minloglevel=2)
            os.remove(prefix + ".vocab")
            sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
            golden["ids"][name] = [sp.encode(t) for t in golden["texts"]]
    with open(os.path.join(OUT, "normalizer_golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Load whittle's Hugging Face exports with the real `transformers` and
compare its logits with whittle's, element by element.

For a machine that has transformers (the lent GPU machine does; the build
machines do not). scripts/device/families_prep.sh stages, for every family,
DIR/<name>/ (whittle's HF export: config.json + model.safetensors),
DIR/tokens.npy ((rows, L) int32) and DIR/<name>.logits.npy (whittle's
float32 logits, (rows, L, vocab), from `whittle logits`). This script loads
each export with AutoModelForCausalLM in float32 with eager attention (the
reference implementation of every family's options, soft-capping included)
and prints max |Δ| per model. Exit status 1 if any exceeds --tol.

  python3 scripts/device/check_transformers.py DIR [--tol 1e-4] [--device cuda]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    tokens = torch.from_numpy(np.load(os.path.join(args.dir, "tokens.npy")).astype(np.int64))
    results, failed = {}, False
    for name in sorted(os.listdir(args.dir)):
        model_dir = os.path.join(args.dir, name)
        want_path = os.path.join(args.dir, name + ".logits.npy")
        if not os.path.isdir(model_dir) or not os.path.exists(want_path):
            continue
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                model_dir, torch_dtype=torch.float32, attn_implementation="eager").to(args.device).eval()
            # TF32 would cost precision the comparison needs.
            torch.backends.cuda.matmul.allow_tf32 = False
            with torch.no_grad():
                got = model(tokens.to(args.device)).logits.float().cpu().numpy()
        except Exception as e:  # a load failure is a result too
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
            print(f"{name}: FAIL to load or run: {e}")
            continue
        want = np.load(want_path)
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        ok = diff <= args.tol
        failed |= not ok
        results[name] = {"max_abs_diff": diff, "ok": ok, "class": type(model).__name__}
        print(f"{name}: {type(model).__name__} max |Δ| {diff:.3g} {'ok' if ok else 'FAIL'}")
    if not results:
        sys.exit(f"no exports with logits under {args.dir}")
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "transformers.json"), "w") as f:
            json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "results": results}, f, indent=2)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

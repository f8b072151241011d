"""Unit tests of the mixture-of-experts layer: the grouped computation
(tokens gathered per expert, outputs through the inverse permutation)
against a per-token loop over ir/graph's MoEAttrs definition, including
ties between router probabilities, which go to the lower expert index."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from whittle_torch.model import Layer, layer_tensors  # noqa: E402

torch.set_num_threads(1)


def _layer(arch, experts, k, norm, shared, zero_router, seed):
    d, m, s = 8, 6, 5 if shared else 0
    cfg = {"arch": arch, "hidden": d, "norm_eps": 1e-6, "top_k": k, "norm_topk": norm, "act": "silu",
           "layers": [{"heads": 2, "kv_heads": 1, "head_dim": 4, "mlp": 0, "window": 0,
                       "experts": experts, "expert_mlp": m, "shared_mlp": s}]}
    g = torch.Generator().manual_seed(seed)
    shapes = {"attn_norm": (d,), "q": (8, d), "k": (4, d), "v": (4, d), "o": (d, 8), "mlp_norm": (d,),
              "router": (experts, d), "expert_gate": (experts, m, d), "expert_up": (experts, m, d),
              "expert_down": (experts, d, m), "shared_gate": (s, d), "shared_up": (s, d), "shared_down": (d, s),
              "shared_expert_gate": (1, d)}
    t = {}
    for role, name in layer_tensors(cfg, 0).items():
        t[name] = torch.randn(*shapes[role], generator=g, dtype=torch.float64).float()
        if role == "router" and zero_router:
            t[name].zero_()  # every probability equal: ties throughout
    return cfg, Layer(cfg, t, 0), t, layer_tensors(cfg, 0)


def _reference(cfg, t, names, x):
    """out = sum_k w_k expert_k(x) + sigmoid(x.g) shared(x), per token in
    float64, top-k by a plain scan that prefers the lower index on ties."""
    k = cfg["top_k"]
    lc = cfg["layers"][0]
    W = {r: t[n].double() for r, n in names.items()}
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64)
    for n in range(x.shape[0]):
        xn = x[n].double()
        p = torch.softmax(W["router"] @ xn, 0).tolist()
        sel = []
        for _ in range(k):
            best = max((e for e in range(lc["experts"]) if e not in sel), key=lambda e: (p[e], -e))
            sel.append(best)
        tot = sum(p[e] for e in sel)
        for e in sel:
            w = p[e] / tot if cfg["norm_topk"] else p[e]
            a = F.silu(W["expert_gate"][e] @ xn) * (W["expert_up"][e] @ xn)
            out[n] += w * (W["expert_down"][e] @ a)
        if "shared_gate" in W:
            a = F.silu(W["shared_gate"] @ xn) * (W["shared_up"] @ xn)
            out[n] += torch.sigmoid(W["shared_expert_gate"][0] @ xn) * (W["shared_down"] @ a)
    return out, p


class MoE(unittest.TestCase):
    def test_against_per_token(self):
        cases = [
            # arch, experts, k, norm_topk, shared, zero router
            ("mixtral", 4, 2, True, False, False),
            ("qwen2_moe", 4, 2, False, True, False),
            ("qwen3_moe", 6, 3, True, False, False),
            ("mixtral", 4, 2, True, False, True),
            ("qwen2_moe", 5, 1, False, True, True),
        ]
        for i, (arch, e, k, norm, shared, zero) in enumerate(cases):
            with self.subTest(arch=arch, experts=e, k=k, zero_router=zero):
                cfg, layer, t, names = _layer(arch, e, k, norm, shared, zero, i)
                x = torch.randn(2, 5, cfg["hidden"], generator=torch.Generator().manual_seed(10 + i))
                rec, router = {}, []
                got = layer.experts(x, rec, router).reshape(10, -1)
                want, _ = _reference(cfg, t, names, x.reshape(10, -1))
                scale = 1 + want.abs().max().item()  # float32 against float64
                self.assertLess((got.double() - want).abs().max().item(), 1e-6 * scale)
                counts = torch.bincount(rec["experts"], minlength=e)
                self.assertEqual(rec["counts"].tolist(), counts.tolist())
                self.assertEqual(sum(rec["counts"].tolist()), 10 * k)
                if zero:
                    # Equal probabilities: every token picks experts 0..k-1.
                    self.assertEqual(rec["counts"].tolist(), [10] * k + [0] * (e - k))
                E, psum, _ = router[0]
                self.assertEqual(E, e)
                self.assertLess((psum - rec["probs"].sum(0)).abs().max().item(), 1e-6)


if __name__ == "__main__":
    unittest.main()

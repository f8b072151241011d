"""Unit tests of the pieces that need no process group: the sharding
strategy selection (the same code picks FSDP2 on the GPU machine's torch
2.11 and DDP + ZeRO-1 on Debian 12's torch 1.13), the backend block's
attributes, and the request rules against core/backend's."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from whittle_torch import dist  # noqa: E402
from whittle_torch.backend import parse_config  # noqa: E402
from whittle_torch.engine import BadRequest, lr_at, resolve_train  # noqa: E402

torch.set_num_threads(1)


class Strategy(unittest.TestCase):
    def test_select(self):
        cases = [
            # world, version, fully_shard importable, requested, want
            (1, "2.11.0", True, "", dist.STRATEGY_SINGLE),
            (1, "1.13.0a0", False, "", dist.STRATEGY_SINGLE),
            (8, "2.11.0+cu128", True, "", dist.STRATEGY_FSDP2),
            (2, "2.4.0", True, "", dist.STRATEGY_FSDP2),
            (2, "2.3.1", True, "", dist.STRATEGY_ZERO1),  # composable FSDP2 before 2.4 is not used
            (2, "1.13.0a0", False, "", dist.STRATEGY_ZERO1),
            (2, "2.11.0", False, "", dist.STRATEGY_ZERO1),  # a build without it
            (2, "2.11.0", True, "ddp+zero1", dist.STRATEGY_ZERO1),
            (2, "10.0", True, "", dist.STRATEGY_FSDP2),
        ]
        for world, version, has, req, want in cases:
            with self.subTest(world=world, version=version, has=has, req=req):
                self.assertEqual(dist.select_strategy(world, version, has, req), want)

    def test_fsdp2_refused_where_missing(self):
        for version, has in [("1.13.0", False), ("2.3.0", True), ("2.11.0", False)]:
            with self.assertRaisesRegex(ValueError, "needs torch >= 2.4"):
                dist.select_strategy(2, version, has, "fsdp2")
        with self.assertRaisesRegex(ValueError, "unknown strategy"):
            dist.select_strategy(2, "2.11.0", True, "megatron")

    def test_this_torch(self):
        # What this machine's torch gets: FSDP2 exactly when it is new
        # enough and fully_shard imports.
        v = torch.__version__
        has = dist.fully_shard_available()
        got = dist.select_strategy(2, v, has)
        want = dist.STRATEGY_FSDP2 if dist.parse_version(v) >= (2, 4) and has else dist.STRATEGY_ZERO1
        self.assertEqual(got, want)
        if dist.parse_version(v) < (2, 4):
            self.assertIn("no usable FSDP2", dist.strategy_note(got, v))


class Config(unittest.TestCase):
    def test_defaults_and_refusals(self):
        c = parse_config({"nproc_per_node": 2.0})
        self.assertEqual((c["nproc_per_node"], c["nnodes"], c["device"]), (2, 1, "cpu"))
        for bad, words in [({"nproc_per_nod": 2}, "unknown attribute 'nproc_per_nod'"),
                           ({"nproc_per_node": -1}, "non-negative"),
                           ({"nproc_per_node": 0}, "at least 1"),
                           ({"nnodes": 2}, "rdzv_endpoint"),
                           ({"node_rank": 1}, "node 0"),
                           ({"precision": "fp8"}, "precision"),
                           ({"device": "tpu"}, "device")]:
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(BadRequest, words):
                    parse_config(bad)


class Rules(unittest.TestCase):
    base = {"model": "m", "objective": "ce", "data": {"path": "x"}, "steps": 3, "batch_size": 2, "optim": {"lr": 1e-3}}

    def test_defaults(self):
        r, klw, ad = resolve_train(dict(self.base, mode="lora"))
        self.assertEqual(r["grad_accum"], 1)
        self.assertEqual((r["optim"]["beta1"], r["optim"]["beta2"], r["optim"]["eps"]), (0.9, 0.999, 1e-8))
        self.assertEqual(ad, {"rank": 8, "alpha": 8.0, "roles": ["q", "k", "v", "o", "gate", "up", "down"]})
        self.assertEqual(klw, 0)
        r, klw, _ = resolve_train(dict(self.base, objective="kl", teacher="t", loss={"ce_weight": 0.25}))
        self.assertEqual((klw, r["loss"]["temperature"]), (0.75, 1.0))

    def test_refusals(self):
        # The words of core/backend's TrainRequest.Resolve.
        for patch, words in [({"steps": 0}, "steps 0 must be positive"),
                             ({"objective": "kl"}, "objective kl needs a teacher"),
                             ({"teacher": "m"}, "load it a second time"),
                             ({"mode": "half"}, "unknown mode"),
                             ({"lora": {"rank": 2}}, "lora settings given for mode"),
                             ({"mode": "lora", "lora": {"targets": ["q_proj", "q_proj"]}}, "listed twice"),
                             ({"optim": {"lr": 0}}, "learning rate 0 must be"),
                             ({"optim": {"lr": 1, "beta1": 1}}, "betas")]:
            with self.subTest(patch=patch):
                with self.assertRaisesRegex(BadRequest, words):
                    resolve_train(dict(self.base, **patch))

    def test_schedule(self):
        # Warm-up reaches the peak at step warmup-1, the cosine reaches
        # min_lr at the last step.
        o = {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 2}
        self.assertEqual([lr_at(o, s, 6) for s in (0, 1)], [0.5, 1.0])
        self.assertAlmostEqual(lr_at(o, 2, 6), 1.0)
        self.assertAlmostEqual(lr_at(o, 6, 6), 0.1)


if __name__ == "__main__":
    unittest.main()

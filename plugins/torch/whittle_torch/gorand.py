"""The random streams whittle's CPU backend draws from, so that this backend
draws the very same numbers: Go's math/rand/v2 PCG (LoRA's initial A
matrices) and llama2.c's xorshift sampler (plugins/cpu/reference.Sampler).
"""

import math

import numpy as np

M64 = (1 << 64) - 1


class PCG:
    """Go's rand.NewPCG(seed1, seed2): a 128-bit LCG with the DXSM output."""

    MUL = (2549297995355413924 << 64) | 4865540595714422341
    INC = (6364136223846793005 << 64) | 1442695040888963407

    def __init__(self, seed1, seed2):
        self.state = ((seed1 & M64) << 64) | (seed2 & M64)

    def uint64(self):
        self.state = (self.state * self.MUL + self.INC) & ((1 << 128) - 1)
        hi, lo = self.state >> 64, self.state & M64
        hi ^= hi >> 32
        hi = (hi * 0xda942042e4dd58b5) & M64
        hi ^= hi >> 48
        hi = (hi * (lo | 1)) & M64
        return hi

    def float64(self):
        """rand.Float64: 53 random bits over 2^53."""
        return float((self.uint64() << 11 & M64) >> 11) / float(1 << 53)


def lora_init(seed, shapes):
    """The A matrices engine.NewLoRA draws: for each adapter (in layer, then
    role order) A[rank, in] uniform in ±1/sqrt(in), row-major, from
    PCG(seed, 0x4c6f5241), rounded to float32."""
    r = PCG(seed, 0x4C6F5241)
    out = []
    for rank, fan_in in shapes:
        bound = 1 / math.sqrt(fan_in)
        v = np.empty(rank * fan_in, dtype=np.float64)
        for i in range(v.size):
            v[i] = (2 * r.float64() - 1) * bound
        out.append(v.astype(np.float32).reshape(rank, fan_in))
    return out


class Sampler:
    """llama2.c's sampler as reference.Sampler implements it: greedy at
    temperature 0, else temperature softmax with an optional nucleus cut,
    drawn with run.c's xorshift generator; one sampler serves the prompts in
    order. The float32 arithmetic is sequential, as in Go."""

    def __init__(self, temperature, top_p, seed):
        self.t = temperature
        self.top_p = top_p
        self.state = (seed & M64) or 1

    def _u32(self):
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & M64
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & M64) >> 32

    def _f32(self):
        return np.float32(self._u32() >> 8) / np.float32(16777216.0)

    def sample(self, logits):
        logits = np.asarray(logits, dtype=np.float32)
        if not (self.t > 0):
            return _argmax(logits)
        return self._sample(logits, self._f32())

    def _sample(self, logits, coin):
        best = _argmax(logits)
        top = logits[best]
        t = np.float32(self.t)
        with np.errstate(all="ignore"):
            if not (t > 0) or top != top or np.isinf(top) or np.isinf(top / t):
                return best
            m = top / t
            e = logits / t - m
            p = np.where(e != e, np.float32(0), np.exp(e.astype(np.float64)).astype(np.float32)).astype(np.float32)
            p[e != e] = 0
        # Sequential float32 sum, as Go's loop.
        total = np.cumsum(p, dtype=np.float32)[-1]
        p = (p / total).astype(np.float32)
        if not (0 < self.top_p < 1):
            return _sample_all(p, coin)
        return _sample_top_p(p, np.float32(self.top_p), coin, best)


def _argmax(v):
    best = -1
    ok = v == v
    if not ok.any():
        return 0
    vv = np.where(ok, v, -np.inf)
    best = int(np.argmax(vv))  # the first largest
    return best


def _sample_all(p, coin):
    cdf = np.cumsum(p, dtype=np.float32)
    hit = np.nonzero(coin < cdf)[0]
    if hit.size:
        return int(hit[0])
    nz = np.nonzero(p > 0)[0]
    return int(nz[-1]) if nz.size else 0


def _sample_top_p(p, top_p, coin, best):
    if p.size == 1:
        return 0
    cutoff = (np.float32(1) - top_p) / np.float32(p.size - 1)
    idx = np.nonzero(p >= cutoff)[0]
    if idx.size == 0:
        return best
    # A stable sort by decreasing probability, as sort.SliceStable.
    idx = idx[np.argsort(-p[idx], kind="stable")]
    cum = np.cumsum(p[idx], dtype=np.float32)
    over = np.nonzero(cum > top_p)[0]
    last = int(over[0]) if over.size else idx.size - 1
    cum_last = cum[last]
    r = np.float32(coin * cum_last)
    cdf = np.cumsum(p[idx[:last + 1]], dtype=np.float32)
    hit = np.nonzero(r < cdf)[0]
    if hit.size:
        return int(idx[hit[0]])
    while last > 0 and p[idx[last]] == 0:
        last -= 1
    return int(idx[last])

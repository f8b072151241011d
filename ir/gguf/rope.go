package gguf

// llama.cpp stores Q and K rows in the interleaved RoPE order (pairs of
// adjacent dimensions rotate together); the IR uses Hugging Face's half
// order. Rows are permuted on the way in and back on the way out.

import "github.com/whittle-ml/whittle/ir"

// permuted reorders the rows of a Q or K matrix lazily, when its bytes
// are first read; the model is validated before that can happen, so the
// permutation fits the shape.
func permuted(t *ir.Tensor, heads, headDim int, perm func(heads, headDim int) []int) *ir.Tensor {
	return ir.LazyTensor(t.DType, t.Shape, func() ([]byte, error) {
		p, err := t.PermuteRows(perm(heads, headDim))
		if err != nil {
			return nil, err
		}
		return p.Bytes()
	})
}

// interleavedPerms maps the canonical name of every Q and K matrix to the
// row permutation that takes it back to GGUF's interleaved order.
func interleavedPerms(c *ir.Config) map[string][]int {
	perms := map[string][]int{}
	for l, lc := range c.Layers {
		perms[ir.LayerName(l, ir.RoleQ)] = ir.RopeToInterleaved(lc.Heads, lc.HeadDim)
		perms[ir.LayerName(l, ir.RoleK)] = ir.RopeToInterleaved(lc.KVHeads, lc.HeadDim)
	}
	return perms
}

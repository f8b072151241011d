// Package llama2c reads and writes llama2.c checkpoints in the legacy
// (version 0) format that llama2.c's export.py legacy_export writes and
// run.c reads: a header of seven little-endian int32s
//
//	dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//
// (vocab_size negative when an untied classifier follows), then float32
// arrays, each stacking all layers:
//
//	token_embedding [vocab, dim]
//	rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim],
//	wo [L, dim, dim], rms_ffn [L, dim],
//	w1 [L, hidden, dim] (gate), w2 [L, dim, hidden] (down), w3 [L, hidden, dim] (up),
//	rms_final [dim], freq_cis_real [seq_len, head_size/2], freq_cis_imag [seq_len, head_size/2],
//	wcls [vocab, dim] (untied only)
//
// with head_size = dim / n_heads and kv_dim = n_kv_heads * head_size. The
// rows of wq and wk are in the interleaved RoPE order and are permuted to
// Hugging Face's order on the way in (see ir.RopeToHalf). The format fixes
// what it does not store: RMSNorm eps 1e-5, RoPE theta 10000, BOS 1, EOS 2.
package llama2c

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
)

// The hyperparameters llama2.c hard-codes.
const (
	NormEps   = 1e-5
	RopeTheta = 10000.0
	BOS       = 1
	EOS       = 2
)

// headerSize is the seven int32 fields.
const headerSize = 7 * 4

// versionMagic opens the newer (version 1 and 2) llama2.c exports, "ak42"
// read as a little-endian uint32.
const versionMagic = 0x616b3432

// header is a checkpoint's seven int32 fields, widened.
type header struct {
	dim, hidden, layers, heads, kvHeads, vocab, seqLen int64
}

// array is one float32 array of the file.
type array struct {
	name string
	dims []int64
	off  int64 // byte offset in the file
}

// Load memory-maps a llama2.c checkpoint. Tensors are lazy views of the
// map (Q and K are permuted when first read); Close on the model releases
// it.
func Load(path string) (*ir.Model, error) {
	mp, err := ir.MapFile(path)
	if err != nil {
		return nil, fmt.Errorf("llama2c: %w", err)
	}
	m, err := Parse(path, mp.Bytes())
	if err != nil {
		mp.Close()
		return nil, err
	}
	m.AddCloser(mp)
	return m, nil
}

// Parse decodes a checkpoint held in data; name is used in messages and
// as the model's Source. Every size is checked against len(data) before
// any tensor is sliced. The tensors alias data.
func Parse(name string, data []byte) (*ir.Model, error) {
	h, arrays, err := parseLayout(data)
	if err != nil {
		return nil, fmt.Errorf("llama2c %s: %w", name, err)
	}
	off := map[string]int64{}
	for _, a := range arrays {
		off[a.name] = a.off
	}
	hs := h.dim / h.heads
	kvDim := h.kvHeads * hs
	l := ir.LayerConfig{Heads: int(h.heads), KVHeads: int(h.kvHeads), HeadDim: int(hs), MLP: int(h.hidden)}
	cfg := ir.Config{
		Arch:      "llama",
		Vocab:     int(abs(h.vocab)),
		Hidden:    int(h.dim),
		Layers:    ir.UniformLayers(int(h.layers), l),
		NormEps:   NormEps,
		RopeTheta: RopeTheta,
		MaxSeq:    int(h.seqLen),
		Tied:      h.vocab > 0,
		BOS:       BOS,
		EOS:       EOS,
	}
	m := &ir.Model{Config: cfg, Tensors: map[string]*ir.Tensor{}, Source: name}

	// tensor slices one matrix out of a stacked array; perm, when set,
	// reorders its rows on first use.
	tensor := func(arr string, layer int64, shape []int64, perm []int) *ir.Tensor {
		n := 4 * shape[0]
		if len(shape) == 2 {
			n *= shape[1]
		}
		start := off[arr] + layer*n
		raw := data[start : start+n : start+n]
		ishape := make([]int, len(shape))
		for i, d := range shape {
			ishape[i] = int(d)
		}
		if perm == nil {
			return ir.NewTensor(ir.F32, ishape, raw)
		}
		return ir.LazyTensor(ir.F32, ishape, func() ([]byte, error) {
			p, err := ir.NewTensor(ir.F32, ishape, raw).PermuteRows(perm)
			if err != nil {
				return nil, err
			}
			return p.Bytes()
		})
	}
	m.Tensors[ir.NameEmbed] = tensor("token_embedding", 0, []int64{abs(h.vocab), h.dim}, nil)
	qPerm := ir.RopeToHalf(int(h.heads), int(hs))
	kPerm := ir.RopeToHalf(int(h.kvHeads), int(hs))
	for i := int64(0); i < h.layers; i++ {
		li := int(i)
		m.Tensors[ir.LayerName(li, ir.RoleAttnNorm)] = tensor("rms_att", i, []int64{h.dim}, nil)
		m.Tensors[ir.LayerName(li, ir.RoleQ)] = tensor("wq", i, []int64{h.dim, h.dim}, qPerm)
		m.Tensors[ir.LayerName(li, ir.RoleK)] = tensor("wk", i, []int64{kvDim, h.dim}, kPerm)
		m.Tensors[ir.LayerName(li, ir.RoleV)] = tensor("wv", i, []int64{kvDim, h.dim}, nil)
		m.Tensors[ir.LayerName(li, ir.RoleO)] = tensor("wo", i, []int64{h.dim, h.dim}, nil)
		m.Tensors[ir.LayerName(li, ir.RoleMLPNorm)] = tensor("rms_ffn", i, []int64{h.dim}, nil)
		m.Tensors[ir.LayerName(li, ir.RoleGate)] = tensor("w1", i, []int64{h.hidden, h.dim}, nil)
		m.Tensors[ir.LayerName(li, ir.RoleDown)] = tensor("w2", i, []int64{h.dim, h.hidden}, nil)
		m.Tensors[ir.LayerName(li, ir.RoleUp)] = tensor("w3", i, []int64{h.hidden, h.dim}, nil)
	}
	m.Tensors[ir.NameFinalNorm] = tensor("rms_final", 0, []int64{h.dim}, nil)
	if !cfg.Tied {
		m.Tensors[ir.NameClassifier] = tensor("wcls", 0, []int64{abs(h.vocab), h.dim}, nil)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("llama2c: %w", err)
	}
	return m, nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// parseLayout reads and checks the header, then places every array,
// failing on the first one that does not fit in data.
func parseLayout(data []byte) (header, []array, error) {
	var h header
	if len(data) < headerSize {
		return h, nil, fmt.Errorf("truncated: %d bytes, the header needs %d", len(data), headerSize)
	}
	if binary.LittleEndian.Uint32(data) == versionMagic {
		return h, nil, fmt.Errorf("this is a version 1 or 2 llama2.c export (magic \"ak42\"); only the legacy version 0 format is supported")
	}
	f := make([]int64, 7)
	for i := range f {
		f[i] = int64(int32(binary.LittleEndian.Uint32(data[4*i:])))
	}
	h = header{dim: f[0], hidden: f[1], layers: f[2], heads: f[3], kvHeads: f[4], vocab: f[5], seqLen: f[6]}
	for _, fl := range []struct {
		name  string
		v     int64
		index int
	}{{"dim", h.dim, 0}, {"hidden_dim", h.hidden, 1}, {"n_layers", h.layers, 2}, {"n_heads", h.heads, 3}, {"n_kv_heads", h.kvHeads, 4}, {"seq_len", h.seqLen, 6}} {
		if fl.v <= 0 {
			return h, nil, fmt.Errorf("header field %s = %d at offset %d must be positive", fl.name, fl.v, 4*fl.index)
		}
	}
	switch {
	case h.vocab == 0 || h.vocab == math.MinInt32:
		return h, nil, fmt.Errorf("header field vocab_size = %d at offset 20 is not a vocabulary size", h.vocab)
	case h.dim%h.heads != 0:
		return h, nil, fmt.Errorf("dim %d does not divide into %d heads", h.dim, h.heads)
	case h.heads%h.kvHeads != 0:
		return h, nil, fmt.Errorf("%d heads do not divide into %d KV heads", h.heads, h.kvHeads)
	case (h.dim/h.heads)%2 != 0:
		return h, nil, fmt.Errorf("head size %d (dim %d / %d heads) must be even for RoPE", h.dim/h.heads, h.dim, h.heads)
	}
	hs := h.dim / h.heads
	kvDim := h.kvHeads * hs
	vocab := abs(h.vocab)
	arrays := []array{
		{name: "token_embedding", dims: []int64{vocab, h.dim}},
		{name: "rms_att", dims: []int64{h.layers, h.dim}},
		{name: "wq", dims: []int64{h.layers, h.dim, h.dim}},
		{name: "wk", dims: []int64{h.layers, kvDim, h.dim}},
		{name: "wv", dims: []int64{h.layers, kvDim, h.dim}},
		{name: "wo", dims: []int64{h.layers, h.dim, h.dim}},
		{name: "rms_ffn", dims: []int64{h.layers, h.dim}},
		{name: "w1", dims: []int64{h.layers, h.hidden, h.dim}},
		{name: "w2", dims: []int64{h.layers, h.dim, h.hidden}},
		{name: "w3", dims: []int64{h.layers, h.hidden, h.dim}},
		{name: "rms_final", dims: []int64{h.dim}},
		{name: "freq_cis_real", dims: []int64{h.seqLen, hs / 2}},
		{name: "freq_cis_imag", dims: []int64{h.seqLen, hs / 2}},
	}
	if h.vocab < 0 {
		arrays = append(arrays, array{name: "wcls", dims: []int64{vocab, h.dim}})
	}
	off := int64(headerSize)
	size := int64(len(data))
	for i := range arrays {
		a := &arrays[i]
		a.off = off
		n, ok := byteSize(a.dims, size-off)
		if !ok {
			return h, nil, fmt.Errorf("truncated: %s %v at offset %d runs past the end of the %d-byte file", a.name, a.dims, off, size)
		}
		off += n
	}
	if off != size {
		return h, nil, fmt.Errorf("%d unexpected bytes after the last array, at offset %d (wrong vocab_size sign or not a legacy llama2.c checkpoint?)", size-off, off)
	}
	return h, arrays, nil
}

// byteSize is the float32 storage of dims, and false when it exceeds
// limit (checked before multiplying, so it never overflows).
func byteSize(dims []int64, limit int64) (int64, bool) {
	n := int64(4)
	for _, d := range dims {
		if d == 0 {
			return 0, true
		}
		if n > limit/d {
			return 0, false
		}
		n *= d
	}
	return n, n <= limit
}

// Save writes m as a legacy llama2.c checkpoint, converting every tensor
// to float32 and permuting Q and K rows to the interleaved RoPE order.
// The format has one size for all layers, derives head_size as dim /
// n_heads and fixes RMSNorm eps and RoPE theta (see the package comment),
// so a model it cannot express is an error rather than a file that
// computes something else. BOS and EOS are not stored; llama2.c's run.c
// assumes 1 and 2.
//
// The freq_cis arrays, which run.c skips, are written as export.py
// computes them in float32: freqs = 1/theta^(arange(0, hs, 2)/hs),
// outer(arange(seq_len), freqs), then cos and sin. (PyTorch's vectorized
// cos and sin are not correctly rounded, so a file exported by PyTorch may
// differ from this one in the last bit of some of these values.)
//
// The file is written to a temporary name and renamed into place.
func Save(m *ir.Model, path string) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("llama2c: saving %s: %w", path, err)
	}
	if err := checkExpressible(&m.Config); err != nil {
		return fmt.Errorf("llama2c: saving %s: %w", path, err)
	}
	f, err := fsutil.Create(path)
	if err != nil {
		return fmt.Errorf("llama2c: %w", err)
	}
	defer f.Abort()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := write(w, m); err != nil {
		return fmt.Errorf("llama2c: saving %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("llama2c: saving %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("llama2c: saving %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("llama2c: saving %s: %w", path, err)
	}
	return nil
}

// checkExpressible reports what of cfg the format cannot store.
func checkExpressible(c *ir.Config) error {
	l := c.Layers[0]
	for i, li := range c.Layers {
		if li != l {
			return fmt.Errorf("llama2.c checkpoints have one size for every layer; layer %d is %+v, layer 0 %+v", i, li, l)
		}
	}
	if l.MoE() {
		return fmt.Errorf("llama2.c has no mixture of experts; the model's layers have %d experts", l.Experts)
	}
	if l.Heads*l.HeadDim != c.Hidden {
		return fmt.Errorf("llama2.c derives head_size as dim/n_heads, but %d heads of %d do not make dim %d", l.Heads, l.HeadDim, c.Hidden)
	}
	// Formats that store these as float32 (GGUF) give float32(1e-5).
	if float32(c.NormEps) != float32(NormEps) {
		return fmt.Errorf("llama2.c fixes rms_norm_eps at %g; the model has %g", NormEps, c.NormEps)
	}
	if float32(c.RopeTheta) != float32(RopeTheta) {
		return fmt.Errorf("llama2.c fixes rope_theta at %g; the model has %g", RopeTheta, c.RopeTheta)
	}
	if c.RopeScaling != nil {
		return fmt.Errorf("llama2.c has no RoPE scaling; the model has %q", c.RopeScaling.Type)
	}
	if c.MaxSeq <= 0 {
		return fmt.Errorf("max sequence length %d must be positive", c.MaxSeq)
	}
	for _, v := range []int{c.Hidden, l.MLP, len(c.Layers), l.Heads, l.KVHeads, c.Vocab, c.MaxSeq} {
		if v > math.MaxInt32 {
			return fmt.Errorf("size %d does not fit the header's int32 fields", v)
		}
	}
	return nil
}

// write emits the whole checkpoint.
func write(w io.Writer, m *ir.Model) error {
	c := &m.Config
	l := c.Layers[0]
	vocab := int32(c.Vocab)
	if !c.Tied {
		vocab = -vocab
	}
	hdr := []int32{int32(c.Hidden), int32(l.MLP), int32(len(c.Layers)), int32(l.Heads), int32(l.KVHeads), vocab, int32(c.MaxSeq)}
	if err := binary.Write(w, binary.LittleEndian, hdr); err != nil {
		return err
	}
	put := func(name string, perm []int) error {
		t, err := m.Tensor(name)
		if err != nil {
			return err
		}
		if t, err = t.Convert(ir.F32); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if perm != nil {
			if t, err = t.PermuteRows(perm); err != nil {
				return fmt.Errorf("tensor %q: %w", name, err)
			}
		}
		raw, err := t.Bytes()
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		_, err = w.Write(raw)
		return err
	}
	if err := put(ir.NameEmbed, nil); err != nil {
		return err
	}
	qPerm := ir.RopeToInterleaved(l.Heads, l.HeadDim)
	kPerm := ir.RopeToInterleaved(l.KVHeads, l.HeadDim)
	for _, r := range []struct {
		role string
		perm []int
	}{
		{ir.RoleAttnNorm, nil}, {ir.RoleQ, qPerm}, {ir.RoleK, kPerm}, {ir.RoleV, nil}, {ir.RoleO, nil},
		{ir.RoleMLPNorm, nil}, {ir.RoleGate, nil}, {ir.RoleDown, nil}, {ir.RoleUp, nil},
	} {
		for i := range c.Layers {
			if err := put(ir.LayerName(i, r.role), r.perm); err != nil {
				return err
			}
		}
	}
	if err := put(ir.NameFinalNorm, nil); err != nil {
		return err
	}
	cos, sin := freqCis(c.MaxSeq, l.HeadDim)
	if _, err := w.Write(ir.EncodeFloat32(ir.F32, cos)); err != nil {
		return err
	}
	if _, err := w.Write(ir.EncodeFloat32(ir.F32, sin)); err != nil {
		return err
	}
	if !c.Tied {
		return put(ir.NameClassifier, nil)
	}
	return nil
}

// freqCis computes llama2.c model.py's precompute_freqs_cis in float32,
// one rounding per PyTorch operation; the explicit conversions keep the
// compiler from fusing a multiply and an add.
func freqCis(seqLen, headSize int) (cos, sin []float32) {
	half := headSize / 2
	freqs := make([]float32, half)
	for i := range freqs {
		e := float32(float32(2*i) / float32(headSize))
		freqs[i] = float32(1 / float32(math.Pow(RopeTheta, float64(e))))
	}
	cos = make([]float32, seqLen*half)
	sin = make([]float32, seqLen*half)
	for t := 0; t < seqLen; t++ {
		for i, f := range freqs {
			x := float64(float32(float32(t) * f))
			cos[t*half+i] = float32(math.Cos(x))
			sin[t*half+i] = float32(math.Sin(x))
		}
	}
	return cos, sin
}

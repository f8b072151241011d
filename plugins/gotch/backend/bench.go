package backend

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// BenchShape is a model architecture of the PyTorch peer's table
// (shared/bench/torch_peer.py): uniform layers, head_dim = Dim/Heads.
type BenchShape struct {
	Name                                  string
	Dim, Layers, Heads, KVHeads, FFN, Voc int
	Tied                                  bool
}

// BenchShapes are torch_peer.py's SHAPES.
var BenchShapes = []BenchShape{
	{Name: "stories260K", Dim: 64, Layers: 5, Heads: 8, KVHeads: 4, FFN: 172, Voc: 512, Tied: true},
	{Name: "stories15M", Dim: 288, Layers: 6, Heads: 6, KVHeads: 6, FFN: 768, Voc: 32000, Tied: true},
	{Name: "stories110M", Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFN: 2048, Voc: 32000, Tied: true},
	{Name: "llama-1B", Dim: 2048, Layers: 16, Heads: 32, KVHeads: 8, FFN: 8192, Voc: 32000, Tied: false},
}

// Workloads of the benchmark, as torch_peer.py names them.
const (
	BenchTrain      = "train"
	BenchForward    = "forward"
	BenchImportance = "importance"
	BenchDistill    = "distill"
)

// BenchOptions selects a benchmark run.
type BenchOptions struct {
	Shape    string
	Workload string
	Batch    int
	Seq      int
	// Seconds is the minimum timed duration; at least three steps run,
	// after two untimed warm-up steps, as in the peer.
	Seconds float64
	Seed    int64
}

// BenchResult is what one run measured. JSON names match the peer's.
type BenchResult struct {
	Shape      string  `json:"shape"`
	Workload   string  `json:"workload"`
	Batch      int     `json:"batch"`
	Seq        int     `json:"seq"`
	Params     int64   `json:"params"`
	Steps      int     `json:"steps"`
	Tokens     int64   `json:"tokens"`
	Seconds    float64 `json:"seconds"`
	TokensPerS float64 `json:"tokens_per_s"`
	// FLOPsPerStep counts matrix-multiply FLOPs of a step as whittle's CPU
	// benchmark does: FLOPsPerToken at the mean causal context (T+1)/2,
	// three times that for a training step, teacher forward plus student
	// training for distill.
	FLOPsPerStep float64 `json:"flops_per_step"`
	TFLOPS       float64 `json:"tflops"`
	Device       string  `json:"device"`
	Compute      string  `json:"compute"`
	Torch        string  `json:"torch"`
	PeakMemBytes int64   `json:"peak_mem_bytes,omitempty"`
	Loss         float64 `json:"loss,omitempty"`
}

func benchConfig(sh BenchShape) ir.Config {
	hd := sh.Dim / sh.Heads
	return ir.Config{Arch: "llama", Vocab: sh.Voc, Hidden: sh.Dim,
		Layers:  ir.UniformLayers(sh.Layers, ir.LayerConfig{Heads: sh.Heads, KVHeads: sh.KVHeads, HeadDim: hd, MLP: sh.FFN}),
		NormEps: 1e-5, RopeTheta: 10000, MaxSeq: 1 << 16, Tied: sh.Tied, BOS: 1, EOS: 2}
}

// Bench times a workload on random weights.
func (b *Backend) Bench(ctx context.Context, o BenchOptions) (*BenchResult, error) {
	var res *BenchResult
	err := b.do(ctx, func() error {
		var err error
		res, err = b.bench(ctx, o)
		return err
	})
	return res, err
}

func (b *Backend) bench(ctx context.Context, o BenchOptions) (*BenchResult, error) {
	var sh BenchShape
	for _, s := range BenchShapes {
		if s.Name == o.Shape {
			sh = s
		}
	}
	if sh.Name == "" {
		return nil, fmt.Errorf("bench: unknown shape %q", o.Shape)
	}
	if o.Batch <= 0 || o.Seq <= 0 {
		return nil, fmt.Errorf("bench: batch %d and seq %d must be positive", o.Batch, o.Seq)
	}
	torch.ManualSeed(o.Seed)
	cfg := benchConfig(sh)
	res := &BenchResult{Shape: sh.Name, Workload: o.Workload, Batch: o.Batch, Seq: o.Seq, Device: b.dev.String(),
		Compute: b.compute.String(), Torch: torch.Version()}
	fwdFLOPs := func(c ir.Config) float64 { return float64(c.FLOPsPerToken((o.Seq+1)/2)) * float64(o.Batch*o.Seq) }

	var student, teacher *model
	var err error
	switch o.Workload {
	case BenchTrain, BenchForward, BenchImportance:
		store := torch.Float32
		if o.Workload != BenchTrain && b.compute == torch.BFloat16 {
			store = torch.BFloat16
		}
		if student, err = b.randomModel(cfg, store); err != nil {
			return nil, err
		}
		res.FLOPsPerStep = fwdFLOPs(cfg)
		if o.Workload == BenchTrain {
			res.FLOPsPerStep *= 3
		}
	case BenchDistill:
		// A frozen teacher of the shape and a student with 3/4 of its hidden
		// and MLP widths, as the peer builds them.
		sc := cfg.Clone()
		sc.Hidden = sh.Dim * 3 / 4 / sh.Heads * sh.Heads
		sc.Layers = ir.UniformLayers(sh.Layers, ir.LayerConfig{Heads: sh.Heads, KVHeads: sh.KVHeads, HeadDim: sc.Hidden / sh.Heads, MLP: sh.FFN * 3 / 4})
		tstore := torch.Float32
		if b.compute == torch.BFloat16 {
			tstore = torch.BFloat16
		}
		if teacher, err = b.randomModel(cfg, tstore); err != nil {
			return nil, err
		}
		defer teacher.free()
		if student, err = b.randomModel(sc, torch.Float32); err != nil {
			return nil, err
		}
		res.FLOPsPerStep = fwdFLOPs(cfg) + 3*fwdFLOPs(sc)
	default:
		return nil, fmt.Errorf("bench: unknown workload %q (want train, forward, importance or distill)", o.Workload)
	}
	defer student.free()
	res.Params = student.cfg.Params().Total

	// Random tokens, fixed for the run; targets are the next tokens.
	n, t := o.Batch, o.Seq
	hs := torch.NewScope()
	defer hs.Free()
	tok := hs.Int64s(hs.Randint(int64(cfg.Vocab), []int64{int64(n), int64(t)}, torch.CPU))
	if err := hs.Err(); err != nil {
		return nil, err
	}
	ids := make([]int32, n*t)
	for i := range ids {
		ids[i] = -1
		if (i+1)%t != 0 {
			ids[i] = int32(tok[i+1])
		}
	}

	var step func() (float64, error)
	switch o.Workload {
	case BenchTrain, BenchDistill:
		obj := objective{}
		if teacher != nil {
			obj = objective{alpha: 1}
		}
		s := torch.NewScope()
		defer s.Free()
		var ws, m, v []torch.Tensor
		var wd []float64
		for _, name := range student.names {
			w := student.w[name]
			s.SetRequiresGrad(w, true)
			ws = append(ws, w)
			m = append(m, s.ZerosLike(w))
			v = append(v, s.ZerosLike(w))
			wd = append(wd, 0)
		}
		if err := s.Err(); err != nil {
			return nil, err
		}
		adamT := 0
		step = func() (float64, error) {
			out, err := b.trainMicro(student, teacher, nil, tok, ids, n, t, obj, 1)
			if err != nil {
				return 0, err
			}
			ss := torch.NewScope()
			defer ss.Free()
			grads := make([]torch.Tensor, len(ws))
			for i, w := range ws {
				grads[i] = ss.Grad(w)
			}
			adamT++
			ss.AdamWStep(ws, grads, m, v, wd, int64(adamT), 1e-4, 0.9, 0.999, 1e-8, 1, b.fused)
			ss.ZeroGrad(ws)
			return out.loss, ss.Err()
		}
	case BenchForward:
		step = func() (float64, error) {
			s := torch.NewScope()
			defer s.Free()
			x := s.To(s.FromInt64(tok, int64(n), int64(t)), b.dev)
			h, err := b.forward(s, student, x, n, t, fwdOpts{})
			if err != nil {
				return 0, err
			}
			cdt := b.computeDType(student)
			w := student.weight(s, student.classifier(), cdt)
			chunk := int64(max(256, (32<<20)/cfg.Vocab))
			for r0 := int64(0); r0 < int64(n*t); r0 += chunk {
				cs := torch.NewScope()
				logits(cs, cs.Narrow(h, 0, r0, min(chunk, int64(n*t)-r0)), w, cdt)
				err := cs.Err()
				cs.Free()
				if err != nil {
					return 0, err
				}
			}
			return 0, s.Err()
		}
	case BenchImportance:
		step = func() (float64, error) { return 0, b.benchStats(student, tok, n, t) }
	}
	for i := 0; i < 2; i++ {
		if _, err := step(); err != nil {
			return nil, fmt.Errorf("bench warm-up: %w", err)
		}
	}
	torch.Synchronize(b.dev)
	torch.MaxMemory(b.dev)
	began := time.Now()
	for res.Steps < 3 || time.Since(began).Seconds() < o.Seconds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l, err := step()
		if err != nil {
			return nil, fmt.Errorf("bench step %d: %w", res.Steps+1, err)
		}
		res.Loss = l
		res.Steps++
	}
	torch.Synchronize(b.dev)
	res.Seconds = time.Since(began).Seconds()
	res.PeakMemBytes = torch.MaxMemory(b.dev)
	res.Tokens = int64(res.Steps * n * t)
	res.TokensPerS = float64(res.Tokens) / res.Seconds
	res.TFLOPS = res.FLOPsPerStep * float64(res.Steps) / res.Seconds / 1e12
	if math.IsNaN(res.Loss) {
		return nil, fmt.Errorf("bench: loss is NaN")
	}
	return res, nil
}

// benchStats runs one forward collecting the Minitron statistics, as
// Stats does per batch.
func (b *Backend) benchStats(m *model, tok []int64, n, t int) error {
	acc, err := b.newStatsAcc(&m.cfg, true, true)
	if err != nil {
		return err
	}
	defer acc.free()
	s := torch.NewScope()
	defer s.Free()
	x := s.To(s.FromInt64(tok, int64(n), int64(t)), b.dev)
	_, err = b.forward(s, m, x, n, t, fwdOpts{hook: acc.add})
	return firstErr(err, s.Err())
}

// randomModel builds a model of cfg on the device with weights drawn as
// the peer's nn.Linear defaults are scaled: N(0, 0.02²), norms 1.
func (b *Backend) randomModel(cfg ir.Config, store torch.DType) (*model, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	m := &model{id: "bench", cfg: cfg, store: store, w: map[string]torch.Tensor{}, rope: map[ropeKey]ropeTab{}}
	names, shapes := cfg.ExpectedShapes()
	for _, name := range names {
		s := torch.NewScope()
		shape := make([]int64, len(shapes[name]))
		for i, d := range shapes[name] {
			shape[i] = int64(d)
		}
		var t torch.Tensor
		if len(shape) == 1 {
			t = s.Full(shape, 1, store, b.dev)
		} else {
			t = s.ToDType(s.Scale(s.Randn(shape, torch.Float32, b.dev), 0.02), store)
		}
		if err := s.Err(); err != nil {
			s.Free()
			m.free()
			return nil, fmt.Errorf("bench weight %s: %w", name, err)
		}
		m.w[name] = s.Keep(t)
		s.Free()
		m.names = append(m.names, name)
	}
	return m, nil
}

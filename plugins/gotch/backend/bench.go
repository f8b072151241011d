package backend

import (
	"context"
	"fmt"
	"math"
	"time"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

var _ api.Benchmarker = (*Backend)(nil)

// Bench times a workload of the PyTorch peer on random weights
// (`whittle bench --backend gotch`).
func (b *Backend) Bench(ctx context.Context, req bench.Request) (*bench.Result, error) {
	if err := req.Check(); err != nil {
		return nil, err
	}
	var res *bench.Result
	err := b.do(ctx, func() error {
		var err error
		res, err = b.bench(ctx, req)
		return err
	})
	return res, err
}

func (b *Backend) bench(ctx context.Context, o bench.Request) (*bench.Result, error) {
	sh, err := bench.LookupShape(o.Shape)
	if err != nil {
		return nil, err
	}
	torch.ManualSeed(int64(o.Seed))
	cfg := sh.Config(o.Seq)
	res := &bench.Result{Shape: sh.Name, Workload: o.Workload, Batch: o.Batch, Seq: o.Seq, Device: b.dev.String(),
		Kernel: fmt.Sprintf("libtorch %s, %s matrix products", torch.Version(), b.compute), Threads: torch.Threads()}
	if res.FLOPsPerStep, err = bench.StepFLOPs(sh, o.Workload, o.Batch, o.Seq); err != nil {
		return nil, err
	}

	var student, teacher *model
	switch o.Workload {
	case bench.Train, bench.Forward, bench.Importance:
		store := torch.Float32
		if o.Workload != bench.Train && b.compute == torch.BFloat16 {
			store = torch.BFloat16
		}
		if student, err = b.randomModel(cfg, store); err != nil {
			return nil, err
		}
	case bench.Distill:
		// A frozen teacher of the shape and a student with 3/4 of its hidden
		// and MLP widths, as the peer builds them.
		sc := sh.Student().Config(o.Seq)
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
	case bench.Train, bench.Distill:
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
	case bench.Forward:
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
				student.logits(cs, cs.Narrow(h, 0, r0, min(chunk, int64(n*t)-r0)), w, cdt)
				err := cs.Err()
				cs.Free()
				if err != nil {
					return 0, err
				}
			}
			return 0, s.Err()
		}
	case bench.Importance:
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
	res.Finish(res.Steps, time.Since(began).Seconds())
	res.PeakDeviceMemBytes = torch.MaxMemory(b.dev)
	res.PeakRSSBytes, _ = bench.PeakRSS()
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

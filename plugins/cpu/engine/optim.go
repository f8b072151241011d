package engine

import (
	"fmt"
	"math"
	"slices"

	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

// Schedule is the learning rate per optimizer step: a linear warm-up to
// Peak over the first Warmup steps, then a cosine decay from Peak to Min
// that reaches Min at step Total and stays there.
type Schedule struct {
	Peak, Min     float64
	Warmup, Total int
}

// At is the learning rate of step (0-based).
func (s Schedule) At(step int) float64 {
	if step < s.Warmup {
		return s.Peak * float64(step+1) / float64(s.Warmup)
	}
	if s.Total <= s.Warmup {
		return s.Peak
	}
	progress := min(1, float64(step-s.Warmup)/float64(s.Total-s.Warmup))
	return s.Min + 0.5*(s.Peak-s.Min)*(1+math.Cos(math.Pi*progress))
}

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter), updating
// exactly as PyTorch's torch.optim.AdamW does:
//
//	θ ← θ·(1 − lr·λ)
//	m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²
//	θ ← θ − lr/(1−β₁ᵗ) · m / (sqrt(v)/sqrt(1−β₂ᵗ) + ε)
//
// Weight decay applies to matrices (embedding, projections, classifier),
// not to norm weights or biases. Moments and arithmetic are float32, as in
// PyTorch.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	// M and V are the moment estimates, laid out like Params.Flat (nil
	// while every parameter is frozen); LoRAM and LoRAV those of an
	// attached LoRA's Flat; T is the number of steps taken. Together they
	// are the optimizer state.
	M, V         []float32
	LoRAM, LoRAV []float32
	T            int
}

// NewAdamW returns an optimizer with the given hyperparameters.
func NewAdamW(beta1, beta2, eps, weightDecay float64) (*AdamW, error) {
	switch {
	case !(beta1 >= 0 && beta1 < 1), !(beta2 >= 0 && beta2 < 1):
		return nil, fmt.Errorf("engine: AdamW betas (%g, %g) must lie in [0, 1)", beta1, beta2)
	case !(eps > 0):
		return nil, fmt.Errorf("engine: AdamW epsilon %g must be positive", eps)
	case !(weightDecay >= 0):
		return nil, fmt.Errorf("engine: AdamW weight decay %g must not be negative", weightDecay)
	}
	return &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay}, nil
}

// Step updates the trainable parameters of e from e.G at learning rate lr,
// with the gradients multiplied by gradScale (the clipping factor, or 1).
func (o *AdamW) Step(e *Engine, lr, gradScale float64) error {
	if e.G == nil {
		return fmt.Errorf("engine: AdamW step on an inference engine")
	}
	if o.M == nil && slices.Contains(e.frozen, false) {
		o.M = make([]float32, len(e.P.flat))
		o.V = make([]float32, len(e.P.flat))
	}
	if o.M != nil && (len(o.M) != len(e.P.flat) || len(o.V) != len(o.M)) {
		return fmt.Errorf("engine: optimizer state holds %d values, the model %d", len(o.M), len(e.P.flat))
	}
	var lora *LoRA
	if e.lora != nil && e.lora.gOK {
		lora = e.lora.l
		if o.LoRAM == nil {
			o.LoRAM = make([]float32, len(lora.flat))
			o.LoRAV = make([]float32, len(lora.flat))
		}
		if len(o.LoRAM) != len(lora.flat) || len(o.LoRAV) != len(lora.flat) {
			return fmt.Errorf("engine: optimizer state holds %d adapter values, the LoRA %d", len(o.LoRAM), len(lora.flat))
		}
	}
	o.T++
	bc1 := 1 - math.Pow(o.Beta1, float64(o.T))
	bc2 := math.Sqrt(1 - math.Pow(o.Beta2, float64(o.T)))
	stepSize := lr / bc1
	for i, t := range e.P.tensors {
		if e.frozen[i] {
			continue
		}
		decay := 1.0
		if len(t.Shape) == 2 {
			decay = 1 - lr*o.WeightDecay
		}
		p := t.Data
		o.update(e.threads, p, e.G.tensors[i].Data, o.M[t.Offset:t.Offset+len(p)], o.V[t.Offset:t.Offset+len(p)], stepSize, bc2, decay, gradScale)
	}
	if lora != nil {
		// Adapters are matrices: they are decayed, as PEFT's are.
		o.update(e.threads, lora.flat, lora.grad, o.LoRAM, o.LoRAV, stepSize, bc2, 1-lr*o.WeightDecay, gradScale)
	}
	return nil
}

// update applies one AdamW step to parameters p with gradients g and
// moments m, v.
func (o *AdamW) update(threads int, p, g, m, v []float32, stepSize, bc2, decay, gradScale float64) {
	th := threads
	if len(p) < 1<<14 {
		th = 1 // not worth a goroutine
	}
	// float32 arithmetic as in PyTorch; hyperparameters rounded once.
	// 1−β is formed in float64: β₂ = 0.999 rounded to float32 first
	// would lose five digits of 1−β₂.
	b1, b2, c1, c2 := float32(o.Beta1), float32(o.Beta2), float32(1-o.Beta1), float32(1-o.Beta2)
	invBC2, step, dec, gs, eps := float32(1/bc2), float32(stepSize), float32(decay), float32(gradScale), float32(o.Eps)
	parallel.For(th, len(p), func(lo, hi int) {
		p, g, m, v := p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
		g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
		for j := range p {
			gj := g[j] * gs
			mj := b1*m[j] + c1*gj
			vj := b2*v[j] + c2*gj*gj
			m[j], v[j] = mj, vj
			p[j] = p[j]*dec - step*mj/(float32(math.Sqrt(float64(vj)))*invBC2+eps)
		}
	})
}

// GradNorm is the L2 norm of the trainable parameters' gradients (an
// attached LoRA's included). Partial sums over fixed blocks are added in
// order, so it does not depend on the thread count.
func (e *Engine) GradNorm() float64 {
	if e.G == nil {
		return 0
	}
	var total float64
	for i, t := range e.G.tensors {
		if !e.frozen[i] {
			total += sumSquares(e.threads, t.Data)
		}
	}
	if e.lora != nil && e.lora.gOK {
		total += sumSquares(e.threads, e.lora.l.grad)
	}
	return math.Sqrt(total)
}

// sumSquares is Σ g², from partial sums over fixed blocks added in order.
func sumSquares(threads int, g []float32) float64 {
	const block = 1 << 14
	parts := make([]float64, (len(g)+block-1)/block)
	parallel.For(threads, len(parts), func(lo, hi int) {
		for b := lo; b < hi; b++ {
			var s float64
			for _, v := range g[b*block : min(len(g), (b+1)*block)] {
				s += float64(v) * float64(v)
			}
			parts[b] = s
		}
	})
	var total float64
	for _, s := range parts {
		total += s
	}
	return total
}

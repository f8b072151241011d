package backend

import (
	"fmt"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/plugins/cpu/engine"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

type loraKey struct {
	layer int
	role  string
}

// loraSet is low-rank adapters being trained (Hu et al., 2021): an adapted
// projection computes x·Wᵀ + (α/r)·(x·Aᵀ)·Bᵀ. A and B are float32 on the
// device. They start as the CPU backend's do (engine.NewLoRA with the
// request's seed: A uniform, B zero), so both backends train the same
// adapters; like the CPU backend's, they leave the expert matrices of
// mixture-of-experts layers alone (those layers have no dense gate, up,
// down to adapt).
type loraSet struct {
	scale float64
	keys  []loraKey // layer, then role order: the parameter order
	a, b  map[loraKey]torch.Tensor
	s     *torch.Scope
}

func (b *Backend) newLoRA(cfg ir.Config, c api.ResolvedLoRA, seed int64) (*loraSet, error) {
	init, err := engine.NewLoRA(cfg, engine.LoRAConfig{Rank: c.Rank, Alpha: c.Alpha, Targets: c.Roles}, uint64(seed))
	if err != nil {
		return nil, err
	}
	set := &loraSet{scale: float64(init.Scale()), a: map[loraKey]torch.Tensor{}, b: map[loraKey]torch.Tensor{}, s: torch.NewScope()}
	for _, ad := range init.Adapters {
		k := loraKey{ad.Layer, ad.Role}
		set.keys = append(set.keys, k)
		set.a[k] = set.s.Copy(set.s.FromFloat32(ad.A, int64(c.Rank), int64(ad.In)), b.dev, torch.Float32)
		set.b[k] = set.s.Copy(set.s.FromFloat32(ad.B, int64(ad.Out), int64(c.Rank)), b.dev, torch.Float32)
	}
	if err := set.s.Err(); err != nil {
		set.free()
		return nil, err
	}
	return set, nil
}

func (a *loraSet) free() {
	if a != nil {
		a.s.Free()
	}
}

// params lists the adapters' tensors with checkpoint names.
func (a *loraSet) params() ([]string, []torch.Tensor) {
	var names []string
	var ts []torch.Tensor
	for _, k := range a.keys {
		base := fmt.Sprintf("lora.%d.%s", k.layer, k.role)
		names = append(names, base+".A", base+".B")
		ts = append(ts, a.a[k], a.b[k])
	}
	return names, ts
}

// apply adds the adapter of (l, role), if any, to the projection y of in.
func (a *loraSet) apply(s *torch.Scope, l int, role string, in, y torch.Tensor, cdt torch.DType) torch.Tensor {
	k := loraKey{l, role}
	A, ok := a.a[k]
	if !ok {
		return y
	}
	B := a.b[k]
	if cdt != torch.Float32 {
		A, B = s.ToDType(A, cdt), s.ToDType(B, cdt)
	}
	u := s.Linear(s.Linear(in, A), B)
	return s.Add(y, s.Scale(u, a.scale))
}

// merge adds (α/r)·B·A into the model's weights.
func (a *loraSet) merge(m *model) error {
	s := torch.NewScope()
	defer s.Free()
	prev := torch.SetGradEnabled(false)
	defer torch.SetGradEnabled(prev)
	for _, k := range a.keys {
		name := projName(m.cfg.LayerTensors(k.layer), k.role)
		w, ok := m.w[name]
		if !ok {
			return fmt.Errorf("LoRA adapter of layer %d %s: model has no tensor %q", k.layer, k.role, name)
		}
		s.AddInPlace(w, s.ToDType(s.Scale(s.Matmul(a.b[k], a.a[k]), a.scale), w.DType()))
	}
	m.hash = ""
	return s.Err()
}

// projName is the tensor an adapter of role adapts in a layer named lt.
func projName(lt ir.LayerTensors, role string) string {
	switch role {
	case ir.RoleQ:
		return lt.Q
	case ir.RoleK:
		return lt.K
	case ir.RoleV:
		return lt.V
	case ir.RoleO:
		return lt.O
	case ir.RoleGate:
		return lt.Gate
	case ir.RoleUp:
		return lt.Up
	case ir.RoleDown:
		return lt.Down
	}
	return ""
}

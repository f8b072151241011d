package backend

import (
	"context"
	"fmt"
	"math"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/tokenizer"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// model is one loaded model: its weights on the device, by canonical name.
type model struct {
	id    api.ModelID
	dir   string
	cfg   ir.Config
	tok   *tokenizer.Tokenizer
	names []string // canonical order (a tied classifier is not listed)
	w     map[string]torch.Tensor
	store torch.DType // float32 master weights, or bfloat16 for inference only
	hash  string      // sha256 of the float32 weights, "" until needed
	rope  map[ropeKey]ropeTab
}

type ropeKey struct {
	headDim, t int
	dt         torch.DType
}

// ropeTab holds cos and sin of every position for one head size, [T, hd],
// each value repeated for both halves of the head (Hugging Face's order).
type ropeTab struct{ cos, sin torch.Tensor }

func (m *model) free() {
	for _, t := range m.w {
		torch.Free(t)
	}
	for _, r := range m.rope {
		torch.Free(r.cos)
		torch.Free(r.sin)
	}
	m.w, m.rope = nil, nil
}

// classifier is the output projection's name (the embedding when tied).
func (m *model) classifier() string {
	if m.cfg.Tied {
		return ir.NameEmbed
	}
	return ir.NameClassifier
}

// Load reads a Hugging Face directory onto the device.
func (b *Backend) Load(ctx context.Context, req api.LoadRequest) (api.ModelID, error) {
	var id api.ModelID
	err := b.do(ctx, func() error {
		im, err := hf.Load(req.Dir)
		if err != nil {
			return fmt.Errorf("gotch: load %s: %w", req.Dir, err)
		}
		defer im.Close()
		store := torch.Float32
		if !req.Trainable && b.compute == torch.BFloat16 {
			store = torch.BFloat16
		}
		m, err := b.upload(im, store)
		if err != nil {
			return fmt.Errorf("gotch: load %s: %w", req.Dir, err)
		}
		b.next++
		m.id = api.ModelID(fmt.Sprintf("m%d", b.next))
		m.dir = req.Dir
		b.models[m.id] = m
		id = m.id
		b.log.Info("model loaded", "model", id, "dir", req.Dir, "layers", len(m.cfg.Layers), "hidden", m.cfg.Hidden,
			"params", m.cfg.Params().Total, "dtype", store, "device", b.dev)
		return nil
	})
	return id, err
}

// upload copies every tensor of im to the device as store.
func (b *Backend) upload(im *ir.Model, store torch.DType) (*model, error) {
	if err := im.Validate(); err != nil {
		return nil, err
	}
	m := &model{cfg: im.Config.Clone(), tok: im.Tokenizer, store: store, w: map[string]torch.Tensor{}, rope: map[ropeKey]ropeTab{}}
	for _, name := range im.TensorNames() {
		t, err := im.Tensor(name)
		if err != nil {
			m.free()
			return nil, err
		}
		dev, err := b.tensorToDevice(t, store)
		if err != nil {
			m.free()
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		m.w[name] = dev
		m.names = append(m.names, name)
	}
	if !m.cfg.Tied && !m.w[ir.NameClassifier].Defined() {
		m.free()
		return nil, fmt.Errorf("no %s and the configuration does not tie it to the embedding", ir.NameClassifier)
	}
	return m, nil
}

// tensorToDevice uploads an IR tensor, converting it to dt on the device.
func (b *Backend) tensorToDevice(t *ir.Tensor, dt torch.DType) (torch.Tensor, error) {
	shape := make([]int64, len(t.Shape))
	for i, d := range t.Shape {
		shape[i] = int64(d)
	}
	s := torch.NewScope()
	defer s.Free()
	var host torch.Tensor
	switch t.DType {
	case ir.F32, ir.BF16, ir.F16:
		raw, err := t.Bytes()
		if err != nil {
			return torch.Tensor{}, err
		}
		src := map[ir.DType]torch.DType{ir.F32: torch.Float32, ir.BF16: torch.BFloat16, ir.F16: torch.Float16}[t.DType]
		host = s.FromBytes(raw, src, shape...)
	default:
		v, err := t.Float32()
		if err != nil {
			return torch.Tensor{}, err
		}
		host = s.FromFloat32(v, shape...)
	}
	out := s.Copy(host, b.dev, dt)
	if err := s.Err(); err != nil {
		return torch.Tensor{}, err
	}
	return s.Keep(out), nil
}

// Save writes a model as a Hugging Face directory; tensors are copied off
// the device one at a time as the writer reaches them.
func (b *Backend) Save(ctx context.Context, req api.SaveRequest) error {
	return b.do(ctx, func() error {
		m, err := b.model(req.Model)
		if err != nil {
			return err
		}
		dt := ir.F32
		if req.DType != "" {
			if dt, err = ir.ParseDType(req.DType); err != nil {
				return fmt.Errorf("gotch: save %s: %w", req.Model, err)
			}
		}
		im := &ir.Model{Config: m.cfg.Clone(), Tensors: map[string]*ir.Tensor{}, Tokenizer: m.tok, Source: m.dir}
		for _, name := range m.names {
			t := m.w[name]
			shape := t.Shape()
			dims := make([]int, len(shape))
			for i, d := range shape {
				dims[i] = int(d)
			}
			im.Tensors[name] = ir.LazyTensor(dt, dims, func() ([]byte, error) {
				s := torch.NewScope()
				defer s.Free()
				v := s.Float32s(t)
				if err := s.Err(); err != nil {
					return nil, fmt.Errorf("tensor %s: %w", name, err)
				}
				return ir.EncodeFloat32(dt, v), nil
			})
		}
		if err := hf.Save(im, req.Dir, hf.SaveOptions{}); err != nil {
			return fmt.Errorf("gotch: save %s to %s: %w", req.Model, req.Dir, err)
		}
		return nil
	})
}

// Release frees a model.
func (b *Backend) Release(ctx context.Context, id api.ModelID) error {
	return b.do(ctx, func() error {
		m, err := b.model(id)
		if err != nil {
			return err
		}
		m.free()
		delete(b.models, id)
		return nil
	})
}

// ropeTable returns (building once) the RoPE table of a head size for t
// positions, in dtype dt on the device: computed in float64, rounded once,
// as Hugging Face casts its float32 table to the activations' dtype.
func (b *Backend) ropeTable(m *model, headDim, t int, dt torch.DType) (ropeTab, error) {
	k := ropeKey{headDim, t, dt}
	if r, ok := m.rope[k]; ok {
		return r, nil
	}
	half := headDim / 2
	inv := m.cfg.RopeInvFreq(headDim)
	cos := make([]float32, t*headDim)
	sin := make([]float32, t*headDim)
	for pos := 0; pos < t; pos++ {
		for i := 0; i < half; i++ {
			a := float64(pos) * inv[i]
			c, sn := float32(math.Cos(a)), float32(math.Sin(a))
			cos[pos*headDim+i], cos[pos*headDim+half+i] = c, c
			sin[pos*headDim+i], sin[pos*headDim+half+i] = sn, sn
		}
	}
	s := torch.NewScope()
	defer s.Free()
	r := ropeTab{
		cos: s.Copy(s.FromFloat32(cos, int64(t), int64(headDim)), b.dev, dt),
		sin: s.Copy(s.FromFloat32(sin, int64(t), int64(headDim)), b.dev, dt),
	}
	if err := s.Err(); err != nil {
		return ropeTab{}, err
	}
	s.Keep(r.cos)
	s.Keep(r.sin)
	m.rope[k] = r
	return r, nil
}

// Package ir is whittle's intermediate representation of a model: a
// Llama-family decoder's architecture, its named tensors (lazily loaded),
// the axes that pruning cuts along, and the transformations on them.
package ir

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/whittle-ml/whittle/ir/graph"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

// Model is an architecture plus its weights. Tensors are immutable once in
// a Model: transformations build new tensors and share the untouched ones.
type Model struct {
	Config  Config
	Tensors map[string]*Tensor
	// Tokenizer is the vocabulary the model was trained with, when the
	// source format carries one (GGUF) or one was attached.
	Tokenizer *tokenizer.Tokenizer
	// Source describes where the model came from, for messages.
	Source string

	closers []io.Closer
}

// AddCloser registers a resource (a memory map) that Close releases.
func (m *Model) AddCloser(c io.Closer) { m.closers = append(m.closers, c) }

// Close releases memory maps. Tensors of this model (and of models derived
// from it that still share its tensors) must not be used afterwards.
func (m *Model) Close() error {
	var errs []error
	for _, c := range m.closers {
		errs = append(errs, c.Close())
	}
	m.closers = nil
	return errors.Join(errs...)
}

// Tensor returns a tensor by canonical name.
func (m *Model) Tensor(name string) (*Tensor, error) {
	t, ok := m.Tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s: model has no tensor %q", m.Source, name)
	}
	return t, nil
}

// ConfigOnly reports a model read from its configuration alone, with no
// weights (a Hugging Face config.json): it can be inspected and planned,
// not run.
func (m *Model) ConfigOnly() bool { return len(m.Tensors) == 0 }

// Classifier returns the output projection, which is the embedding when tied.
func (m *Model) Classifier() (*Tensor, error) {
	if m.Config.Tied {
		return m.Tensor(NameEmbed)
	}
	return m.Tensor(NameClassifier)
}

// Validate is shape inference over the whole model: the config is
// consistent and every tensor it implies exists with the implied shape,
// and no other tensor is present.
func (m *Model) Validate() error {
	if err := m.Config.Check(); err != nil {
		return fmt.Errorf("%s: %w", m.Source, err)
	}
	g, err := m.Config.Graph()
	if err != nil {
		return fmt.Errorf("%s: %w", m.Source, err)
	}
	names, shapes := paramShapes(g)
	for _, n := range names {
		t, ok := m.Tensors[n]
		if !ok {
			return fmt.Errorf("%s: missing tensor %q (shape %v)", m.Source, n, shapes[n])
		}
		if !slices.Equal(t.Shape, shapes[n]) {
			return fmt.Errorf("%s: tensor %q has shape %v, the architecture needs %v", m.Source, n, t.Shape, shapes[n])
		}
	}
	if len(m.Tensors) != len(names) {
		var extra []string
		for n := range m.Tensors {
			if _, ok := shapes[n]; !ok {
				extra = append(extra, n)
			}
		}
		sort.Strings(extra)
		return fmt.Errorf("%s: unexpected tensors %v", m.Source, extra)
	}
	if m.Tokenizer != nil && m.Tokenizer.Size() != m.Config.Vocab {
		return fmt.Errorf("%s: tokenizer has %d pieces, model vocabulary is %d", m.Source, m.Tokenizer.Size(), m.Config.Vocab)
	}
	return nil
}

// TensorNames lists the model's tensors in canonical file order.
func (m *Model) TensorNames() []string {
	names, _ := m.Config.ExpectedShapes()
	out := names[:0:0]
	for _, n := range names {
		if _, ok := m.Tensors[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// derive copies the model's header around new config and tensors.
func (m *Model) derive(cfg Config, tensors map[string]*Tensor) *Model {
	return &Model{Config: cfg, Tensors: tensors, Tokenizer: m.Tokenizer, Source: m.Source}
}

// ParamCounts breaks a model's parameters down by component.
type ParamCounts struct {
	Embedding  int64 `json:"embedding"`
	Attention  int64 `json:"attention"`
	MLP        int64 `json:"mlp"`
	Norms      int64 `json:"norms"`
	Classifier int64 `json:"classifier"` // 0 when tied to the embedding
	Total      int64 `json:"total"`
	// Active is what one token computes with: Total less the routed
	// experts it is not sent to (num_experts − num_experts_per_tok per
	// mixture-of-experts layer); Total for a dense model.
	Active int64 `json:"active"`
}

// Params counts parameters from the config alone (no tensor is read), with
// tied weights counted once. The breakdown follows the graph: each op's
// parameters go to its kind's component (embedding, norms, LM head), and a
// layer's linears to attention (q, k, v and o projections, biases
// included) or MLP by their op names.
func (c *Config) Params() ParamCounts {
	var p ParamCounts
	g, err := c.Graph()
	if err != nil {
		// The builders size every dimension from the config, so a graph
		// only fails on a config Check rejects; like ExpectedShapes, such
		// a config has no parameters to count.
		return p
	}
	seen := make(map[*graph.Param]bool, len(g.Params))
	for _, op := range g.Ops {
		var n int64
		for _, w := range op.Params {
			if !seen[w] { // a tied LM head reads the embedding's table
				seen[w] = true
				n += w.Shape.Elements()
			}
		}
		switch op.Kind {
		case graph.KindEmbedding:
			p.Embedding += n
		case graph.KindRMSNorm:
			p.Norms += n
		case graph.KindLMHead:
			p.Classifier += n
		case graph.KindLinear:
			if attentionOps[op.Name] {
				p.Attention += n
			} else {
				p.MLP += n
			}
		case graph.KindMoE:
			p.MLP += n
			p.Active -= idleExperts(op)
		}
	}
	p.Total = p.Embedding + p.Attention + p.MLP + p.Norms + p.Classifier
	p.Active += p.Total
	return p
}

// idleExperts is the parameters of the routed experts of a
// mixture-of-experts op that a token is not sent to.
func idleExperts(op *graph.Op) int64 {
	experts := int64(op.Params[1].Shape[0].Size())
	var all int64
	for _, w := range op.Params[1:4] { // the stacked gate, up and down
		all += w.Shape.Elements()
	}
	return all / experts * (experts - int64(op.Attrs.(graph.MoEAttrs).TopK))
}

// FLOPsPerToken is the forward matmul cost of one token at context length
// ctx (2 FLOPs per multiply-add; attention scores counted at ctx): 2·in·out
// for each linear and the LM head (tied or not), and for each attention
// 2·ctx·q_dim for the scores plus as much for mixing the values; a
// mixture of experts counts its router, the experts a token is sent to
// and the shared expert. Biases, norms and activations are not counted.
func (c *Config) FLOPsPerToken(ctx int) int64 {
	g, err := c.Graph()
	if err != nil {
		return 0 // see Params
	}
	var f int64
	for _, op := range g.Ops {
		switch op.Kind {
		case graph.KindLinear, graph.KindLMHead:
			f += 2 * op.Params[0].Shape.Elements() // the [out, in] weight
		case graph.KindAttention:
			f += 2 * 2 * int64(ctx) * int64(op.Inputs[0].Shape[1].Size())
		case graph.KindMoE:
			var n int64
			for _, w := range op.Params {
				n += w.Shape.Elements()
			}
			f += 2 * (n - idleExperts(op))
		}
	}
	return f
}

// attentionOps are the graph's attention linears, by op name.
var attentionOps = map[string]bool{"q_proj": true, "k_proj": true, "v_proj": true, "o_proj": true}

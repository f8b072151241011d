// Package sdk is what a third party imports to extend whittle with a
// plugin: pass kinds that recipes can use, a compute backend, or both. A
// plugin is a separate program, started by whittle through HashiCorp's
// go-plugin and spoken to over gRPC; this package hides all of that.
//
// A pass plugin:
//
//	type Config struct {
//		Model   sdk.Ref  `hcl:"model"`
//		Samples *int     `hcl:"samples,optional" doc:"sequences to score"`
//	}
//
//	func main() {
//		sdk.ServePass("example", "0.1.0", sdk.Kind[Config]{
//			Name:     "example-score",
//			Produces: sdk.ProducesScores,
//			Run: func(ctx context.Context, rc *sdk.RunContext, c *Config) error {
//				m, err := rc.Model(c.Model)
//				...
//				return rc.SetScores(table)
//			},
//		})
//	}
//
// Build it as whittle-plugin-<name> and put it in $WHITTLE_PLUGIN_PATH,
// ~/.whittle/plugins or $PATH; `whittle plugins` lists what it finds. The
// pass block's schema is derived from the config struct's hcl tags, and
// whittle decodes and checks the block (with file:line:col diagnostics)
// before the plugin sees it. See docs/plugins.md.
//
// The types a plugin works with are whittle's own, re-exported here so a
// plugin imports this package alone: the IR (Model, Config, Tensor), score
// tables (Scores), recipe references (Ref) and the backend interface with
// its request types.
package sdk

import (
	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
)

// Recipe language.
type (
	// Ref is a reference written in a recipe: model.x, scores.x,
	// dataset.x, task.x or backend.x.
	Ref = recipe.Ref
	// Slot is what a pass produces for later blocks.
	Slot = recipe.SlotKind
)

// What a pass kind produces (Kind.Produces); the zero Slot is nothing.
const (
	ProducesModel  = recipe.SlotModel
	ProducesScores = recipe.SlotScores
)

// The IR and scores.
type (
	Model       = ir.Model
	Config      = ir.Config
	LayerConfig = ir.LayerConfig
	Tensor      = ir.Tensor
	// Scores is an importance table: what score passes produce and
	// pruning passes (prune-width, prune-depth) consume.
	Scores = scores.Table
	// Prepared describes tokenized dataset files (RunContext.PrepareDataset).
	Prepared = data.Prepared
)

// Tensor roles within a decoder layer, for LayerName.
const (
	RoleAttnNorm = ir.RoleAttnNorm
	RoleQ        = ir.RoleQ
	RoleK        = ir.RoleK
	RoleV        = ir.RoleV
	RoleO        = ir.RoleO
	RoleMLPNorm  = ir.RoleMLPNorm
	RoleGate     = ir.RoleGate
	RoleUp       = ir.RoleUp
	RoleDown     = ir.RoleDown
)

// LayerName is the canonical (Hugging Face) name of a layer's tensor, e.g.
// LayerName(3, RoleDown) = "model.layers.3.mlp.down_proj.weight".
// Matrices are [out, in].
func LayerName(layer int, role string) string { return ir.LayerName(layer, role) }

// LoadModel reads a Hugging Face model directory. Tensors are read lazily
// from a memory map; Close the model when done.
func LoadModel(dir string) (*Model, error) { return hf.Load(dir) }

// SaveModel writes a model as a Hugging Face directory.
func SaveModel(m *Model, dir string) error { return hf.Save(m, dir, hf.SaveOptions{}) }

// TopK returns the indices of the k highest scores, in increasing order.
func TopK(s []float64, k int) []int { return scores.TopK(s, k) }

// The backend interface and its plain-data requests and results.
type (
	Backend         = backend.Backend
	Info            = backend.Info
	ModelID         = backend.ModelID
	LoadRequest     = backend.LoadRequest
	SaveRequest     = backend.SaveRequest
	Sequences       = backend.Sequences
	StatsRequest    = backend.StatsRequest
	StatsResult     = backend.StatsResult
	EvalRequest     = backend.EvalRequest
	EvalResult      = backend.EvalResult
	TrainRequest    = backend.TrainRequest
	TrainEvent      = backend.TrainEvent
	TrainResult     = backend.TrainResult
	GenerateRequest = backend.GenerateRequest
	GenerateResult  = backend.GenerateResult
)

// ErrUnsupported is what a backend returns (wrapped) for an operation it
// does not implement; errors.Is finds it across the plugin boundary.
var ErrUnsupported = backend.ErrUnsupported

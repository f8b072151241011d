package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/plugins/cpu/reference"
)

// modelFlags are the flags every command that opens a model shares.
type modelFlags struct {
	format    string
	tokenizer string
}

func (f *modelFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.format, "format", "", "model format: hf, gguf or llama2c (default: detect)")
	cmd.Flags().StringVar(&f.tokenizer, "tokenizer", "", "tokenizer file (llama2.c tokenizer.bin, SentencePiece tokenizer.model, Hugging Face tokenizer.json, or any GGUF file's vocabulary)")
}

func (f *modelFlags) load(path string) (*ir.Model, error) {
	return f.loadWith(path, modelio.LoadOptions{})
}

// loadWith loads with the flags' format and tokenizer added to opts.
func (f *modelFlags) loadWith(path string, opts modelio.LoadOptions) (*ir.Model, error) {
	if f.format != "" {
		var err error
		if opts.Format, err = modelio.ParseFormat(f.format); err != nil {
			return nil, usageErr("--format: %v", err)
		}
	}
	opts.Tokenizer = f.tokenizer
	return modelio.Load(path, opts)
}

func newGenerateCmd() *cobra.Command {
	var (
		mf          modelFlags
		modelPath   string
		prompt      string
		steps       int
		temperature float64
		topP        float64
		seed        uint64
	)
	cmd := &cobra.Command{
		Use:   "generate --model M [--tokenizer T] [--prompt P] [--steps N] [--temperature 0]",
		Short: "Generate text with the reference forward pass (llama2.c run.c semantics)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelPath == "" {
				return usageErr("generate: --model is required")
			}
			if err := backend.CheckSampling(temperature, topP); err != nil {
				return usageErr("generate: %v", err)
			}
			if steps < 0 {
				return usageErr("generate: --steps %d must be non-negative (0 = the model's context length)", steps)
			}
			m, err := mf.load(modelPath)
			if err != nil {
				return err
			}
			defer m.Close()
			if m.Tokenizer == nil {
				return fmt.Errorf("generate: %s carries no tokenizer; pass --tokenizer", modelPath)
			}
			rm, err := reference.Load(m)
			if err != nil {
				return err
			}
			if steps <= 0 || steps > m.Config.MaxSeq {
				steps = m.Config.MaxSeq
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			if seed == 0 {
				seed = uint64(time.Now().UnixNano())
			}
			sampler := reference.NewSampler(temperature, topP, seed)
			return rm.Generate(cmd.Context(), m.Tokenizer, prompt, steps, sampler, func(s string) error {
				_, err := out.WriteString(s)
				return err
			})
		},
	}
	mf.register(cmd)
	cmd.Flags().StringVar(&modelPath, "model", "", "model checkpoint (HF directory, .gguf or llama2.c .bin)")
	cmd.Flags().StringVar(&prompt, "prompt", "", "prompt text")
	cmd.Flags().IntVar(&steps, "steps", 256, "number of positions to run, prompt included (0 = max sequence)")
	cmd.Flags().Float64Var(&temperature, "temperature", 1.0, "sampling temperature; 0 is greedy")
	cmd.Flags().Float64Var(&topP, "top-p", 0.9, "nucleus sampling threshold (1 disables)")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed for sampling (0 = from the clock)")
	return cmd
}

func newConvertCmd() *cobra.Command {
	var (
		mf    modelFlags
		to    string
		dtype string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "convert IN OUT --to hf|gguf|llama2c",
		Short: "Convert a model between Hugging Face, GGUF and llama2.c formats",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErr("convert: --to is required (hf, gguf, llama2c or decilm)")
			}
			format, err := modelio.ParseFormat(to)
			if err != nil {
				return usageErr("--to: %v", err)
			}
			opts, err := modelio.ParseStorage(format, dtype)
			if err != nil {
				return usageErr("--dtype: %v", err)
			}
			m, err := mf.load(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			if !force {
				if err := refuseExisting("convert", convertTargets(m, args[1], format)); err != nil {
					return err
				}
			}
			if err := modelio.Save(m, args[1], format, opts); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %s parameters)\n", args[1], format, pipeline.FormatCount(m.Config.Params().Total))
			return nil
		},
	}
	mf.register(cmd)
	cmd.Flags().StringVar(&to, "to", "", "output format: hf, gguf, llama2c or decilm (an HF directory in DeciLM's block_configs, for a Llama whose layers differ)")
	cmd.Flags().StringVar(&dtype, "dtype", "", "convert tensors to f32, f16 or bf16, or quantize GGUF matrices to q8_0 or q4_0 (default: keep)")
	cmd.Flags().BoolVar(&force, "force", false, "replace OUT (and a llama2.c tokenizer beside it) when it exists")
	return cmd
}

// convertTargets lists the paths convert writes: OUT, and for llama2.c the
// tokenizer file modelio.Save puts beside it.
func convertTargets(m *ir.Model, out string, format modelio.Format) []string {
	paths := []string{out}
	if format == modelio.Llama2c && m.Tokenizer != nil {
		paths = append(paths, filepath.Join(filepath.Dir(out), fmt.Sprintf("tok%d.bin", m.Config.Vocab)))
	}
	return paths
}

// refuseExisting fails when any path exists: commands that write files
// (convert, logits) replace nothing without --force, whatever the path
// holds (a model, or a file a typo named). cmd names the command in the
// error.
func refuseExisting(cmd string, paths []string) error {
	for _, p := range paths {
		st, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("checking %s: %w", p, err)
		}
		what := "a file"
		if st.IsDir() {
			what = "a directory"
		}
		return fmt.Errorf("%s: %s already exists (%s); pass --force to replace it", cmd, p, what)
	}
	return nil
}

// inspection is `whittle inspect --json`'s document.
type inspection struct {
	Source     string         `json:"source"`
	Config     ir.Config      `json:"config"`
	Params     ir.ParamCounts `json:"params"`
	DTypes     map[string]int `json:"tensor_dtypes"`
	Tensors    int            `json:"tensors"`
	Tokenizer  int            `json:"tokenizer_pieces,omitempty"`
	TokKind    string         `json:"tokenizer_kind,omitempty"`
	FLOPsToken int64          `json:"flops_per_token"`
}

func newInspectCmd() *cobra.Command {
	var (
		mf      modelFlags
		asJSON  bool
		tensors bool
		asGraph bool
	)
	cmd := &cobra.Command{
		Use:   "inspect MODEL [--json | --graph]",
		Short: "Show a model's architecture and parameter counts by component, or its graph",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if asGraph && (asJSON || tensors) {
				return usageErr("inspect: --graph prints the graph alone, without --json or --tensors")
			}
			// A config.json alone is enough to count and plan.
			m, err := mf.loadWith(args[0], modelio.LoadOptions{AllowConfigOnly: true})
			if err != nil {
				return err
			}
			defer m.Close()
			if asGraph {
				g, err := m.Config.Graph()
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				return g.WriteText(cmd.OutOrStdout())
			}
			in := inspection{
				Source:     args[0],
				Config:     m.Config,
				Params:     m.Config.Params(),
				DTypes:     map[string]int{},
				Tensors:    len(m.Tensors),
				FLOPsToken: m.Config.FLOPsPerToken(m.Config.MaxSeq),
			}
			for _, t := range m.Tensors {
				in.DTypes[t.DType.String()]++
			}
			if m.Tokenizer != nil {
				in.Tokenizer = m.Tokenizer.Size()
				in.TokKind = "sentencepiece-bpe"
				if m.Tokenizer.ByteLevel != nil {
					in.TokKind = "byte-level-bpe"
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			return writeInspection(w, m, in, tensors)
		},
	}
	mf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&tensors, "tensors", false, "list every tensor with its shape and dtype")
	cmd.Flags().BoolVar(&asGraph, "graph", false, "print the model's dataflow graph: one op per line with named dimensions, then the prunable axes")
	return cmd
}

func writeInspection(w interface{ Write([]byte) (int, error) }, m *ir.Model, in inspection, tensors bool) error {
	c := m.Config
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model\t%s\n", in.Source)
	fmt.Fprintf(tw, "architecture\t%s: %s\n", c.Arch, pipeline.Describe(&c))
	if opts := c.Options(); len(opts) > 0 {
		fmt.Fprintf(tw, "family options\t%s\n", strings.Join(opts, ", "))
	}
	fmt.Fprintf(tw, "vocabulary\t%d (bos %d, eos %d)\n", c.Vocab, c.BOS, c.EOS)
	fmt.Fprintf(tw, "max sequence\t%d\n", c.MaxSeq)
	fmt.Fprintf(tw, "rms norm eps\t%g\n", c.NormEps)
	rope := fmt.Sprintf("theta %g", c.RopeTheta)
	if c.RopeScaling != nil {
		rope += fmt.Sprintf(", %s scaling x%g", c.RopeScaling.Type, c.RopeScaling.Factor)
	}
	fmt.Fprintf(tw, "rope\t%s\n", rope)
	fmt.Fprintf(tw, "classifier\t%s\n", map[bool]string{true: "tied to the embedding", false: "separate"}[c.Tied])
	if m.ConfigOnly() {
		fmt.Fprintf(tw, "weights\tnone: configuration only\n")
	}
	if in.Tokenizer > 0 {
		fmt.Fprintf(tw, "tokenizer\t%d pieces, %s\n", in.Tokenizer, in.TokKind)
	}
	fmt.Fprintf(tw, "\t\n")
	p := in.Params
	for _, row := range []struct {
		name string
		n    int64
	}{{"embedding", p.Embedding}, {"attention", p.Attention}, {"mlp", p.MLP}, {"norms", p.Norms}, {"classifier", p.Classifier}, {"total", p.Total}} {
		share := 0.0
		if p.Total > 0 {
			share = 100 * float64(row.n) / float64(p.Total)
		}
		fmt.Fprintf(tw, "%s\t%d\t(%s, %.1f%%)\n", row.name, row.n, pipeline.FormatCount(row.n), share)
	}
	if p.Active != p.Total && p.Total > 0 {
		// A mixture of experts: what one token computes with.
		fmt.Fprintf(tw, "active\t%d\t(%s, %.1f%% of total: top-%d experts per token)\n", p.Active, pipeline.FormatCount(p.Active), 100*float64(p.Active)/float64(p.Total), c.ExpertsPerToken)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !tensors {
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\ntensor\tshape\tdtype")
	for _, name := range m.TensorNames() {
		t := m.Tensors[name]
		fmt.Fprintf(tw, "%s\t%v\t%s\n", name, t.Shape, t.DType)
	}
	return tw.Flush()
}

package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
	"gonum.org/v1/plot/vg"

	"github.com/whittle-ml/whittle/core/curves"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/passes/search"
)

// varFlags collects repeated `-var name=value` overrides.
type varFlags []string

func (v *varFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar((*[]string)(v), "var", nil, "set a recipe variable (name=value); repeatable")
}

func (v varFlags) parse() (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range v {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, usageErr("-var %q: want name=value", kv)
		}
		out[name] = value
	}
	return out, nil
}

// loadRecipe loads and reports a recipe. Diagnostics go to stderr with
// source excerpts; the returned error is then a bare summary.
func loadRecipe(cmd *cobra.Command, path string, vars varFlags) (*recipe.Recipe, *pipeline.Registry, error) {
	overrides, err := vars.parse()
	if err != nil {
		return nil, nil, err
	}
	reg, err := registryWithPlugins(cmd.Context())
	if err != nil {
		return nil, nil, err
	}
	r, diags := recipe.Load(path, overrides, reg.Language())
	if len(diags) > 0 {
		var files map[string]*hcl.File
		if r != nil {
			files = r.Files
		}
		_ = recipe.WriteDiagnostics(cmd.ErrOrStderr(), diags, files)
	}
	if diags.HasErrors() {
		n := 0
		for _, d := range diags {
			if d.Severity == hcl.DiagError {
				n++
			}
		}
		return nil, nil, &exitError{code: 2, err: fmt.Errorf("%s: %d error(s)", path, n)}
	}
	return r, reg, nil
}

// checkRecipe loads a recipe and makes pipeline.Check, the one static
// check validate, plan and run share: input files, model headers and every
// pass's plan.
func checkRecipe(cmd *cobra.Command, path string, vars varFlags) (*recipe.Recipe, *pipeline.Registry, *pipeline.Plan, error) {
	r, reg, err := loadRecipe(cmd, path, vars)
	if err != nil {
		return nil, nil, nil, err
	}
	plan, err := pipeline.Check(r, reg)
	var de *recipe.DiagnosticsError
	if errors.As(err, &de) {
		_ = recipe.WriteDiagnostics(cmd.ErrOrStderr(), de.Diags, r.Files)
		return nil, nil, nil, &exitError{code: 2, err: fmt.Errorf("%s: %d error(s)", path, len(de.Diags))}
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return r, reg, plan, nil
}

func newValidateCmd() *cobra.Command {
	var vars varFlags
	cmd := &cobra.Command{
		Use:   "validate RECIPE",
		Short: "Check a recipe: syntax, types, references, values, input files and every pass's plan",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, plan, err := checkRecipe(cmd, args[0], vars)
			if err != nil {
				return err
			}
			if err := pipeline.CheckRunnable(r, plan); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d models, %d datasets, %d passes, %d outputs)\n",
				args[0], len(r.Models), len(r.Datasets), len(r.Passes), len(r.Outputs))
			return nil
		},
	}
	vars.register(cmd)
	return cmd
}

func newPlanCmd() *cobra.Command {
	var vars varFlags
	cmd := &cobra.Command{
		Use:   "plan RECIPE",
		Short: "Dry run: each stage's architecture and parameter count, from headers only",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, _, plan, err := checkRecipe(cmd, args[0], vars)
			if err != nil {
				return err
			}
			return plan.Write(cmd.OutOrStdout())
		},
	}
	vars.register(cmd)
	return cmd
}

func newFmtCmd() *cobra.Command {
	var check, diff bool
	cmd := &cobra.Command{
		Use:   "fmt RECIPE...",
		Short: "Rewrite recipes in canonical HCL formatting (-check only reports)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			unformatted := 0
			for _, path := range args {
				src, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				out, err := recipe.FormatFile(path, src)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				if bytes.Equal(src, out) {
					continue
				}
				unformatted++
				if check || diff {
					fmt.Fprintln(cmd.OutOrStdout(), path)
					continue
				}
				if err := fsutil.WriteFile(path, out); err != nil {
					return err
				}
			}
			if check && unformatted > 0 {
				return &exitError{code: 3, err: fmt.Errorf("%d file(s) not formatted", unformatted)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "list files whose formatting differs and exit 3; change nothing")
	cmd.Flags().BoolVarP(&diff, "list", "l", false, "list files whose formatting differs; change nothing")
	return cmd
}

func newRunCmd() *cobra.Command {
	var (
		vars    varFlags
		out     string
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "run RECIPE [--var k=v] [--out DIR]",
		Short: "Run a recipe's passes; an existing run directory is resumed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Checked here for the diagnostics' source excerpts; Run checks
			// again (model headers only) before its first pass.
			r, reg, plan, err := checkRecipe(cmd, args[0], vars)
			if err != nil {
				return err
			}
			if out == "" {
				base := strings.TrimSuffix(filepath.Base(r.Path), filepath.Ext(r.Path))
				out = filepath.Join("runs", base)
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			// Log records go through the display, above its bar.
			disp := newDisplay(cmd.ErrOrStderr())
			defer disp.close()
			log := slog.New(slog.NewTextHandler(disp, &slog.HandlerOptions{Level: level}))
			man, err := pipeline.Run(cmd.Context(), r, reg, pipeline.Options{Dir: out, Log: log, Backends: backendProvider(), Checked: plan}, disp.events())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "run complete: %s (%d passes, %d outputs)\n\n", filepath.Join(out, pipeline.ManifestName), len(man.Passes), len(man.Outputs))
			return man.Summary(w)
		},
	}
	vars.register(cmd)
	cmd.Flags().StringVar(&out, "out", "", "run directory (default runs/<recipe name>)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log what each pass does")
	return cmd
}

func newReportCmd() *cobra.Command {
	var (
		plotPath      string
		width, height float64
	)
	cmd := &cobra.Command{
		Use:   "report RUN_DIR [--plot curves.png]",
		Short: "Summarize a run directory: each pass's status, evaluations, search results, outputs; optionally plot training curves and searches (exits 1 when the run failed or did not finish)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !(width > 0) || !(height > 0) {
				return usageErr("report: --width and --height must be positive")
			}
			man, err := pipeline.ReadManifest(filepath.Join(args[0], pipeline.ManifestName))
			if err != nil {
				return err
			}
			if man == nil {
				return fmt.Errorf("%s: no %s (not a run directory)", args[0], pipeline.ManifestName)
			}
			w := cmd.OutOrStdout()
			if err := man.WritePassStates(w); err != nil {
				return err
			}
			fmt.Fprintln(w)
			if err := man.Summary(w); err != nil {
				return err
			}
			searches, err := search.ReadRun(args[0], man)
			if err != nil {
				return err
			}
			for _, s := range searches {
				fmt.Fprintln(w)
				if err := search.WriteTable(w, s.Pass, s.Results); err != nil {
					return err
				}
			}
			incomplete := man.Incomplete()
			if incomplete != nil {
				incomplete = fmt.Errorf("%s: %w", args[0], incomplete)
			}
			if plotPath == "" {
				return incomplete
			}
			series, err := curves.Read(args[0], man)
			if err != nil {
				return err
			}
			run := filepath.Base(filepath.Clean(args[0]))
			wd, ht := vg.Length(width)*vg.Inch, vg.Length(height)*vg.Inch
			if len(series) > 0 || len(searches) == 0 {
				if err := curves.Draw(series, "training curves: "+run, plotPath, wd, ht); err != nil {
					return fmt.Errorf("report: %w", err)
				}
				fmt.Fprintf(w, "\nplot        %s (%d training passes)\n", plotPath, len(series))
			}
			// Each search's score against parameters: in the file itself when
			// it is the only plot, else next to it, named after the pass.
			for _, s := range searches {
				path := plotPath
				if len(series) > 0 || len(searches) > 1 {
					ext := filepath.Ext(plotPath)
					path = strings.TrimSuffix(plotPath, ext) + "-" + s.Pass + ext
				}
				if err := search.Draw(s.Results, "search "+s.Pass+": "+run, path, wd, ht); err != nil {
					return fmt.Errorf("report: %w", err)
				}
				fmt.Fprintf(w, "\nplot        %s (search %s: score against parameters)\n", path, s.Pass)
			}
			return incomplete
		},
	}
	cmd.Flags().StringVar(&plotPath, "plot", "", "draw the training passes' loss curves to this file (.png, .svg or .pdf), and each search pass's score against parameters (to this file when the run has no training curves, else to FILE-<pass>.png)")
	cmd.Flags().Float64Var(&width, "width", 8, "plot width in inches")
	cmd.Flags().Float64Var(&height, "height", 5, "plot height in inches")
	return cmd
}

func newPassesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "passes",
		Short: "List the pass kinds a recipe may use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reg, err := registryWithPlugins(cmd.Context())
			if err != nil {
				return err
			}
			for _, k := range reg.Kinds() {
				p, _ := reg.Lookup(k)
				fmt.Fprintf(cmd.OutOrStdout(), "%-18s %s\n", k, p.Spec().Description)
			}
			return nil
		},
	}
}

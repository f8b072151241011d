// Command whittle compresses Llama-family language models with the
// Minitron recipe: score, prune, distill, export. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/internal/version"
)

// exitError carries a specific exit status (1 for failures, 2 for usage and
// recipe errors, 3 for `fmt -check` differences) up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// forceAfter is how long whittle waits, after an interrupt, for the
// command to wind down before it kills its plugins and exits anyway.
const forceAfter = 10 * time.Second

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go onInterrupt(sigs, cancel, forceAfter, func() {
		killPluginHost()
		os.Exit(130)
	})
	root := newRootCmd()
	root.SetArgs(goStyleFlags(root, os.Args[1:]))
	err := root.ExecuteContext(ctx)
	// End plugin processes on every way out, interrupts included (the
	// signal cancels ctx, the pipeline returns, and we get here).
	closePluginHost()
	if err == nil {
		return
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "whittle:", msg)
	}
	os.Exit(exitCode(err))
}

// exitCode maps an error to whittle's exit status: 2 for usage errors
// (unknown commands and flags, bad flag values and argument counts) and
// recipe errors (diagnostics, failed checks), 3 for `fmt -check`
// differences, 130 for an interrupted command, 1 for every other failure.
func exitCode(err error) int {
	var ee *exitError
	var de *recipe.DiagnosticsError
	var ce *pipeline.CheckError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &de), errors.As(err, &ce):
		return 2
	case errors.Is(err, context.Canceled):
		return 130 // interrupted, as a shell reports a SIGINT'd command
	}
	return 1
}

// usageErrors makes cobra's own errors usage errors: cobra returns flag
// parse errors and argument-count errors as plain errors, which would exit 1.
func usageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: 2, err: fmt.Errorf("%w (usage: %s)", err, cmd.UseLine())}
	})
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: %w (usage: %s)", cmd.CommandPath(), err, cmd.UseLine())}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageErrors(sub)
	}
}

// unknownCommand is the root's action: with no arguments it shows help;
// anything else is a command that does not exist. (Without an action,
// cobra reports unknown commands as plain errors.)
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usageErr("%s (see %s --help)", msg, cmd.CommandPath())
}

// onInterrupt handles the interrupts of a whittle process: the first
// cancels the command's context, so that the running pass stops and the
// run stays resumable; a second one, or the command still running after
// grace, calls force (kill the plugins and exit now).
func onInterrupt(sigs <-chan os.Signal, cancel func(), grace time.Duration, force func()) {
	<-sigs
	cancel()
	fmt.Fprintln(os.Stderr, "whittle: interrupted; stopping (interrupt again to kill plugins and exit now)")
	select {
	case <-sigs:
	case <-time.After(grace):
		fmt.Fprintf(os.Stderr, "whittle: still running %s after the interrupt; killing plugins and exiting\n", grace)
	}
	force()
}

// goStyleFlags rewrites Go-style single-dash long flags (-check, -var k=v)
// to the double-dash form cobra parses, so both spellings work as they do
// in terraform and packer. Only names of real long flags are rewritten.
func goStyleFlags(root *cobra.Command, args []string) []string {
	long := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if len(name) > 1 && long[name] {
				out[i] = "-" + a
			}
		}
	}
	return out
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "whittle",
		Short: "Compress Llama-family language models the Minitron way",
		Long: `whittle prunes and distills Llama-family language models with NVIDIA's
Minitron method. Recipes (HCL) declare the models, data and ordered passes;
whittle plans, runs and records them.`,
		Version:                    version.String(),
		SilenceUsage:               true,
		SilenceErrors:              true,
		Args:                       cobra.ArbitraryArgs,
		RunE:                       unknownCommand,
		SuggestionsMinimumDistance: 2,
	}
	root.AddCommand(
		newRunCmd(),
		newReportCmd(),
		newValidateCmd(),
		newPlanCmd(),
		newFmtCmd(),
		newInspectCmd(),
		newGenerateCmd(),
		newTokenizeCmd(),
		newConvertCmd(),
		newLogitsCmd(),
		newPassesCmd(),
		newBenchCmd(),
		newPluginsCmd(),
		newPluginServeCmd(),
	)
	root.SetHelpCommand(newHelpCmd(root))
	usageErrors(root)
	return root
}

// newHelpCmd replaces cobra's help command, which prints "Unknown help
// topic" for a command that does not exist and exits 0: here that is a
// usage error like any unknown command.
func newHelpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 || target == nil {
				return unknownCommand(root, args)
			}
			return target.Help()
		},
	}
}

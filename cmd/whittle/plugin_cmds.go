package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/plugin"
	"github.com/whittle-ml/whittle/internal/version"
	"github.com/whittle-ml/whittle/passes"
	"github.com/whittle-ml/whittle/plugins/cpu"
	"github.com/whittle-ml/whittle/plugins/sdk"
)

// newDefaultBackend builds the built-in backend, in process. The same
// constructor serves `backend "x" { plugin = "self" }` out of process
// (whittle plugin-serve backend), so both give the same results.
var newDefaultBackend = func() (backend.Backend, error) {
	return cpu.New(cpu.Options{})
}

// openSelfBackend builds the built-in backend for a backend block with
// plugin = "self". Its one attribute is threads; any other is an error
// rather than silently ignored.
func openSelfBackend(raw json.RawMessage) (sdk.Backend, error) {
	var c struct {
		Threads int `json:"threads"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("backend attributes: %w (the built-in backend takes threads alone)", err)
	}
	if c.Threads == 0 {
		return newDefaultBackend()
	}
	return cpu.New(cpu.Options{Threads: c.Threads})
}

// The CLI's plugin host: one per process, started on first use; main ends
// its plugins (closePluginHost, or killPluginHost on a second interrupt)
// before exiting.
var (
	hostOnce sync.Once
	cliHost  *plugin.Host
)

func pluginHost() *plugin.Host {
	hostOnce.Do(func() { cliHost = newPluginHost() })
	return cliHost
}

// startedPluginHost returns the CLI's host if one was started, and keeps
// one from starting later.
func startedPluginHost() *plugin.Host {
	hostOnce.Do(func() {})
	return cliHost
}

// closePluginHost ends the CLI's plugins, each given a few seconds to exit.
func closePluginHost() {
	if h := startedPluginHost(); h != nil {
		h.Close()
	}
}

// killPluginHost kills the CLI's plugins now.
func killPluginHost() {
	if h := startedPluginHost(); h != nil {
		h.Kill()
	}
}

// newPluginHost logs plugin warnings and errors to stderr; set
// WHITTLE_PLUGIN_DEBUG=1 to see everything the plugins and go-plugin say.
func newPluginHost() *plugin.Host {
	level := slog.LevelWarn
	if os.Getenv("WHITTLE_PLUGIN_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return plugin.New(plugin.Options{
		Log:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		CacheDir: plugin.DefaultCacheDir(),
	})
}

// registryWithPlugins returns the built-in pass kinds plus those served by
// every plugin on the search path. A plugin that fails to start is reported
// as a warning, not an error: recipes that do not use it still work, and
// one that does gets "Unknown pass kind" with the list of kinds.
func registryWithPlugins(ctx context.Context) (*pipeline.Registry, error) {
	reg, err := passes.Registry()
	if err != nil {
		return nil, err
	}
	pluginHost().RegisterPasses(ctx, reg)
	return reg, nil
}

// backendProvider opens recipe backends: plugin ones through the CLI's
// host, the rest in process.
func backendProvider() pipeline.BackendProvider {
	return &plugin.Provider{Host: pluginHost(), Default: newDefaultBackend}
}

func newPluginsCmd() *cobra.Command {
	var digests bool
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "List the plugins found, with their pass kinds, versions and paths",
		Long: `List the plugin binaries (whittle-plugin-<name>) found in $WHITTLE_PLUGIN_PATH,
~/.whittle/plugins and $PATH, in that order. Each is started to ask what it
offers: pass kinds recipes can use, and whether it is a compute backend
(backend "x" { plugin = "<name>" }). plugin = "self" runs whittle's own
backend out of process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A host of its own: it reads the search path as it is now.
			h := newPluginHost()
			defer h.Close()
			infos := h.Describe(cmd.Context())
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tVERSION\tPROTOCOL\tKINDS\tBACKEND\tPATH")
			var failed []plugin.Info
			for _, in := range infos {
				if in.Err != nil {
					failed = append(failed, in)
					fmt.Fprintf(w, "%s\t-\t-\t(failed to start)\t-\t%s\n", in.Name, in.Path)
					continue
				}
				kinds, be := strings.Join(in.Kinds, ","), "no"
				if kinds == "" {
					kinds = "-"
				}
				if in.Backend {
					be = "yes"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", in.Name, orDash(in.Version), in.Protocol, kinds, be, in.Path)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(infos) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no plugins found (looked for %s<name> in %s)\n", plugin.Prefix, strings.Join(plugin.DefaultDirs(), string(os.PathListSeparator)))
			}
			if digests {
				for _, in := range infos {
					if in.SHA256 != "" {
						fmt.Fprintf(cmd.OutOrStdout(), "%s  %s\n", in.SHA256, in.Path)
					}
				}
			}
			for _, in := range failed {
				fmt.Fprintf(cmd.ErrOrStderr(), "\n%s: %v\n", in.Name, in.Err)
			}
			if len(failed) > 0 {
				return fmt.Errorf("%d plugin(s) could not be started", len(failed))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&digests, "sha256", false, "also print each binary's sha256, for pinning with sha256 = \"...\"")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newPluginServeCmd is how whittle serves its built-in backend as a plugin
// to another whittle process (backend "x" { plugin = "self" }). It is not
// meant to be run by hand: go-plugin refuses to serve without the host's
// handshake.
func newPluginServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "plugin-serve",
		Short:  "Serve a built-in component as a plugin (run by whittle itself)",
		Hidden: true,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "backend",
		Short: "Serve the built-in backend",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if newDefaultBackend == nil {
				return errors.New("this whittle has no built-in backend")
			}
			sdk.Serve(sdk.Plugin{Name: "whittle", Version: version.String(), Backend: openSelfBackend})
			return nil
		},
	})
	return cmd
}

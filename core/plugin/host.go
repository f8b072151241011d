// Package plugin is whittle's side of its plugins: it finds plugin
// binaries, starts them with HashiCorp go-plugin (gRPC, AutoMTLS, a pinned
// sha256 checked before start), registers the pass kinds they serve into a
// pipeline.Registry, opens the backends recipes declare with
// `backend "x" { plugin = "..." }`, forwards plugin logs to slog, and turns
// a plugin that dies into an error naming it.
//
// Plugins are found by name: an executable whittle-plugin-<name> in, in
// order, the directories of $WHITTLE_PLUGIN_PATH, ~/.whittle/plugins and
// $PATH (the first of a name wins). A backend block's plugin attribute is
// such a name, a path (containing a slash), or "self": the whittle binary
// itself re-executed to serve its built-in backend out of process.
//
// Plugin authors use plugins/sdk; the wire protocol is in
// core/plugin/proto and core/plugin/wire.
package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
	"github.com/whittle-ml/whittle/core/plugin/wire"
	"github.com/whittle-ml/whittle/internal/version"
)

// Prefix starts the file name of every plugin binary.
const Prefix = "whittle-plugin-"

// Self is the backend plugin reference naming whittle's own binary.
const Self = "self"

// PathEnv lists extra plugin directories, separated like $PATH.
const PathEnv = "WHITTLE_PLUGIN_PATH"

// ProtocolVersion is the plugin protocol this whittle speaks.
const ProtocolVersion = wire.ProtocolVersion

// Options configure a Host.
type Options struct {
	// Log receives the plugins' logs and the host's own messages.
	Log *slog.Logger
	// Dirs are searched in order for whittle-plugin-<name>; nil means
	// DefaultDirs().
	Dirs []string
	// SelfCommand is the command that serves whittle's built-in backend as
	// a plugin (`plugin = "self"`); nil means this executable with
	// arguments "plugin-serve backend".
	SelfCommand []string
	// StartTimeout bounds a plugin's start-up handshake (default 1 minute).
	StartTimeout time.Duration
	// CacheDir, when set, keeps what each plugin binary (by sha256)
	// describes itself as, so that registering pass kinds starts only the
	// plugins whose kinds are then used. "" caches nothing.
	CacheDir string
}

// DefaultCacheDir is where the whittle command caches plugin
// descriptions: the user's cache directory, "" where there is none.
func DefaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "whittle", "plugins")
}

// DefaultDirs is the plugin search path: $WHITTLE_PLUGIN_PATH's entries,
// ~/.whittle/plugins, then $PATH's entries.
func DefaultDirs() []string {
	var dirs []string
	dirs = append(dirs, filepath.SplitList(os.Getenv(PathEnv))...)
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".whittle", "plugins"))
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv("PATH"))...)
	out := dirs[:0]
	for _, d := range dirs {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// Host starts and tracks plugin processes. Close ends them all.
type Host struct {
	opts Options
	log  *slog.Logger
	hlog hclog.Logger

	mu     sync.Mutex
	procs  []*proc
	closed bool
}

// New returns a host; it starts nothing until asked.
func New(opts Options) *Host {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Dirs == nil {
		opts.Dirs = DefaultDirs()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = time.Minute
	}
	return &Host{opts: opts, log: opts.Log, hlog: wire.HostLogger(opts.Log)}
}

// Found is a plugin binary found on the search path.
type Found struct {
	Name string // without the whittle-plugin- prefix
	Path string
}

// Find lists the plugin binaries on the search path, sorted by name; of
// two with the same name, the one in the earlier directory wins.
func (h *Host) Find() []Found {
	seen := map[string]bool{}
	var out []Found
	for _, dir := range h.opts.Dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // a missing directory on the path is normal
		}
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), Prefix)
			if !ok || name == "" || seen[name] {
				continue
			}
			path := filepath.Join(dir, e.Name())
			if !isExecutable(path) {
				continue
			}
			seen[name] = true
			out = append(out, Found{Name: name, Path: path})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// lookup finds whittle-plugin-<name> on the search path.
func (h *Host) lookup(name string) (string, error) {
	for _, dir := range h.opts.Dirs {
		path := filepath.Join(dir, Prefix+name)
		if isExecutable(path) {
			return path, nil
		}
	}
	return "", fmt.Errorf("plugin %q not found: no executable %s%s in %s (set %s, install it in ~/.whittle/plugins, or give a path)",
		name, Prefix, name, strings.Join(h.opts.Dirs, string(os.PathListSeparator)), PathEnv)
}

// command resolves a backend block's plugin reference to a command line.
func (h *Host) command(ref string) ([]string, error) {
	switch {
	case ref == Self:
		if h.opts.SelfCommand != nil {
			return h.opts.SelfCommand, nil
		}
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating the whittle executable for plugin = %q: %w", Self, err)
		}
		return []string{exe, "plugin-serve", "backend"}, nil
	case strings.ContainsRune(ref, '/') || strings.ContainsRune(ref, os.PathSeparator):
		if !isExecutable(ref) {
			return nil, fmt.Errorf("plugin %s is not an executable file", ref)
		}
		return []string{ref}, nil
	}
	path, err := h.lookup(ref)
	if err != nil {
		return nil, err
	}
	return []string{path}, nil
}

// proc is one started plugin process.
type proc struct {
	label  string // `plugin "wanda" (/path)`, for messages
	path   string
	client *goplugin.Client
	conn   *wire.Conn
	desc   *pb.DescribeResponse
	// crashReported: the first call to see the process gone got a
	// CrashError; later ones get a short error.
	crashReported atomic.Bool
}

// TamperedError is a plugin binary whose sha256 is not the pinned one.
type TamperedError struct {
	Plugin, Path string
	Want, Got    string
}

func (e *TamperedError) Error() string {
	return fmt.Sprintf("refusing to start %s: %s has sha256 %s, but the recipe pins sha256 = %q; the binary was changed or replaced (update the pin only if you trust the new binary)",
		e.Plugin, e.Path, e.Got, e.Want)
}

// FileSHA256 returns the hex sha256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// start launches a plugin and describes it. pin, when set, is the sha256
// the binary must have.
func (h *Host) start(ctx context.Context, label string, argv []string, pin string) (*proc, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, errors.New("the plugin host is closed")
	}
	path := argv[0]
	cfg := &goplugin.ClientConfig{
		HandshakeConfig:  wire.Handshake(wire.ProtocolVersion),
		VersionedPlugins: wire.PluginSet(wire.ProtocolVersion, &wire.Plugin{}),
		Cmd:              exec.Command(path, argv[1:]...),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Managed:          true,
		Logger:           h.hlog,
		StartTimeout:     h.opts.StartTimeout,
		// What the plugin prints outside its structured log.
		SyncStdout: wire.LineLogger(h.log, slog.LevelInfo, "plugin output", "plugin", label),
		SyncStderr: wire.LineLogger(h.log, slog.LevelWarn, "plugin output", "plugin", label),
	}
	if pin != "" {
		// Checked here for a message naming both digests; go-plugin checks
		// again right before it executes the binary.
		got, err := FileSHA256(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		if got != strings.ToLower(pin) {
			return nil, &TamperedError{Plugin: label, Path: path, Want: pin, Got: got}
		}
		sum, err := hex.DecodeString(pin)
		if err != nil {
			return nil, fmt.Errorf("%s: sha256 %q is not hexadecimal", label, pin)
		}
		cfg.SecureConfig = &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := goplugin.NewClient(cfg)
	p := &proc{label: label, path: path, client: client}
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		if ve, ok := wire.AsVersionError(label, err); ok {
			return nil, ve
		}
		if errors.Is(err, goplugin.ErrChecksumsDoNotMatch) {
			return nil, &TamperedError{Plugin: label, Path: path, Want: pin, Got: "a different digest"}
		}
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	raw, err := rpc.Dispense(wire.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	p.conn = raw.(*wire.Conn)
	p.desc, err = pb.NewPluginClient(p.conn.Conn).Describe(ctx, &pb.DescribeRequest{HostVersion: version.String()})
	if err != nil {
		client.Kill()
		return nil, p.wrap("Describe", err)
	}
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}

// CrashError is a plugin process that exited while whittle was using it.
// Runs stay resumable: the pass is recorded as failed, and running the
// recipe again with the same run directory resumes from there.
type CrashError struct {
	Plugin string // label: `plugin "x" (/path)`
	Op     string // what whittle was doing: "Train", "pass \"score\""
	Err    error
}

func (e *CrashError) Error() string {
	return fmt.Sprintf("%s exited unexpectedly during %s (%v); run the recipe again with the same run directory to resume", e.Plugin, e.Op, e.Err)
}

func (e *CrashError) Unwrap() error { return e.Err }

// exited waits briefly for go-plugin to notice the process is gone: a
// broken connection is seen a moment before the process's exit.
func (p *proc) exited(wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if p.client.Exited() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wrap names the plugin in an error from a call, and recognizes a crash.
func (p *proc) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	err = wire.FromStatus(err)
	var re *wire.RemoteError
	if errors.As(err, &re) && re.Transport() || p.client.Exited() {
		if p.exited(2 * time.Second) {
			if p.crashReported.Swap(true) {
				// Clean-up calls after the crash: say so briefly.
				return fmt.Errorf("%s: %s: the plugin is no longer running", p.label, op)
			}
			return &CrashError{Plugin: p.label, Op: op, Err: err}
		}
	}
	return fmt.Errorf("%s: %s: %w", p.label, op, err)
}

// kill ends the process and forgets it.
func (p *proc) kill() { p.client.Kill() }

// Close ends every plugin process the host started.
func (h *Host) Close() {
	h.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.closed = true
	h.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
}

// Cleanup ends every plugin process any host in this program started;
// call it once, right before the program exits (also on interrupt).
func Cleanup() { goplugin.CleanupClients() }

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
	"encoding/hex"
	"errors"
	"fmt"
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
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

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
	// StartTimeout bounds a plugin's start, up to its handshake (default
	// 1 minute); a plugin that has not completed it by then is killed,
	// with what it started.
	StartTimeout time.Duration
	// LivenessInterval is how often a running plugin is health-checked
	// (default 5 seconds; negative turns checks off), and LivenessTimeout
	// how long a check may go unanswered before the plugin counts as
	// stalled and is ended, failing the call in flight with a
	// StalledError (default 30 seconds).
	LivenessInterval time.Duration
	LivenessTimeout  time.Duration
	// StopTimeout is how long Close lets a plugin exit by itself before
	// killing it (default 5 seconds).
	StopTimeout time.Duration
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
	procs  map[*proc]bool // started and not yet ended
	starts int            // processes started, ever
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
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = time.Minute
	}
	if opts.LivenessInterval == 0 {
		opts.LivenessInterval = 5 * time.Second
	}
	if opts.LivenessTimeout <= 0 {
		opts.LivenessTimeout = 30 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 5 * time.Second
	}
	return &Host{opts: opts, log: opts.Log, hlog: wire.HostLogger(opts.Log), procs: map[*proc]bool{}}
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
	h      *Host
	label  string // `plugin "wanda" (/path)`, for messages
	path   string
	client *goplugin.Client
	conn   *wire.Conn
	desc   *pb.DescribeResponse
	tail   *stderrTail
	// alive is cancelled, with the cause, when the plugin is found stalled
	// or is ended; every call on its connection is bound to it.
	alive context.Context
	stop  context.CancelCauseFunc

	mu        sync.Mutex
	runner    *procRunner // set once go-plugin has asked for it
	socketDir string      // go-plugin's private directory for its sockets

	endOnce sync.Once
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

// StartError is a plugin that could not be started: it exited, did not
// complete the handshake in time, or said something go-plugin did not
// understand. Stderr holds the last lines it wrote there, usually the
// reason.
type StartError struct {
	Plugin string
	Err    error
	Stderr []string
}

func (e *StartError) Error() string {
	msg := fmt.Sprintf("starting %s: %v", e.Plugin, e.Err)
	if len(e.Stderr) == 0 {
		return msg + " (it wrote nothing to stderr)"
	}
	return msg + "; its stderr ended with:\n    " + strings.Join(e.Stderr, "\n    ")
}

func (e *StartError) Unwrap() error { return e.Err }

// start launches a plugin and describes it. pin, when set, is the sha256
// the binary must have. ctx bounds the start; the process outlives it.
func (h *Host) start(ctx context.Context, label string, argv []string, pin string) (*proc, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, errors.New("the plugin host is closed")
	}
	path := argv[0]
	if pin != "" {
		// Checked here for a message naming both digests; the runner
		// checks again right before it executes the binary.
		got, err := FileSHA256(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		if got != strings.ToLower(pin) {
			return nil, &TamperedError{Plugin: label, Path: path, Want: pin, Got: got}
		}
		if _, err := hex.DecodeString(pin); err != nil {
			return nil, fmt.Errorf("%s: sha256 %q is not hexadecimal", label, pin)
		}
	}
	p := &proc{h: h, label: label, path: path, tail: &stderrTail{}}
	p.alive, p.stop = context.WithCancelCause(context.Background())
	cfg := &goplugin.ClientConfig{
		HandshakeConfig:  wire.Handshake(wire.ProtocolVersion),
		VersionedPlugins: wire.HostPluginSet(&wire.Plugin{}),
		// go-plugin makes a private directory for the plugin's sockets
		// (removed when the plugin ends) and calls this to run it.
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, socketDir string) (runner.Runner, error) {
			r, err := newProcRunner(label, argv, spec.Env, pin)
			p.mu.Lock()
			p.runner, p.socketDir = r, socketDir
			p.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return r, nil
		},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           h.hlog,
		// The host enforces the start timeout itself (below), killing
		// what the plugin started too; go-plugin's would leave a shell
		// wrapper's children holding its pipes.
		StartTimeout: h.opts.StartTimeout + time.Minute,
		Stderr:       p.tail,
		// What the plugin prints outside its structured log.
		SyncStdout:      wire.LineLogger(h.log, slog.LevelInfo, "plugin output", "plugin", label),
		SyncStderr:      wire.LineLogger(h.log, slog.LevelWarn, "plugin output", "plugin", label),
		GRPCDialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(p.unary), grpc.WithChainStreamInterceptor(p.stream)},
	}
	p.client = goplugin.NewClient(cfg)
	h.mu.Lock()
	h.procs[p] = true
	h.starts++
	h.mu.Unlock()
	rpc, err := p.handshake(ctx)
	if err != nil {
		p.end(0) // after this the stderr tail is complete
		var te *TamperedError
		var ve *wire.VersionError
		if errors.As(err, &te) || errors.As(err, &ve) {
			return nil, err
		}
		return nil, &StartError{Plugin: label, Err: err, Stderr: p.tail.Lines()}
	}
	raw, err := rpc.Dispense(wire.PluginName)
	if err != nil {
		p.end(0)
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	p.conn = raw.(*wire.Conn)
	if h.opts.LivenessInterval > 0 {
		go p.watch(h.opts.LivenessInterval, h.opts.LivenessTimeout)
	}
	p.desc, err = pb.NewPluginClient(p.conn.Conn).Describe(ctx, &pb.DescribeRequest{HostVersion: version.String()})
	if err != nil {
		p.end(0)
		return nil, p.wrap("Describe", err)
	}
	if v := int(p.desc.GetProtocolVersion()); v != wire.ProtocolVersion {
		// A plugin of another version completes the handshake serving
		// Describe alone (wire.PluginSet), to say which version it is.
		p.end(0)
		return nil, &wire.VersionError{Plugin: label, PluginVersion: v, HostVersion: wire.ProtocolVersion}
	}
	return p, nil
}

// handshake starts the process and completes go-plugin's handshake within
// the start timeout, ctx's cancellation and the plugin's protocol version.
func (p *proc) handshake(ctx context.Context) (goplugin.ClientProtocol, error) {
	type result struct {
		rpc goplugin.ClientProtocol
		err error
	}
	done := make(chan result, 1)
	go func() {
		rpc, err := p.client.Client()
		done <- result{rpc, err}
	}()
	timer := time.NewTimer(p.h.opts.StartTimeout)
	defer timer.Stop()
	var err error
	select {
	case r := <-done:
		if r.err != nil {
			return nil, p.startFailure(r.err)
		}
		if v := p.client.NegotiatedVersion(); v != wire.ProtocolVersion {
			return nil, &wire.VersionError{Plugin: p.label, PluginVersion: v, HostVersion: wire.ProtocolVersion}
		}
		return r.rpc, nil
	case <-timer.C:
		err = fmt.Errorf("it did not complete the plugin handshake within %s", p.h.opts.StartTimeout)
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	// Killing the process group makes Client return: go-plugin sees the
	// plugin's output end.
	p.force()
	select {
	case <-done:
	case <-time.After(p.h.opts.StopTimeout):
		p.h.log.Warn("plugin start not abandoned in time", "plugin", p.label)
	}
	return nil, err
}

// startFailure words go-plugin's start error for a plugin that exited
// before writing anything to stdout, the usual failure (its stderr says
// why); other failures keep go-plugin's words.
func (p *proc) startFailure(err error) error {
	p.mu.Lock()
	r := p.runner
	p.mu.Unlock()
	if r == nil || !r.started() {
		return err // not started: exec's error says why
	}
	if silent, how := r.exitedSilently(p.h.opts.StopTimeout); silent && how != nil {
		return fmt.Errorf("it exited before the plugin handshake (%v)", how)
	} else if silent {
		return errors.New("it exited before the plugin handshake")
	}
	return err
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

// usable reports whether the process can take calls.
func (p *proc) usable() bool { return p.alive.Err() == nil && !p.client.Exited() }

// wrap names the plugin in an error from a call, and recognizes a stall
// and a crash.
func (p *proc) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if se := p.stalled(op); se != nil {
		return se
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

// kill ends the process, giving it the host's stop timeout to exit.
func (p *proc) kill() { p.end(p.h.opts.StopTimeout) }

// force kills the process group now and fails the calls in flight; end
// still has to run to collect it.
func (p *proc) force() {
	p.stop(errEnded)
	p.mu.Lock()
	r := p.runner
	p.mu.Unlock()
	if r != nil {
		if err := r.Kill(context.Background()); err != nil {
			p.h.log.Debug("killing plugin", "plugin", p.label, "err", err)
		}
	}
}

// end ends the process: go-plugin's graceful shutdown for up to grace,
// then a kill of its process group; then its socket directory is removed.
// It returns within grace plus the stop timeout even if the plugin does
// not die (a process stuck in the kernel), leaving go-plugin's clean-up
// running.
func (p *proc) end(grace time.Duration) {
	p.endOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.client.Kill()
		}()
		if grace > 0 {
			select {
			case <-done:
			case <-time.After(grace):
			}
		}
		p.force()
		select {
		case <-done:
		case <-time.After(p.h.opts.StopTimeout):
			p.h.log.Warn("plugin did not exit after a kill", "plugin", p.label)
		}
		p.mu.Lock()
		dir := p.socketDir
		p.mu.Unlock()
		if dir != "" {
			if err := os.RemoveAll(dir); err != nil {
				p.h.log.Debug("removing the plugin's socket directory", "plugin", p.label, "err", err)
			}
		}
		p.h.mu.Lock()
		delete(p.h.procs, p)
		p.h.mu.Unlock()
	})
}

// Close ends every plugin process the host started, in parallel, each
// given the stop timeout to exit by itself before it is killed. Later
// starts fail.
func (h *Host) Close() { h.endAll(h.opts.StopTimeout) }

// Kill kills every plugin process the host started, now: what a second
// interrupt asks for. Calls in flight fail.
func (h *Host) Kill() {
	h.mu.Lock()
	procs := make([]*proc, 0, len(h.procs))
	for p := range h.procs {
		procs = append(procs, p)
	}
	h.mu.Unlock()
	for _, p := range procs {
		p.force()
	}
	h.endAll(0)
}

func (h *Host) endAll(grace time.Duration) {
	h.mu.Lock()
	h.closed = true
	procs := make([]*proc, 0, len(h.procs))
	for p := range h.procs {
		procs = append(procs, p)
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.end(grace)
		}()
	}
	wg.Wait()
}

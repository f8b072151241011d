package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin/runner"

	"github.com/whittle-ml/whittle/core/plugin/wire"
	"github.com/whittle-ml/whittle/internal/fsutil"
)

// procRunner is how go-plugin runs a plugin process (ClientConfig's
// RunnerFunc) instead of its own runner, for what that one does not do:
// a process group that is killed whole, a parent-death signal, a stdin
// pipe whose end-of-file tells the plugin whittle is gone, and the sha256
// pin checked right before exec.
type procRunner struct {
	label string
	pin   string // expected sha256, "" for none
	cmd   *exec.Cmd

	stdout, stderr io.ReadCloser
	// lifeline is the write end of the plugin's stdin, never written:
	// when whittle exits, however, the plugin reads end-of-file.
	lifeline, stdin *os.File

	mu      sync.Mutex
	pid     int           // set by Start
	killed  bool          // Kill came first: Start kills what it starts
	exited  chan struct{} // closed when Wait returns
	waited  atomic.Bool
	waitErr error // how the process ended; read after exited is closed
	once    sync.Once
	// stdoutBytes counts what the plugin wrote to stdout, where go-plugin
	// reads the handshake.
	stdoutBytes atomic.Int64
}

var _ runner.Runner = (*procRunner)(nil)

func newProcRunner(label string, argv, env []string, pin string) (*procRunner, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(env, wire.HostStdinEnv+"=1")
	setProcAttr(cmd)
	r := &procRunner{label: label, pin: pin, cmd: cmd, exited: make(chan struct{})}
	var err error
	if r.stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if r.stderr, err = cmd.StderrPipe(); err != nil {
		return nil, err
	}
	if r.stdin, r.lifeline, err = os.Pipe(); err != nil {
		return nil, err
	}
	cmd.Stdin = r.stdin
	return r, nil
}

// Start implements runner.Runner.
func (r *procRunner) Start(context.Context) error {
	defer r.stdin.Close() // the child has its copy
	if r.pin != "" {
		// Checked again right before exec, to narrow the window in which
		// the binary could be swapped after the first check.
		got, err := FileSHA256(r.cmd.Path)
		if err != nil {
			r.lifeline.Close()
			return fmt.Errorf("%s: %w", r.label, err)
		}
		if got != strings.ToLower(r.pin) {
			r.lifeline.Close()
			return &TamperedError{Plugin: r.label, Path: r.cmd.Path, Want: r.pin, Got: got}
		}
	}
	if err := startCmd(r.cmd, r.exited); err != nil {
		r.lifeline.Close()
		return err
	}
	r.mu.Lock()
	r.pid = r.cmd.Process.Pid
	killed := r.killed
	r.mu.Unlock()
	if killed {
		r.killNow()
	}
	return nil
}

// Wait implements runner.Runner.
func (r *procRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	r.waited.Store(true)
	r.once.Do(func() {
		r.waitErr = err
		close(r.exited)
		r.lifeline.Close()
	})
	return err
}

// Kill implements runner.Runner: the plugin's whole process group, since
// a plugin that is a shell script may have children holding its pipes.
func (r *procRunner) Kill(context.Context) error {
	r.mu.Lock()
	r.killed = true
	started := r.pid != 0
	r.mu.Unlock()
	if !started || r.waited.Load() {
		return nil
	}
	return r.killNow()
}

func (r *procRunner) killNow() error {
	if err := killGroup(r.pid); err == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Stdout implements runner.Runner.
func (r *procRunner) Stdout() io.ReadCloser { return countingReader{r.stdout, &r.stdoutBytes} }

// exitedSilently reports whether the process exited by itself having
// written nothing to stdout, waiting up to wait for it to be reaped; err
// says how it ended.
func (r *procRunner) exitedSilently(wait time.Duration) (bool, error) {
	select {
	case <-r.exited:
	case <-time.After(wait):
		return false, nil
	}
	return r.stdoutBytes.Load() == 0, r.waitErr
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Stderr implements runner.Runner.
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }

// Name implements runner.Runner.
func (r *procRunner) Name() string { return r.cmd.Path }

// ID implements runner.Runner.
func (r *procRunner) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}

// started reports whether the process was started.
func (r *procRunner) started() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid != 0
}

// Diagnose implements runner.Runner; the host adds the plugin's stderr to
// start errors itself.
func (r *procRunner) Diagnose(context.Context) string { return "" }

// PluginToHost implements runner.AddrTranslator: host and plugin share a
// file system.
func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

// HostToPlugin implements runner.AddrTranslator.
func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

// FileSHA256 returns the hex sha256 of a file.
func FileSHA256(path string) (string, error) {
	sum, err := fsutil.HashFile(path)
	if err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return sum, nil
}

package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-plugin/runner"

	"github.com/whittle-ml/whittle/core/plugin/wire"
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

	pid    int
	exited chan struct{} // closed when Wait returns
	waited atomic.Bool
	once   sync.Once
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
	r.pid = r.cmd.Process.Pid
	return nil
}

// Wait implements runner.Runner.
func (r *procRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	r.waited.Store(true)
	r.once.Do(func() {
		close(r.exited)
		r.lifeline.Close()
	})
	return err
}

// Kill implements runner.Runner: the plugin's whole process group, since
// a plugin that is a shell script may have children holding its pipes.
func (r *procRunner) Kill(context.Context) error {
	if r.cmd.Process == nil || r.waited.Load() {
		return nil
	}
	if err := killGroup(r.pid); err == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Stdout implements runner.Runner.
func (r *procRunner) Stdout() io.ReadCloser { return r.stdout }

// Stderr implements runner.Runner.
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }

// Name implements runner.Runner.
func (r *procRunner) Name() string { return r.cmd.Path }

// ID implements runner.Runner.
func (r *procRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
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

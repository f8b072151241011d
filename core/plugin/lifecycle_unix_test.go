//go:build unix

package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
)

// These tests bound how long they wait for a process to go (liveBound)
// so that a regression fails instead of hanging; they assert no speed.
const liveBound = 30 * time.Second

// gone reports whether process pid has exited (a zombie counts: it is
// dead, waiting for a parent that may never reap it in a container).
func gone(pid int) bool {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		i := bytes.LastIndexByte(b, ')')
		return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
	} else if _, err := os.Stat("/proc/self/stat"); err == nil {
		return true // a /proc without the pid
	}
	return syscall.Kill(pid, 0) != nil
}

// waitGone fails the test if pid is still alive after liveBound, and then
// kills it, so that no test leaves a process behind.
func waitGone(t *testing.T, what string, pid int) {
	t.Helper()
	for deadline := time.Now().Add(liveBound); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if gone(pid) {
			return
		}
	}
	t.Errorf("%s (process %d) is still running", what, pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(liveBound); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
			return pid
		}
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

func quickHost(t *testing.T, opts Options) *Host {
	t.Helper()
	logs := &syncBuffer{}
	opts.Dirs = []string{}
	opts.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := New(opts)
	t.Cleanup(func() {
		h.Close()
		if t.Failed() {
			t.Logf("host log:\n%s", logs)
		}
	})
	return h
}

func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), Prefix+"script")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestStartTimeoutHolds: a plugin that hangs before its handshake, as a
// shell script whose child holds its output open, fails to start after
// the start timeout, and the child is killed with it.
func TestStartTimeoutHolds(t *testing.T) {
	child := filepath.Join(t.TempDir(), "child.pid")
	path := writeScript(t, fmt.Sprintf("sleep 1000 &\necho $! > %q\nwait\n", child))
	h := quickHost(t, Options{StartTimeout: 300 * time.Millisecond})
	_, err := h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: path})
	var se *StartError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a StartError", err)
	}
	for _, want := range []string{path, "did not complete the plugin handshake within 300ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	waitGone(t, "the hanging plugin's child", readPID(t, child))
}

// TestStartErrorShowsStderr: what a plugin that fails at start wrote to
// its stderr is in the error.
func TestStartErrorShowsStderr(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, path string
		want       []string
	}{
		{"script", writeScript(t, "echo 'loading libtorch_cuda.so: no such file' >&2\nexit 1\n"),
			[]string{"exited before the plugin handshake (exit status 1)", "its stderr ended with:\n    loading libtorch_cuda.so: no such file"}},
		{"sdk plugin", pluginScript(t, dir, "bogus", "bogus"), []string{`unknown WHITTLE_TEST_PLUGIN="bogus"`}},
		{"silent", writeScript(t, "exit 3\n"), []string{"exit status 3", "it wrote nothing to stderr"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := quickHost(t, Options{})
			_, err := h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: c.path})
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a StartError", err)
			}
			t.Logf("start error: %v", err)
			for _, want := range append(c.want, c.path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q lacks %q", err, want)
				}
			}
		})
	}
}

// TestStalledPluginFailsTheCall: a plugin frozen with SIGSTOP in the
// middle of training fails the call with an error naming it, and is
// killed.
func TestStalledPluginFailsTheCall(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	t.Setenv("WHITTLE_TEST_PIDFILE", pidFile)
	t.Setenv("WHITTLE_TEST_STEP_DELAY", "10ms")
	path := pluginScript(t, t.TempDir(), "fake", "backend")
	h := quickHost(t, Options{LivenessInterval: 50 * time.Millisecond, LivenessTimeout: 500 * time.Millisecond})
	be, err := h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: path})
	if err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	defer syscall.Kill(pid, syscall.SIGKILL) // should it survive
	_, err = be.Train(context.Background(), backend.TrainRequest{Steps: 1_000_000, BatchSize: 1}, func(ev backend.TrainEvent) {
		if ev.Step == 3 {
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Errorf("stopping the plugin: %v", err)
			}
		}
	})
	var se *StalledError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a StalledError", err)
	}
	t.Logf("stall error: %v", err)
	for _, want := range []string{`backend "x" (plugin ` + path + ")", "stopped responding during Train", "resume"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	waitGone(t, "the stalled plugin", pid)
	if err := be.Close(); err != nil {
		t.Errorf("closing the stalled backend: %v", err)
	}
}

// TestCloseEndsAStoppedPlugin: Close returns, and the plugin is gone,
// even when the plugin cannot answer (go-plugin's own clean-up waits for
// it forever), with liveness checks off.
func TestCloseEndsAStoppedPlugin(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	t.Setenv("WHITTLE_TEST_PIDFILE", pidFile)
	path := pluginScript(t, t.TempDir(), "fake", "backend")
	h := quickHost(t, Options{LivenessInterval: -1, StopTimeout: 200 * time.Millisecond})
	if _, err := h.OpenBackend(context.Background(), &recipe.Backend{Name: "x", Plugin: path}); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	defer syscall.Kill(pid, syscall.SIGKILL)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		h.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(liveBound):
		t.Fatal("Close did not return with a stopped plugin")
	}
	waitGone(t, "the stopped plugin", pid)
}

// TestPluginDiesWithHost: when whittle is killed (SIGKILL: no clean-up of
// its own), its plugin exits too, and removes its socket directory (the
// package's TestMain checks the temp dir is left empty).
func TestPluginDiesWithHost(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	pidFile, ready := filepath.Join(work, "pid"), filepath.Join(work, "ready")
	path := pluginScript(t, t.TempDir(), "fake", "backend")
	host := exec.Command(exe, "-test.run=^$")
	host.Env = append(os.Environ(), modeEnv+"=host", "WHITTLE_TEST_HOST_PLUGIN="+path,
		"WHITTLE_TEST_HOST_READY="+ready, "WHITTLE_TEST_PIDFILE="+pidFile)
	var out bytes.Buffer
	host.Stdout, host.Stderr = &out, &out
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	hostDone := make(chan error, 1)
	go func() { hostDone <- host.Wait() }()
	for deadline := time.Now().Add(liveBound); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-hostDone:
			t.Fatalf("the host exited (%v) before opening its plugin:\n%s", err, &out)
		default:
		}
		if time.Now().After(deadline) {
			_ = host.Process.Kill()
			t.Fatalf("the host did not open its plugin:\n%s", &out)
		}
	}
	pid := readPID(t, pidFile)
	if err := host.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-hostDone
	waitGone(t, "the plugin of the killed host", pid)
}

// TestUnknownKindNamesFailedPlugin: a recipe using a kind whose plugin
// could not start is told which plugin failed and what it printed, not
// only that the kind is unknown.
func TestUnknownKindNamesFailedPlugin(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, Prefix+"broken")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho 'libfoo.so: cannot open shared object file' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := quickHost(t, Options{})
	h.opts.Dirs = []string{dir}
	reg := pipeline.NewRegistry()
	infos := h.RegisterPasses(context.Background(), reg)
	if len(infos) != 1 || infos[0].Err == nil {
		t.Fatalf("infos = %+v, want one plugin that failed", infos)
	}
	_, diags := recipe.Parse("r.hcl", []byte("pass \"wanda\" {\n}\n"), nil, reg.Language())
	msg := diags.Error()
	for _, want := range []string{`No pass kind "wanda" is registered`, `plugin "broken" (` + path + `)`, "libfoo.so: cannot open shared object file"} {
		if !strings.Contains(msg, want) {
			t.Errorf("diagnostic %q lacks %q", msg, want)
		}
	}
}

package pipeline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/recipe"
)

// lockHelperEnv makes the test binary a lock holder (see TestMain): it
// locks the directory named by the variable, says "locked" and holds the
// lock until its stdin closes.
const lockHelperEnv = "WHITTLE_TEST_LOCK_HOLDER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(lockHelperEnv); dir != "" {
		l, err := LockDir(dir)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = l.Unlock()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holdInChild starts a second process holding dir's lock and returns it
// once the lock is held.
func holdInChild(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("lock holder said %q (%v)", line, err)
	}
	return cmd
}

// TestLockAcrossProcesses: a second process holding the lock keeps this one
// out with a message naming its pid; once it is killed (no chance to clean
// up) the lock is free again.
func TestLockAcrossProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	child := holdInChild(t, dir)
	_, err := LockDir(dir)
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("LockDir = %v, want a LockedError", err)
	}
	want := fmt.Sprintf("run directory %s is in use by whittle pid %d", dir, child.Process.Pid)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "started ") {
		t.Errorf("error %q does not say %q and when it started", err, want)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	l, err := LockDir(dir)
	if err != nil {
		t.Fatalf("the lock of a killed holder is still held: %v", err)
	}
	if h := readHolder(filepath.Join(dir, HolderName)); h == nil || h.PID != os.Getpid() {
		t.Errorf("holder record %+v, want this process", h)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, HolderName)); !os.IsNotExist(err) {
		t.Errorf("holder record left after unlock: %v", err)
	}
}

// TestRunRefusesHeldDirectory: a run into a directory another run holds
// fails with the holder's identity and changes nothing there.
func TestRunRefusesHeldDirectory(t *testing.T) {
	work, recipePath := scaleWork(t)
	runs, fail := 0, ""
	reg := NewRegistry()
	if err := reg.Register(scalePass{runs: &runs, fail: &fail}); err != nil {
		t.Fatal(err)
	}
	r, diags := recipe.Load(recipePath, nil, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	runDir := filepath.Join(work, "run")
	if _, err := Run(context.Background(), r, reg, Options{Dir: runDir}, Events{}); err != nil {
		t.Fatal(err)
	}
	before, err := hashTree(runDir, runDir)
	if err != nil {
		t.Fatal(err)
	}

	// The first holder: another handle on the lock, as a concurrent run has.
	held, err := LockDir(runDir)
	if err != nil {
		t.Fatal(err)
	}
	// A changed variable would make the second run redo every pass.
	r2, diags := recipe.Load(recipePath, map[string]string{"factor": "5"}, reg.Language())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	runs = 0
	_, err = Run(context.Background(), r2, reg, Options{Dir: runDir}, Events{})
	want := fmt.Sprintf("in use by whittle pid %d", os.Getpid())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second run: %v, want %q", err, want)
	}
	if runs != 0 {
		t.Errorf("the refused run executed %d passes", runs)
	}
	after, err := hashTree(runDir, runDir)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("the refused run changed the run directory:\nbefore %v\nafter  %v", before, after)
	}
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), r2, reg, Options{Dir: runDir}, Events{}); err != nil {
		t.Fatalf("run after the holder let go: %v", err)
	}
	if runs != 2 {
		t.Errorf("the run after release executed %d passes, want 2", runs)
	}
}

package sdk

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/whittle-ml/whittle/core/plugin/wire"
)

// hostWatch ends a plugin whose whittle is gone, so that no plugin
// outlives its host however the host died (SIGKILL included): the host
// holds the plugin's stdin open and never writes it, so end-of-file there
// means it is gone; on Unix the plugin's parent process id changing means
// the same. (On Linux the host also asks the kernel for a parent-death
// signal.)
type hostWatch struct {
	stdin io.Reader  // nil: not watched
	ppid  func() int // nil: not watched
	poll  time.Duration
	gone  func(reason string)
	stop  <-chan struct{} // ends the parent polling (tests); nil: never
}

func (w hostWatch) start() {
	if w.stdin != nil {
		go func() {
			_, _ = io.Copy(io.Discard, w.stdin)
			w.gone("whittle closed the plugin's stdin")
		}()
	}
	if w.ppid == nil {
		return
	}
	parent := w.ppid()
	if parent <= 1 {
		return // already orphaned, or started by init: nothing to compare
	}
	go func() {
		t := time.NewTicker(w.poll)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			if w.ppid() != parent {
				w.gone(fmt.Sprintf("whittle (process %d) is gone", parent))
				return
			}
		}
	}()
}

// watchHost starts the watch for a served plugin, and ends the plugin on
// SIGTERM too (go-plugin ignores interrupts, and whittle's own command
// line would only cancel a context on SIGTERM).
func watchHost() {
	w := hostWatch{ppid: parentPID(), poll: time.Second, gone: func(reason string) { exitPlugin(reason, 1) }}
	if os.Getenv(wire.HostStdinEnv) == "1" {
		w.stdin = os.Stdin
	}
	w.start()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		exitPlugin("terminated", 128+15)
	}()
}

// exitPlugin removes the socket directory the host gave the plugin (the
// host is gone, or ending it) and exits.
func exitPlugin(reason string, code int) {
	if dir := os.Getenv(goplugin.EnvUnixSocketDir); dir != "" && filepath.IsAbs(dir) {
		_ = os.RemoveAll(dir)
	}
	fmt.Fprintf(stderr, "%s: exiting: %s\n", filepath.Base(os.Args[0]), reason)
	os.Exit(code)
}

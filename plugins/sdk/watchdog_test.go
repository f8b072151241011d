package sdk

import (
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHostWatch: the plugin is told its host is gone when its stdin ends
// or its parent process id changes, and not otherwise.
func TestHostWatch(t *testing.T) {
	for _, c := range []struct {
		name     string
		stdinEOF bool // nil stdin when false
		ppids    []int
		want     string // "" wants no call
	}{
		{"stdin ends", true, nil, "stdin"},
		{"parent changes", false, []int{42, 42, 1}, "process 42"},
		{"parent stays", false, []int{42}, ""},
		{"started orphaned", false, []int{1, 7}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			gone := make(chan string, 2)
			stop := make(chan struct{})
			defer close(stop)
			w := hostWatch{poll: time.Millisecond, gone: func(r string) { gone <- r }, stop: stop}
			var block *io.PipeWriter
			if c.stdinEOF {
				w.stdin = strings.NewReader("ignored bytes")
			} else {
				var r *io.PipeReader
				r, block = io.Pipe() // never ends during the test
				w.stdin = r
				defer block.Close()
			}
			if c.ppids != nil {
				var n atomic.Int64
				w.ppid = func() int {
					i := int(n.Add(1)) - 1
					return c.ppids[min(i, len(c.ppids)-1)]
				}
			}
			w.start()
			if c.want == "" {
				// The watch polls every millisecond; give it many polls.
				select {
				case r := <-gone:
					t.Fatalf("host reported gone: %s", r)
				case <-time.After(100 * time.Millisecond):
				}
				return
			}
			select {
			case r := <-gone:
				if !strings.Contains(r, c.want) {
					t.Errorf("reason %q lacks %q", r, c.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the watch did not notice")
			}
		})
	}
}

package main

import (
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestOnInterrupt: the first interrupt cancels the command; a second, or
// the command outliving the grace period, forces the exit.
func TestOnInterrupt(t *testing.T) {
	for _, c := range []struct {
		name    string
		signals int
		grace   time.Duration
		force   bool
	}{
		{"one interrupt, command winds down", 1, time.Hour, false},
		{"second interrupt", 2, time.Hour, true},
		{"command outlives the grace", 1, time.Millisecond, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			sigs := make(chan os.Signal, 2)
			cancelled := make(chan struct{})
			forced := make(chan struct{})
			var cancels atomic.Int32
			go onInterrupt(sigs, func() {
				if cancels.Add(1) == 1 {
					close(cancelled)
				}
			}, c.grace, func() { close(forced) })
			for range c.signals {
				sigs <- os.Interrupt
			}
			<-cancelled
			if !c.force {
				select {
				case <-forced:
					t.Fatal("forced after a single interrupt")
				case <-time.After(50 * time.Millisecond):
				}
				return
			}
			select {
			case <-forced:
			case <-time.After(30 * time.Second):
				t.Fatal("not forced")
			}
		})
	}
}

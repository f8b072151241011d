// Package version reports which whittle build is running.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is set at link time by the Makefile (-X); builds without it
// fall back to the module's version or VCS revision.
var Version = ""

// String returns the best version string available.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "devel-" + s.Value[:12]
			}
		}
	}
	return "devel"
}

// Go is the toolchain the binary was built with.
func Go() string { return runtime.Version() }

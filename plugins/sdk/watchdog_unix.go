//go:build unix

package sdk

import "os"

// parentPID reads the parent process id, which changes to that of init
// (or a subreaper) when the parent dies.
func parentPID() func() int { return os.Getppid }

//go:build !unix

package sdk

// parentPID is nil: here the parent process id does not change when the
// parent dies, so only stdin is watched.
func parentPID() func() int { return nil }

//go:build !unix

package plugin

import (
	"errors"
	"os/exec"
)

// setProcAttr does nothing here: plugins notice whittle is gone through
// their stdin (see wire.HostStdinEnv).
func setProcAttr(*exec.Cmd) {}

func startCmd(cmd *exec.Cmd, _ <-chan struct{}) error { return cmd.Start() }

// killGroup is not available; the caller kills the process alone.
func killGroup(int) error { return errors.ErrUnsupported }

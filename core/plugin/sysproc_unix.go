//go:build unix && !linux

package plugin

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the plugin in a process group of its own, so that
// ending it also ends what it started. There is no parent-death signal
// here: plugins notice whittle is gone through their stdin (see
// wire.HostStdinEnv) and their parent process id.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func startCmd(cmd *exec.Cmd, _ <-chan struct{}) error { return cmd.Start() }

// killGroup ends the process group pid leads.
func killGroup(pid int) error { return syscall.Kill(-pid, syscall.SIGKILL) }

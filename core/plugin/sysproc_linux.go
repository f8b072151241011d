package plugin

import (
	"os/exec"
	"runtime"
	"syscall"
)

// setProcAttr puts the plugin in a process group of its own, so that
// ending it also ends what it started (a shell wrapper's children hold
// its output pipes open), and has the kernel send it SIGTERM when whittle
// dies, however it dies.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// startCmd starts cmd from an OS thread that lives until exited is
// closed: Linux sends the parent-death signal when the thread that forked
// the child exits, not the process, and Go may end a thread whose
// goroutine locked it.
func startCmd(cmd *exec.Cmd, exited <-chan struct{}) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := cmd.Start()
		errc <- err
		if err == nil {
			<-exited
		}
		// Returning without UnlockOSThread ends the thread; the child is
		// gone or never started by now.
	}()
	return <-errc
}

// killGroup ends the process group pid leads.
func killGroup(pid int) error { return syscall.Kill(-pid, syscall.SIGKILL) }

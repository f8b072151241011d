//go:build unix

package bench

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// PeakRSS is this process's high-water resident set size in bytes:
// VmHWM from /proc/self/status where there is one, else getrusage's
// ru_maxrss.
func PeakRSS() (int64, error) {
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		if v, ok := parseVmHWM(data); ok {
			return v, nil
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("bench: getrusage: %w", err)
	}
	return maxRSSBytes(&ru), nil
}

// childPeakRSS is the peak RSS of a finished child process, 0 when the
// system does not report it.
func childPeakRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru != nil {
		return maxRSSBytes(ru)
	}
	return 0
}

// maxRSSBytes converts ru_maxrss, which Darwin reports in bytes and the
// other Unix systems in KiB.
func maxRSSBytes(ru *syscall.Rusage) int64 {
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		return int64(ru.Maxrss)
	}
	return int64(ru.Maxrss) * 1024
}

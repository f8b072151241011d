//go:build !unix

package bench

import (
	"errors"
	"os"
)

// PeakRSS is not available on this system.
func PeakRSS() (int64, error) {
	return 0, errors.New("bench: peak RSS is only measured on Unix systems")
}

func childPeakRSS(*os.ProcessState) int64 { return 0 }

package bench

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// parseVmHWM reads the "VmHWM:  1234 kB" line of a /proc/PID/status file.
func parseVmHWM(data []byte) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<52 {
			return 0, false
		}
		return kb * 1024, true
	}
	return 0, false
}

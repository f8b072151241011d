package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"

	"github.com/whittle-ml/whittle/internal/fsutil"
)

// Lock files in a run directory. The OS lock (flock on Unix, LockFileEx on
// Windows) on LockName is what excludes a second run; the kernel drops it
// when the holder dies, even by SIGKILL, so a lock is never stale. HolderName
// only says who holds it: Windows locks the lock file's first byte, so the
// holder cannot be written there for others to read. Both start with a dot
// so that artifact hashing skips them.
const (
	LockName   = ".whittle.lock"
	HolderName = ".whittle.holder"
)

// Holder describes the process holding a run directory.
type Holder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
}

// ErrLocked is returned (wrapped in a *LockedError) when another run holds
// the run directory.
var ErrLocked = errors.New("run directory is in use")

// LockedError says which run directory is held, and by whom when known.
type LockedError struct {
	Dir    string
	Holder *Holder // nil when the holder did not say
}

func (e *LockedError) Error() string {
	if h := e.Holder; h != nil {
		return fmt.Sprintf("run directory %s is in use by whittle pid %d on %s (started %s); wait for it to finish or use another --out",
			e.Dir, h.PID, h.Host, h.Started.Local().Format(time.RFC3339))
	}
	return fmt.Sprintf("run directory %s is in use by another whittle run; wait for it to finish or use another --out", e.Dir)
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// DirLock is a held run-directory lock.
type DirLock struct {
	fl     *flock.Flock
	holder string
}

// LockDir takes the run directory's lock without waiting, creating dir if
// needed. When another process (or another DirLock in this one) holds it,
// the error is a *LockedError naming the holder, and nothing in dir changes.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the run directory: %w", err)
	}
	fl := flock.New(filepath.Join(dir, LockName))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("locking the run directory %s: %w", dir, err)
	}
	holderPath := filepath.Join(dir, HolderName)
	if !ok {
		return nil, &LockedError{Dir: dir, Holder: readHolder(holderPath)}
	}
	host, _ := os.Hostname()
	b, err := json.Marshal(Holder{PID: os.Getpid(), Host: host, Started: time.Now().UTC()})
	if err == nil {
		err = fsutil.WriteFile(holderPath, append(b, '\n'))
	}
	if err != nil {
		_ = fl.Unlock()
		return nil, fmt.Errorf("recording the run directory's holder: %w", err)
	}
	return &DirLock{fl: fl, holder: holderPath}, nil
}

// Unlock releases the lock. The lock file stays: removing it would let a
// third run lock a new file while a second still waits on the old one.
func (l *DirLock) Unlock() error {
	if l == nil || l.fl == nil {
		return nil
	}
	err := os.Remove(l.holder)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	err = errors.Join(err, l.fl.Unlock())
	l.fl = nil
	return err
}

// readHolder reads the holder record; nil when missing or unreadable (the
// holder may be between taking the lock and writing it).
func readHolder(path string) *Holder {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var h Holder
	if json.Unmarshal(b, &h) != nil || h.PID == 0 {
		return nil
	}
	return &h
}

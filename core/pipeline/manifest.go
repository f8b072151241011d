package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/whittle-ml/whittle/internal/fsutil"
)

// ManifestName is the manifest's file name inside a run directory.
const ManifestName = "manifest.json"

// Manifest records everything needed to audit and reproduce a run.
type Manifest struct {
	Whittle   string                     `json:"whittle_version"`
	Go        string                     `json:"go_version"`
	Platform  string                     `json:"platform"`
	Started   time.Time                  `json:"started"`
	Updated   time.Time                  `json:"updated"`
	Recipe    FileRecord                 `json:"recipe"`
	Variables map[string]json.RawMessage `json:"variables"`
	// Status is the run's: running until it ends (and after it is
	// killed), then done or failed.
	Status string `json:"status,omitempty"`
	// Planned names the recipe's passes in order, run or not.
	Planned []string     `json:"planned,omitempty"`
	Inputs  []FileRecord `json:"inputs"`
	Passes  []PassRecord `json:"passes"`
	Outputs []FileRecord `json:"outputs"`
}

// FileRecord names a file (or directory of files) by content.
type FileRecord struct {
	Name   string `json:"name,omitempty"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// Pass statuses.
const (
	StatusDone    = "done"
	StatusRunning = "running"
	StatusFailed  = "failed"
)

// PassRecord is one pass's execution.
type PassRecord struct {
	Index     int             `json:"index"`
	Name      string          `json:"name"`
	Kind      string          `json:"kind"`
	Into      string          `json:"into,omitempty"`
	Key       string          `json:"key"`
	Config    json.RawMessage `json:"config"`
	Status    string          `json:"status"`
	Error     string          `json:"error,omitempty"`
	Started   time.Time       `json:"started"`
	Seconds   float64         `json:"seconds"`
	Resumed   bool            `json:"resumed,omitempty"`
	Metrics   map[string]any  `json:"metrics,omitempty"`
	Artifacts []FileRecord    `json:"artifacts,omitempty"`
}

// ReadManifest loads a run directory's manifest; a missing one is
// (nil, nil).
func ReadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

func (m *Manifest) write(path string) error {
	m.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, append(b, '\n'))
}

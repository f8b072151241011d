package cpu

import (
	"context"
	"fmt"

	"github.com/whittle-ml/whittle/core/backend"
	corebench "github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/plugins/cpu/bench"
)

var _ backend.Benchmarker = (*Backend)(nil)

// Bench times the engine on random weights (package bench), with the
// backend's thread count unless the request sets one. It holds the
// backend for the run: the timing must not share the cores with a job.
func (b *Backend) Bench(ctx context.Context, req corebench.Request) (*corebench.Result, error) {
	if err := req.Check(); err != nil {
		return nil, err
	}
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	if req.Threads == 0 {
		req.Threads = b.threads
	}
	res, err := bench.Run(ctx, bench.Options{Request: req})
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	return res, nil
}

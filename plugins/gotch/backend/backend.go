// Package backend is whittle's libtorch compute backend: core/backend's
// Backend interface over gotch's libtch, with libtorch autograd doing the
// backward pass.
//
// On CUDA, models being trained keep float32 master weights and run their
// matrix products in bfloat16 (what torch.autocast does, written out: each
// weight is cast once per forward, and autograd carries float32 gradients
// back to the master), attention goes through libtorch's fused
// scaled-dot-product kernel and AdamW through its fused multi-tensor
// kernel. Models loaded only to be evaluated or to teach are stored in
// bfloat16 and run without gradients. On the CPU everything is float32.
// Losses are computed a chunk of rows at a time with their gradient with
// respect to the logits formed directly, so batch × sequence × vocabulary
// logits never exist at once.
//
// Semantics (data order, masks, statistics, schedule, checkpoints'
// resumption rule) follow the CPU backend's; core/backend/conformance
// checks that both agree.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// Version is the backend's version, reported by Info.
const Version = "0.1.0"

// defaultBatch is the batch size of Stats and Evaluate when the request
// leaves it 0.
const defaultBatch = 8

// Options configures a Backend.
type Options struct {
	// Device is "cpu", "cuda" or "cuda:N"; "" or "auto" picks cuda:0 when
	// libtorch sees a GPU, else the CPU.
	Device string
	// Threads sets libtorch's intra-op threads (0 keeps libtorch's
	// default, which OMP_NUM_THREADS sets).
	Threads int
	// Precision is "bf16" (matrix products in bfloat16, float32 master
	// weights; the default on CUDA) or "fp32" (the default on the CPU,
	// and what conformance tests on a GPU use).
	Precision string
	// LossChunk is the number of rows whose logits are formed at once;
	// 0 picks about 32M logits' worth.
	LossChunk int
	// Log receives progress and diagnostics; nil discards them.
	Log *slog.Logger
}

// Backend is the libtorch backend. Every libtorch call runs on one
// goroutine locked to an OS thread, because libtorch keeps its error
// message, gradient mode and RNG state per thread; calls are therefore
// serialized. A Train events callback must not call back into the backend.
type Backend struct {
	dev       torch.Device
	compute   torch.DType // dtype of matrix products
	threads   int
	lossChunk int
	fused     bool // fused AdamW worth using (CUDA)
	sdpa      sdpaState
	masks     map[maskKey]torch.Tensor // attention masks by length and window
	log       *slog.Logger

	jobs chan func()   // never closed: senders also watch done
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the worker has exited

	// The fields below are owned by the worker goroutine.
	models map[api.ModelID]*model
	next   int

	closeOnce sync.Once
}

var _ api.Backend = (*Backend)(nil)

// New starts a backend on the device opts names.
func New(opts Options) (*Backend, error) {
	if opts.Threads < 0 || opts.LossChunk < 0 {
		return nil, fmt.Errorf("gotch: negative threads %d or loss chunk %d", opts.Threads, opts.LossChunk)
	}
	b := &Backend{log: opts.Log, lossChunk: opts.LossChunk, models: map[api.ModelID]*model{},
		jobs: make(chan func()), quit: make(chan struct{}), done: make(chan struct{})}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	ready := make(chan error, 1)
	go b.worker(opts, ready)
	if err := <-ready; err != nil {
		close(b.quit)
		<-b.done
		return nil, err
	}
	return b, nil
}

// worker runs every libtorch call, locked to its thread for the backend's
// lifetime.
func (b *Backend) worker(opts Options, ready chan<- error) {
	runtime.LockOSThread()
	defer close(b.done)
	ready <- b.setup(opts)
	for running := true; running; {
		select {
		case f := <-b.jobs:
			f()
		case <-b.quit:
			running = false
		}
	}
	for _, m := range b.models {
		m.free()
	}
	for _, t := range b.masks {
		torch.Free(t)
	}
	b.models, b.masks = nil, nil
}

func (b *Backend) setup(opts Options) error {
	dev, err := parseDevice(opts.Device)
	if err != nil {
		return err
	}
	b.dev = dev
	if opts.Threads > 0 {
		torch.SetThreads(opts.Threads)
	}
	b.threads = torch.Threads()
	switch strings.ToLower(opts.Precision) {
	case "":
		b.compute = torch.Float32
		if dev.IsCUDA() {
			b.compute = torch.BFloat16
		}
	case "fp32", "f32", "float32":
		b.compute = torch.Float32
	case "bf16", "bfloat16":
		b.compute = torch.BFloat16
	default:
		return fmt.Errorf("gotch: unknown precision %q (want bf16 or fp32)", opts.Precision)
	}
	// The fused paths change float rounding; on the CPU whittle wants
	// results that match the CPU backend's float32 closely.
	b.fused = dev.IsCUDA()
	torch.SetGradEnabled(false)
	b.log.Info("gotch backend ready", "device", dev, "libtorch", torch.Version(), "compute", b.compute, "threads", b.threads)
	return nil
}

func parseDevice(s string) (torch.Device, error) {
	switch s = strings.ToLower(strings.TrimSpace(s)); s {
	case "", "auto":
		if torch.CUDAAvailable() {
			return torch.CUDA(0), nil
		}
		return torch.CPU, nil
	case "cpu":
		return torch.CPU, nil
	case "cuda", "gpu":
		s = "cuda:0"
	}
	idx, ok := strings.CutPrefix(s, "cuda:")
	n, err := strconv.Atoi(idx)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("gotch: unknown device %q (want cpu, cuda or cuda:N)", s)
	}
	if !torch.CUDAAvailable() {
		return 0, fmt.Errorf("gotch: device %s requested but libtorch %s sees no CUDA device (is libtch.so built against a CUDA libtorch?)", s, torch.Version())
	}
	if c := torch.CUDADeviceCount(); n >= c {
		return 0, fmt.Errorf("gotch: device %s requested but there are %d CUDA devices", s, c)
	}
	return torch.CUDA(n), nil
}

var errClosed = errors.New("gotch: backend is closed")

// do runs f on the worker and waits for it. A panic in f (a bug, not bad
// input: inputs are checked before libtorch sees them) becomes an error.
func (b *Backend) do(ctx context.Context, f func() error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	res := make(chan error, 1)
	job := func() {
		defer func() {
			if r := recover(); r != nil {
				res <- fmt.Errorf("gotch: internal error: %v", r)
			}
		}()
		res <- f()
	}
	select {
	case b.jobs <- job:
	case <-b.done:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-res
}

// Info describes the backend.
func (b *Backend) Info(ctx context.Context) (api.Info, error) {
	var info api.Info
	err := b.do(ctx, func() error {
		info = api.Info{
			Name:    "gotch",
			Version: Version + "+libtorch" + torch.Version(),
			Device:  b.dev.String(),
			Threads: b.threads,
			Capabilities: []string{
				api.CapTrain, api.CapLoRA, api.CapStats, api.CapEvaluate, api.CapGenerate, api.CapBench,
			},
		}
		return nil
	})
	return info, err
}

// Close releases every model and stops the worker; later calls fail.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		close(b.quit)
		<-b.done
	})
	return nil
}

func (b *Backend) model(id api.ModelID) (*model, error) {
	m, ok := b.models[id]
	if !ok {
		return nil, fmt.Errorf("gotch: no model %q is loaded", id)
	}
	return m, nil
}

func batchSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("negative batch size %d", n)
	case n == 0:
		return defaultBatch, nil
	}
	return n, nil
}

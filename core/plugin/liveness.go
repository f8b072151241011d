package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// StalledError is a plugin that stopped answering: its process is alive
// but did not answer a health check in time (frozen with SIGSTOP, a
// deadlock, a machine that swaps). whittle ends it; the pass is recorded
// as failed and the run stays resumable.
type StalledError struct {
	Plugin  string // label: `plugin "x" (/path)`
	Op      string // what whittle was doing, "" when idle
	Timeout time.Duration
}

func (e *StalledError) Error() string {
	during := ""
	if e.Op != "" {
		during = " during " + e.Op
	}
	return fmt.Sprintf("%s stopped responding%s (no answer to a health check within %s), so whittle ended it; run the recipe again with the same run directory to resume",
		e.Plugin, during, e.Timeout)
}

// errEnded cancels the calls still in flight when a plugin is ended.
var errEnded = errors.New("the plugin was ended")

const healthCheckMethod = "/grpc.health.v1.Health/Check"

// bind returns ctx, also cancelled when the plugin is found stalled or is
// ended, so that no call outlives the plugin's liveness.
func (p *proc) bind(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(p.alive, func() { cancel(context.Cause(p.alive)) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// unary and stream are the gRPC client interceptors of a plugin's
// connection (go-plugin's own calls, such as Shutdown, included).
func (p *proc) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == healthCheckMethod {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	ctx, done := p.bind(ctx)
	defer done()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (p *proc) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, done := p.bind(ctx)
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		done()
		return nil, err
	}
	return &boundStream{ClientStream: s, done: sync.OnceFunc(done)}, nil
}

// boundStream releases its binding when the stream ends.
type boundStream struct {
	grpc.ClientStream
	done func()
}

func (s *boundStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.done()
	}
	return err
}

// watch health-checks the plugin every interval until it exits or is
// ended; a check unanswered within timeout marks it stalled, which
// cancels the calls in flight, and ends it.
func (p *proc) watch(interval, timeout time.Duration) {
	hc := healthpb.NewHealthClient(p.conn.Conn)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-p.alive.Done():
			return
		case <-p.conn.Done.Done():
			return // exited: the calls see a crash
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(p.alive, timeout)
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: goplugin.GRPCServiceName})
		timedOut := ctx.Err() == context.DeadlineExceeded
		cancel()
		if err == nil || !timedOut || p.client.Exited() {
			continue // answered, or failing for another reason: the calls tell
		}
		p.h.log.Error("plugin stopped responding; ending it", "plugin", p.label, "timeout", timeout)
		p.stop(&StalledError{Plugin: p.label, Timeout: timeout})
		go p.end(0)
		return
	}
}

// stalled returns the plugin's StalledError, if it was found stalled.
func (p *proc) stalled(op string) error {
	var se *StalledError
	if errors.As(context.Cause(p.alive), &se) {
		return &StalledError{Plugin: se.Plugin, Op: op, Timeout: se.Timeout}
	}
	return nil
}

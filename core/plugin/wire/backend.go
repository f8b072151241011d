package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/bench"
	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
)

// closeTimeout bounds the Close call, which must not hang a run on a stuck
// plugin.
const closeTimeout = 10 * time.Second

// OpenFunc returns the backend a BackendServer serves, given the recipe's
// backend block attributes as a JSON object.
type OpenFunc func(ctx context.Context, config json.RawMessage) (backend.Backend, error)

// BackendServer serves a backend.Backend as the Backend gRPC service.
type BackendServer struct {
	pb.UnimplementedBackendServer
	open OpenFunc
	// owned: Close closes the backend. A backend the host lends to a pass
	// plugin belongs to the run, which closes it when it ends.
	owned bool

	mu sync.Mutex
	b  backend.Backend
}

// NewBackendServer serves the backend open returns on the Open call. When
// owned, the Close call closes it.
func NewBackendServer(open OpenFunc, owned bool) *BackendServer {
	return &BackendServer{open: open, owned: owned}
}

func (s *BackendServer) get() (backend.Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b == nil {
		return nil, status.Error(codes.FailedPrecondition, "the backend was not opened (Open must come first)")
	}
	return s.b, nil
}

// Open implements pb.BackendServer.
func (s *BackendServer) Open(ctx context.Context, req *pb.OpenRequest) (*pb.OpenResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b != nil {
		return nil, status.Error(codes.FailedPrecondition, "the backend is already open")
	}
	cfg := json.RawMessage(req.GetConfigJson())
	if len(cfg) == 0 {
		cfg = json.RawMessage("{}")
	}
	b, err := s.open(ctx, cfg)
	if err != nil {
		return nil, ToStatus(err)
	}
	if b == nil {
		return nil, status.Error(codes.Internal, "the plugin returned no backend")
	}
	s.b = b
	return &pb.OpenResponse{}, nil
}

// decode unmarshals a request, reporting malformed JSON as InvalidArgument.
func decode(what string, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return status.Errorf(codes.InvalidArgument, "decoding the %s: %v", what, err)
	}
	return nil
}

// encode marshals a result. encoding/json refuses NaN and ±Inf, so a
// result holding one fails here with a message saying which.
func encode(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the %s: %v", what, err)
	}
	return b, nil
}

// Info implements pb.BackendServer.
func (s *BackendServer) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.InfoResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	info, err := b.Info(ctx)
	if err != nil {
		return nil, ToStatus(err)
	}
	out, err := encode("backend info", info)
	return &pb.InfoResponse{InfoJson: out}, err
}

// Load implements pb.BackendServer.
func (s *BackendServer) Load(ctx context.Context, req *pb.LoadRequest) (*pb.LoadResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	var r backend.LoadRequest
	if err := decode("Load request", req.GetRequestJson(), &r); err != nil {
		return nil, err
	}
	id, err := b.Load(ctx, r)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &pb.LoadResponse{Model: string(id)}, nil
}

// Save implements pb.BackendServer.
func (s *BackendServer) Save(ctx context.Context, req *pb.SaveRequest) (*pb.SaveResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	var r backend.SaveRequest
	if err := decode("Save request", req.GetRequestJson(), &r); err != nil {
		return nil, err
	}
	return &pb.SaveResponse{}, ToStatus(b.Save(ctx, r))
}

// Release implements pb.BackendServer.
func (s *BackendServer) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	return &pb.ReleaseResponse{}, ToStatus(b.Release(ctx, backend.ModelID(req.GetModel())))
}

// Stats implements pb.BackendServer.
func (s *BackendServer) Stats(ctx context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	var r backend.StatsRequest
	if err := decode("Stats request", req.GetRequestJson(), &r); err != nil {
		return nil, err
	}
	res, err := b.Stats(ctx, r)
	if err != nil {
		return nil, ToStatus(err)
	}
	out, err := encode("Stats result", res)
	return &pb.StatsResponse{ResultJson: out}, err
}

// Evaluate implements pb.BackendServer.
func (s *BackendServer) Evaluate(ctx context.Context, req *pb.EvaluateRequest) (*pb.EvaluateResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	var r backend.EvalRequest
	if err := decode("Evaluate request", req.GetRequestJson(), &r); err != nil {
		return nil, err
	}
	res, err := b.Evaluate(ctx, r)
	if err != nil {
		return nil, ToStatus(err)
	}
	out, err := encode("Evaluate result", res)
	return &pb.EvaluateResponse{ResultJson: out}, err
}

// Train implements pb.BackendServer: every event is one stream message,
// the result the last.
func (s *BackendServer) Train(req *pb.TrainRequest, stream pb.Backend_TrainServer) error {
	b, err := s.get()
	if err != nil {
		return err
	}
	var r backend.TrainRequest
	if err := decode("Train request", req.GetRequestJson(), &r); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	var sendErr error
	res, err := b.Train(ctx, r, func(ev backend.TrainEvent) {
		if sendErr != nil {
			return
		}
		data, err := encode("training event", ev)
		if err == nil {
			err = stream.Send(&pb.TrainMessage{Msg: &pb.TrainMessage_EventJson{EventJson: data}})
		}
		if err != nil {
			// The host is gone or the event cannot be encoded: stop
			// training rather than run on unobserved.
			sendErr = err
			cancel()
		}
	})
	if sendErr != nil {
		return sendErr
	}
	if err != nil {
		return ToStatus(err)
	}
	data, err := encode("Train result", res)
	if err != nil {
		return err
	}
	return stream.Send(&pb.TrainMessage{Msg: &pb.TrainMessage_ResultJson{ResultJson: data}})
}

// Generate implements pb.BackendServer.
func (s *BackendServer) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	var r backend.GenerateRequest
	if err := decode("Generate request", req.GetRequestJson(), &r); err != nil {
		return nil, err
	}
	res, err := b.Generate(ctx, r)
	if err != nil {
		return nil, ToStatus(err)
	}
	out, err := encode("Generate result", res)
	return &pb.GenerateResponse{ResultJson: out}, err
}

// Bench implements pb.BackendServer: a backend that is no
// backend.Benchmarker answers Unimplemented.
func (s *BackendServer) Bench(ctx context.Context, req *pb.BenchRequest) (*pb.BenchResponse, error) {
	b, err := s.get()
	if err != nil {
		return nil, err
	}
	bm, ok := b.(backend.Benchmarker)
	if !ok {
		return nil, ToStatus(fmt.Errorf("bench: %w", backend.ErrUnsupported))
	}
	var r bench.Request
	if err := decode("Bench request", req.GetRequestJson(), &r); err != nil {
		return nil, err
	}
	res, err := bm.Bench(ctx, r)
	if err != nil {
		return nil, ToStatus(err)
	}
	out, err := encode("Bench result", res)
	return &pb.BenchResponse{ResultJson: out}, err
}

// Close implements pb.BackendServer.
func (s *BackendServer) Close(context.Context, *pb.CloseRequest) (*pb.CloseResponse, error) {
	s.mu.Lock()
	b := s.b
	s.mu.Unlock()
	if b == nil || !s.owned {
		return &pb.CloseResponse{}, nil
	}
	return &pb.CloseResponse{}, ToStatus(b.Close())
}

// BackendClient is a backend.Backend that calls a Backend service.
type BackendClient struct {
	c pb.BackendClient
	// wrap, when set, turns every error into the caller's terms (the host
	// names the plugin and notices a crashed process).
	wrap func(op string, err error) error
	// onClose runs after the Close call (the host ends the process).
	onClose func() error
}

// NewBackendClient returns a backend calling c. wrap and onClose may be nil.
func NewBackendClient(c pb.BackendClient, wrap func(op string, err error) error, onClose func() error) *BackendClient {
	return &BackendClient{c: c, wrap: wrap, onClose: onClose}
}

var _ backend.Backend = (*BackendClient)(nil)

func (c *BackendClient) fail(op string, err error) error {
	err = FromStatus(err)
	if c.wrap != nil {
		return c.wrap(op, err)
	}
	return err
}

func (c *BackendClient) request(op string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: encoding the request: %w", op, err)
	}
	return b, nil
}

func (c *BackendClient) result(op string, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return c.fail(op, fmt.Errorf("decoding the result: %w", err))
	}
	return nil
}

// Open passes the backend block's attributes to the plugin.
func (c *BackendClient) Open(ctx context.Context, config json.RawMessage) error {
	_, err := c.c.Open(ctx, &pb.OpenRequest{ConfigJson: config})
	if err != nil {
		return c.fail("Open", err)
	}
	return nil
}

// Info implements backend.Backend.
func (c *BackendClient) Info(ctx context.Context) (backend.Info, error) {
	res, err := c.c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return backend.Info{}, c.fail("Info", err)
	}
	var info backend.Info
	return info, c.result("Info", res.GetInfoJson(), &info)
}

// Load implements backend.Backend.
func (c *BackendClient) Load(ctx context.Context, req backend.LoadRequest) (backend.ModelID, error) {
	data, err := c.request("Load", req)
	if err != nil {
		return "", err
	}
	res, err := c.c.Load(ctx, &pb.LoadRequest{RequestJson: data})
	if err != nil {
		return "", c.fail("Load", err)
	}
	return backend.ModelID(res.GetModel()), nil
}

// Save implements backend.Backend.
func (c *BackendClient) Save(ctx context.Context, req backend.SaveRequest) error {
	data, err := c.request("Save", req)
	if err != nil {
		return err
	}
	if _, err := c.c.Save(ctx, &pb.SaveRequest{RequestJson: data}); err != nil {
		return c.fail("Save", err)
	}
	return nil
}

// Release implements backend.Backend.
func (c *BackendClient) Release(ctx context.Context, id backend.ModelID) error {
	if _, err := c.c.Release(ctx, &pb.ReleaseRequest{Model: string(id)}); err != nil {
		return c.fail("Release", err)
	}
	return nil
}

// Stats implements backend.Backend.
func (c *BackendClient) Stats(ctx context.Context, req backend.StatsRequest) (*backend.StatsResult, error) {
	data, err := c.request("Stats", req)
	if err != nil {
		return nil, err
	}
	res, err := c.c.Stats(ctx, &pb.StatsRequest{RequestJson: data})
	if err != nil {
		return nil, c.fail("Stats", err)
	}
	var out backend.StatsResult
	if err := c.result("Stats", res.GetResultJson(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Evaluate implements backend.Backend.
func (c *BackendClient) Evaluate(ctx context.Context, req backend.EvalRequest) (*backend.EvalResult, error) {
	data, err := c.request("Evaluate", req)
	if err != nil {
		return nil, err
	}
	res, err := c.c.Evaluate(ctx, &pb.EvaluateRequest{RequestJson: data})
	if err != nil {
		return nil, c.fail("Evaluate", err)
	}
	var out backend.EvalResult
	if err := c.result("Evaluate", res.GetResultJson(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Train implements backend.Backend.
func (c *BackendClient) Train(ctx context.Context, req backend.TrainRequest, events func(backend.TrainEvent)) (*backend.TrainResult, error) {
	data, err := c.request("Train", req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.Train(ctx, &pb.TrainRequest{RequestJson: data})
	if err != nil {
		return nil, c.fail("Train", err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			// io.EOF before the result message is a stream the plugin
			// closed without finishing: a crash as far as we can tell.
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the training stream ended without a result")
			}
			return nil, c.fail("Train", err)
		}
		switch m := msg.GetMsg().(type) {
		case *pb.TrainMessage_EventJson:
			var ev backend.TrainEvent
			if err := c.result("Train", m.EventJson, &ev); err != nil {
				return nil, err
			}
			if events != nil {
				events(ev)
			}
		case *pb.TrainMessage_ResultJson:
			var out backend.TrainResult
			if err := c.result("Train", m.ResultJson, &out); err != nil {
				return nil, err
			}
			return &out, nil
		default:
			return nil, c.fail("Train", errors.New("unexpected empty message in the training stream"))
		}
	}
}

// Generate implements backend.Backend.
func (c *BackendClient) Generate(ctx context.Context, req backend.GenerateRequest) (*backend.GenerateResult, error) {
	data, err := c.request("Generate", req)
	if err != nil {
		return nil, err
	}
	res, err := c.c.Generate(ctx, &pb.GenerateRequest{RequestJson: data})
	if err != nil {
		return nil, c.fail("Generate", err)
	}
	var out backend.GenerateResult
	if err := c.result("Generate", res.GetResultJson(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Bench implements backend.Benchmarker; a plugin without it fails with
// backend.ErrUnsupported.
func (c *BackendClient) Bench(ctx context.Context, req bench.Request) (*bench.Result, error) {
	data, err := c.request("Bench", req)
	if err != nil {
		return nil, err
	}
	res, err := c.c.Bench(ctx, &pb.BenchRequest{RequestJson: data})
	if err != nil {
		return nil, c.fail("Bench", err)
	}
	var out bench.Result
	if err := c.result("Bench", res.GetResultJson(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Close implements backend.Backend: it asks the server to close, then runs
// onClose whatever the answer, so a dead plugin is still cleaned up.
func (c *BackendClient) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_, err := c.c.Close(ctx, &pb.CloseRequest{})
	if err != nil {
		err = c.fail("Close", err)
	}
	if c.onClose != nil {
		if cerr := c.onClose(); err == nil {
			err = cerr
		}
	}
	return err
}

package wire

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/whittle-ml/whittle/core/backend"
)

// ToStatus turns an error returned by an implementation into a gRPC status
// that FromStatus maps back, so that errors.Is keeps working across the
// process boundary for the sentinels callers test: backend.ErrUnsupported
// and the context errors.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	var re *RemoteError
	switch {
	case errors.Is(err, backend.ErrUnsupported):
		code = codes.Unimplemented
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.As(err, &re):
		// Relayed from a further hop (a pass plugin's backend call that
		// the host forwards to a backend plugin).
		code = re.Code
	}
	return status.Error(code, err.Error())
}

// RemoteError is an error that came over gRPC. Its message is the remote
// error's text; Unwrap gives the sentinel its code stands for.
type RemoteError struct {
	Code codes.Code
	Msg  string
}

func (e *RemoteError) Error() string { return e.Msg }

// GRPCStatus lets a relayed error keep its code.
func (e *RemoteError) GRPCStatus() *status.Status { return status.New(e.Code, e.Msg) }

// Unwrap maps the gRPC code back to the sentinel error ToStatus saw.
func (e *RemoteError) Unwrap() error {
	switch e.Code {
	case codes.Unimplemented:
		return backend.ErrUnsupported
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	}
	return nil
}

// Transport reports whether the call failed in the transport (the plugin
// process is gone or unreachable) rather than in the remote code.
func (e *RemoteError) Transport() bool {
	return e.Code == codes.Unavailable
}

// FromStatus turns a gRPC client error into a *RemoteError (nil stays nil).
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &RemoteError{Code: st.Code(), Msg: st.Message()}
}

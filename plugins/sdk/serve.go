package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
	"github.com/whittle-ml/whittle/core/plugin/wire"
	"github.com/whittle-ml/whittle/internal/version"
)

// Plugin is everything one plugin binary serves.
type Plugin struct {
	// Name and Version identify the plugin in `whittle plugins` and in
	// run manifests; a new Version makes whittle re-run the plugin's passes
	// on resume.
	Name    string
	Version string
	// Passes are the pass kinds the plugin offers.
	Passes []Pass
	// Backend, when set, makes the plugin a compute backend: whittle calls
	// it once per `backend` block naming the plugin, with the block's other
	// attributes as a JSON object.
	Backend func(config json.RawMessage) (Backend, error)
}

// ServePass serves pass kinds. Call it from main; it returns only if the
// plugin is misconfigured, after printing why.
func ServePass(name, version string, passes ...Pass) {
	Serve(Plugin{Name: name, Version: version, Passes: passes})
}

// ServeBackend serves one backend; backend blocks' attributes are ignored.
func ServeBackend(b Backend) {
	ServeBackendFunc(func(json.RawMessage) (Backend, error) { return b, nil })
}

// ServeBackendFunc serves a backend built from the backend block's
// attributes (a JSON object).
func ServeBackendFunc(open func(config json.RawMessage) (Backend, error)) {
	Serve(Plugin{Backend: open})
}

// Serve serves a plugin over go-plugin. It does not return while whittle
// uses the plugin; it exits the process with status 1 when the plugin is
// misconfigured or run by hand, and when whittle is gone (see hostWatch).
func Serve(p Plugin) {
	if err := ServeVersion(p, wire.ProtocolVersion); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
}

// ServeVersion is Serve speaking a given plugin protocol version; tests use
// it to stand in for plugins built by older or newer SDKs. It returns an
// error for a misconfigured plugin.
func ServeVersion(p Plugin, protocol int) error {
	if p.Name == "" {
		p.Name = strings.TrimPrefix(filepath.Base(os.Args[0]), "whittle-plugin-")
	}
	if p.Backend == nil && len(p.Passes) == 0 {
		return errors.New("the plugin serves neither passes nor a backend")
	}
	srv := &server{p: p, kinds: map[string]Pass{}, protocol: protocol}
	for _, ps := range p.Passes {
		d, err := ps.describe()
		if err != nil {
			return err
		}
		if _, dup := srv.kinds[d.Kind]; dup {
			return fmt.Errorf("pass kind %q served twice", d.Kind)
		}
		srv.kinds[d.Kind] = ps
		srv.desc = append(srv.desc, d)
	}
	watchHost()
	offered := wire.OfferedVersions(os.Getenv(wire.ProtocolVersionsEnv))
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: wire.Handshake(protocol),
		// To a host of another protocol version the plugin serves
		// Describe alone, which says what version it speaks.
		VersionedPlugins: wire.PluginSet(protocol, offered, &wire.Plugin{Register: srv.register}, &wire.Plugin{Register: srv.registerDescribe}),
		GRPCServer:       goplugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: p.Name, Level: hclog.Info, JSONFormat: true, Output: stderr,
		}),
	})
	return nil
}

// stderr is the process's standard error as it was at start: once serving,
// go-plugin points os.Stderr at a pipe whose output whittle only shows as
// plain text, while the original stream carries structured log lines.
var stderr = os.Stderr

// Logger returns a logger for plugin code outside a pass's Run (backends):
// its records reach whittle's log, with their level and attributes,
// through the plugin's original stderr.
func Logger() *slog.Logger {
	return slog.New(wire.NewStderrHandler(stderr, slog.LevelDebug))
}

// server implements the Plugin and Pass services.
type server struct {
	pb.UnimplementedPluginServer
	pb.UnimplementedPassServer
	p        Plugin
	protocol int
	kinds    map[string]Pass
	desc     []*pb.PassKind
	broker   *goplugin.GRPCBroker
}

// registerDescribe registers the Plugin service alone, for a host of
// another protocol version.
func (s *server) registerDescribe(_ *goplugin.GRPCBroker, g *grpc.Server) error {
	pb.RegisterPluginServer(g, s)
	return nil
}

func (s *server) register(b *goplugin.GRPCBroker, g *grpc.Server) error {
	s.broker = b
	pb.RegisterPluginServer(g, s)
	if len(s.kinds) > 0 {
		pb.RegisterPassServer(g, s)
	}
	if s.p.Backend != nil {
		open := s.p.Backend
		pb.RegisterBackendServer(g, wire.NewBackendServer(func(_ context.Context, cfg json.RawMessage) (Backend, error) {
			return open(cfg)
		}, true))
	}
	return nil
}

// Describe implements pb.PluginServer.
func (s *server) Describe(context.Context, *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	return &pb.DescribeResponse{
		Name: s.p.Name, Version: s.p.Version, ProtocolVersion: uint32(s.protocol),
		SdkVersion: version.String(), Backend: s.p.Backend != nil, Passes: s.desc,
	}, nil
}

func (s *server) kind(name string) (Pass, error) {
	k, ok := s.kinds[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "this plugin serves no pass kind %q", name)
	}
	return k, nil
}

// Plan implements pb.PassServer.
func (s *server) Plan(_ context.Context, req *pb.PlanRequest) (*pb.PlanResponse, error) {
	k, err := s.kind(req.GetKind())
	if err != nil {
		return nil, err
	}
	pc := &PlanContext{PassName: req.GetPassName(), models: map[string]Config{}, scores: map[string]bool{}}
	for name, data := range req.GetModels() {
		var c Config
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "model.%s: decoding the architecture: %v", name, err)
		}
		pc.models[name] = c
	}
	for _, name := range req.GetScores() {
		pc.scores[name] = true
	}
	out, err := k.plan(pc, req.GetConfigJson())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	if out == nil {
		return &pb.PlanResponse{}, nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the planned architecture: %v", err)
	}
	return &pb.PlanResponse{ConfigJson: b}, nil
}

// Run implements pb.PassServer.
func (s *server) Run(ctx context.Context, req *pb.RunRequest) (*pb.RunResponse, error) {
	k, err := s.kind(req.GetKind())
	if err != nil {
		return nil, err
	}
	conn, err := s.broker.Dial(req.GetHostBrokerId())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connecting back to whittle: %v", err)
	}
	defer conn.Close()
	host := pb.NewHostClient(conn)
	rc := &RunContext{
		PassName: req.GetPassName(), Dir: req.GetDir(), RunDir: req.GetRunDir(),
		ctx: ctx, host: host, conn: conn,
	}
	rc.Log = slog.New(&hostLogHandler{ctx: ctx, host: host})
	defer rc.close()
	if err := k.run(ctx, rc, req.GetConfigJson()); err != nil {
		return nil, wire.ToStatus(err)
	}
	return &pb.RunResponse{}, nil
}

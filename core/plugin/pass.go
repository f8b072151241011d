package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data"
	"github.com/whittle-ml/whittle/core/pipeline"
	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
	"github.com/whittle-ml/whittle/core/plugin/wire"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/ir"
)

// Info describes a plugin found on the search path.
type Info struct {
	Name string
	Path string
	// SHA256 is the binary's digest, for pinning.
	SHA256 string
	// What the plugin says about itself (empty when it could not start).
	Version    string
	Protocol   int
	SDKVersion string
	Backend    bool
	Kinds      []string
	// Err is why the plugin could not be started or registered.
	Err error
}

// Describe starts every plugin on the search path, asks what it offers
// and ends it again; a plugin that fails has Err set.
func (h *Host) Describe(ctx context.Context) []Info {
	var out []Info
	for _, f := range h.Find() {
		info := Info{Name: f.Name, Path: f.Path}
		info.SHA256, info.Err = FileSHA256(f.Path)
		if info.Err == nil {
			var p *proc
			p, info.Err = h.start(ctx, fmt.Sprintf("plugin %q (%s)", f.Name, f.Path), []string{f.Path}, "")
			if info.Err == nil {
				fill(&info, p.desc)
				p.kill()
			}
		}
		out = append(out, info)
	}
	return out
}

func fill(info *Info, d *pb.DescribeResponse) {
	info.Version, info.Protocol, info.SDKVersion = d.GetVersion(), int(d.GetProtocolVersion()), d.GetSdkVersion()
	info.Backend, info.Kinds = d.GetBackend(), kindNames(d)
}

// RegisterPasses starts every plugin on the search path and registers the
// pass kinds it serves into reg. Plugins serving pass kinds keep running
// (Close ends them); the others are ended. A plugin that cannot start, or a
// kind that clashes with one already registered, is logged as a warning
// and reported in the returned infos; it does not stop the others.
func (h *Host) RegisterPasses(ctx context.Context, reg *pipeline.Registry) []Info {
	var out []Info
	for _, f := range h.Find() {
		info := Info{Name: f.Name, Path: f.Path}
		if err := h.registerPlugin(ctx, f, reg, &info); err != nil {
			info.Err = err
			h.log.Warn("plugin not loaded", "plugin", f.Name, "path", f.Path, "err", err)
			reg.Language().NoteUnavailable(err)
		}
		out = append(out, info)
	}
	return out
}

func (h *Host) registerPlugin(ctx context.Context, f Found, reg *pipeline.Registry, info *Info) error {
	sum, err := FileSHA256(f.Path)
	if err != nil {
		return err
	}
	info.SHA256 = sum
	desc, p, err := h.describe(ctx, f, sum)
	if err != nil {
		return err
	}
	fill(info, desc)
	if len(desc.GetPasses()) == 0 {
		if p != nil {
			p.kill()
		}
		return nil
	}
	impl := fmt.Sprintf("%s %s sha256:%s", desc.GetName(), desc.GetVersion(), sum)
	// p is nil when the description came from the cache: the process
	// starts on first use.
	pp := &passPlugin{h: h, name: f.Name, path: f.Path, p: p}
	var errs []error
	registered := 0
	for _, k := range desc.GetPasses() {
		a, err := newPassAdapter(pp, impl, k)
		if err == nil {
			err = reg.Register(a)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pass kind %q: %w", k.GetKind(), err))
			continue
		}
		registered++
	}
	if registered == 0 && p != nil {
		p.kill()
	}
	return errors.Join(errs...)
}

// describe returns what the plugin binary with this sha256 offers: from
// the cache when it holds the binary's description, else by starting it
// (the started process is returned, and its description cached).
func (h *Host) describe(ctx context.Context, f Found, sum string) (*pb.DescribeResponse, *proc, error) {
	var cached string
	if h.opts.CacheDir != "" {
		cached = filepath.Join(h.opts.CacheDir, sum+".pb")
		if data, err := os.ReadFile(cached); err == nil {
			d := &pb.DescribeResponse{}
			if err := proto.Unmarshal(data, d); err == nil && d.GetProtocolVersion() == ProtocolVersion {
				return d, nil, nil
			}
			h.log.Debug("ignoring an unreadable plugin description cache entry", "path", cached)
		}
	}
	p, err := h.start(ctx, fmt.Sprintf("plugin %q (%s)", f.Name, f.Path), []string{f.Path}, "")
	if err != nil {
		return nil, nil, err
	}
	if cached != "" {
		// A cache that cannot be written costs a start next time, nothing more.
		if data, err := proto.Marshal(p.desc); err == nil {
			if err := os.MkdirAll(h.opts.CacheDir, 0o755); err == nil {
				err = fsutil.WriteFile(cached, data)
			}
			if err != nil {
				h.log.Debug("plugin description not cached", "path", cached, "err", err)
			}
		}
	}
	return p.desc, p, nil
}

// passPlugin is a running pass plugin shared by its kinds' adapters. A
// process that died (a crash during an earlier pass) is started again on
// next use, so a long-lived host can run the recipe again.
type passPlugin struct {
	h          *Host
	name, path string

	mu sync.Mutex
	p  *proc
}

func (pp *passPlugin) get(ctx context.Context) (*proc, error) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.p != nil && pp.p.usable() {
		return pp.p, nil
	}
	p, err := pp.h.start(ctx, fmt.Sprintf("plugin %q (%s)", pp.name, pp.path), []string{pp.path}, "")
	if err != nil {
		return nil, err
	}
	pp.p = p
	return p, nil
}

// passAdapter is a plugin's pass kind as a pipeline.Pass.
type passAdapter struct {
	pp   *passPlugin
	kind string
	spec recipe.KindSpec
}

func newPassAdapter(pp *passPlugin, impl string, k *pb.PassKind) (*passAdapter, error) {
	schema := &recipe.Schema{Implementation: impl}
	for _, a := range k.GetAttributes() {
		as := recipe.AttrSpec{Name: a.GetName(), Required: a.GetRequired(), Doc: a.GetDoc(), Ref: a.GetRefKinds(), RefList: a.GetRefList()}
		if len(as.Ref) == 0 {
			ty, err := ctyjson.UnmarshalType(a.GetTypeJson())
			if err != nil {
				return nil, fmt.Errorf("attribute %q: type %s: %w", a.GetName(), a.GetTypeJson(), err)
			}
			if ty == cty.NilType {
				return nil, fmt.Errorf("attribute %q has no type", a.GetName())
			}
			as.Type = ty
		}
		schema.Attributes = append(schema.Attributes, as)
	}
	spec := recipe.KindSpec{
		Kind:        k.GetKind(),
		Description: fmt.Sprintf("%s (plugin %s)", k.GetDescription(), pp.name),
		Produces:    recipe.SlotKind(k.GetProduces()),
		Schema:      schema,
	}
	return &passAdapter{pp: pp, kind: k.GetKind(), spec: spec}, nil
}

// Spec implements pipeline.Pass.
func (a *passAdapter) Spec() recipe.KindSpec { return a.spec }

func dynamicConfig(p *recipe.Pass) (*recipe.DynamicConfig, []byte, error) {
	cfg, ok := p.Config.(*recipe.DynamicConfig)
	if !ok {
		return nil, nil, fmt.Errorf("pass %q: configuration is %T, not decoded by the plugin's schema", p.Name, p.Config)
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("pass %q: encoding the configuration: %w", p.Name, err)
	}
	return cfg, data, nil
}

// Plan implements pipeline.Pass: the plugin gets the architectures of the
// models its configuration refers to.
func (a *passAdapter) Plan(pc *pipeline.PlanContext, p *recipe.Pass) (*ir.Config, error) {
	cfg, data, err := dynamicConfig(p)
	if err != nil {
		return nil, err
	}
	req := &pb.PlanRequest{Kind: a.kind, PassName: p.Name, ConfigJson: data, Models: map[string][]byte{}}
	for _, ref := range cfg.Refs {
		switch ref.Kind {
		case string(recipe.SlotModel):
			c, err := pc.Model(ref)
			if err != nil {
				return nil, err
			}
			b, err := json.Marshal(c)
			if err != nil {
				return nil, err
			}
			req.Models[ref.Name] = b
		case string(recipe.SlotScores):
			if pc.HasScores(ref) {
				req.Scores = append(req.Scores, ref.Name)
			}
		}
	}
	proc, err := a.pp.get(context.Background())
	if err != nil {
		return nil, err
	}
	res, err := pb.NewPassClient(proc.conn.Conn).Plan(context.Background(), req)
	if err != nil {
		return nil, proc.wrap(fmt.Sprintf("planning pass %q", p.Name), err)
	}
	if len(res.GetConfigJson()) == 0 {
		return nil, nil
	}
	var out ir.Config
	if err := json.Unmarshal(res.GetConfigJson(), &out); err != nil {
		return nil, fmt.Errorf("%s: planning pass %q: decoding the architecture: %w", proc.label, p.Name, err)
	}
	return &out, nil
}

// Run implements pipeline.Pass. For the duration of the call the host
// serves the Host and Backend services to the plugin over the go-plugin
// broker.
func (a *passAdapter) Run(ctx context.Context, rc *pipeline.RunContext, p *recipe.Pass) error {
	_, data, err := dynamicConfig(p)
	if err != nil {
		return err
	}
	proc, err := a.pp.get(ctx)
	if err != nil {
		return err
	}
	hs := &hostServer{rc: rc}
	var (
		mu      sync.Mutex
		srv     *grpc.Server
		stopped bool
	)
	broker := proc.conn.Broker
	id := broker.NextId()
	served := make(chan struct{})
	go func() {
		defer close(served)
		broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
			s := grpc.NewServer(opts...)
			pb.RegisterHostServer(s, hs)
			pb.RegisterBackendServer(s, wire.NewBackendServer(func(ctx context.Context, _ json.RawMessage) (backend.Backend, error) {
				hs.mu.Lock()
				defer hs.mu.Unlock()
				return rc.Backend(ctx)
			}, false))
			mu.Lock()
			srv = s
			if stopped {
				s.Stop()
			}
			mu.Unlock()
			return s
		})
	}()
	_, err = pb.NewPassClient(proc.conn.Conn).Run(ctx, &pb.RunRequest{
		Kind: a.kind, PassName: p.Name, ConfigJson: data, HostBrokerId: id, Dir: rc.Dir, RunDir: rc.RunDir,
	})
	mu.Lock()
	stopped = true
	if srv != nil {
		srv.Stop()
	}
	mu.Unlock()
	if err == nil {
		<-served
		return nil
	}
	return proc.wrap(fmt.Sprintf("pass %q", p.Name), err)
}

// hostServer is the Host service for one pass run.
type hostServer struct {
	pb.UnimplementedHostServer
	mu sync.Mutex // RunContext is not safe for concurrent use
	rc *pipeline.RunContext
}

func hostErr(err error) error {
	if err == nil {
		return nil
	}
	return wire.ToStatus(err)
}

func (s *hostServer) ModelDir(_ context.Context, req *pb.ModelDirRequest) (*pb.ModelDirResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir, err := s.rc.ModelDir(recipe.Ref{Kind: string(recipe.SlotModel), Name: req.GetModel()})
	return &pb.ModelDirResponse{Dir: dir}, hostErr(err)
}

func (s *hostServer) Scores(_ context.Context, req *pb.ScoresRequest) (*pb.ScoresResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.rc.Scores(recipe.Ref{Kind: string(recipe.SlotScores), Name: req.GetScores()})
	if err != nil {
		return nil, hostErr(err)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding scores.%s: %v", req.GetScores(), err)
	}
	return &pb.ScoresResponse{TableJson: b}, nil
}

func (s *hostServer) PrepareDataset(_ context.Context, req *pb.PrepareDatasetRequest) (*pb.PrepareDatasetResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, err := s.rc.Tokenizer(recipe.Ref{Kind: string(recipe.SlotModel), Name: req.GetTokenizerModel()})
	if err != nil {
		return nil, hostErr(err)
	}
	prep, err := s.rc.PrepareDataset(recipe.Ref{Kind: "dataset", Name: req.GetDataset()}, tok, data.Options{
		SeqLen: int(req.GetSeqLen()), Packing: req.GetPacking(), Template: data.Template(req.GetTemplate()),
	})
	if err != nil {
		return nil, hostErr(err)
	}
	b, err := json.Marshal(prep)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the prepared dataset: %v", err)
	}
	return &pb.PrepareDatasetResponse{PreparedJson: b}, nil
}

func (s *hostServer) SetModelDir(_ context.Context, req *pb.SetModelDirRequest) (*pb.SetModelDirResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &pb.SetModelDirResponse{}, hostErr(s.rc.SetModelDir(req.GetDir()))
}

func (s *hostServer) SetScores(_ context.Context, req *pb.SetScoresRequest) (*pb.SetScoresResponse, error) {
	var t scores.Table
	if err := json.Unmarshal(req.GetTableJson(), &t); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decoding the scores table: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rc.SetScores(&t)
	return &pb.SetScoresResponse{}, nil
}

func (s *hostServer) Metric(_ context.Context, req *pb.MetricRequest) (*pb.MetricResponse, error) {
	var v any
	if err := json.Unmarshal(req.GetValueJson(), &v); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "metric %q: %v", req.GetName(), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rc.Metric(req.GetName(), v)
	return &pb.MetricResponse{}, nil
}

func (s *hostServer) Artifact(_ context.Context, req *pb.ArtifactRequest) (*pb.ArtifactResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rc.Artifact(req.GetPath())
	return &pb.ArtifactResponse{}, nil
}

func (s *hostServer) Progress(_ context.Context, req *pb.ProgressRequest) (*pb.ProgressResponse, error) {
	s.rc.Progress(int(req.GetDone()), int(req.GetTotal()), req.GetMessage())
	return &pb.ProgressResponse{}, nil
}

func (s *hostServer) Log(ctx context.Context, req *pb.LogRequest) (*pb.LogResponse, error) {
	var attrs map[string]any
	_ = json.Unmarshal(req.GetAttrsJson(), &attrs)
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, attrs[k])
	}
	level := slog.LevelInfo
	switch req.GetLevel() {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	if s.rc.Log != nil {
		s.rc.Log.Log(ctx, level, req.GetMessage(), args...)
	}
	return &pb.LogResponse{}, nil
}

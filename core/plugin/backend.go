package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/whittle-ml/whittle/core/backend"
	pb "github.com/whittle-ml/whittle/core/plugin/proto/whittle/plugin/v1"
	"github.com/whittle-ml/whittle/core/plugin/wire"
	"github.com/whittle-ml/whittle/core/recipe"
)

// OpenBackend starts the plugin a backend block names and returns its
// backend; closing the backend ends the process. Each call starts its own
// process.
func (h *Host) OpenBackend(ctx context.Context, b *recipe.Backend) (backend.Backend, error) {
	if b == nil || b.Plugin == "" {
		return nil, errors.New("the backend block names no plugin")
	}
	argv, err := h.command(b.Plugin)
	if err != nil {
		return nil, err
	}
	label := fmt.Sprintf("backend %q (plugin %s)", b.Name, b.Plugin)
	if cmd := strings.Join(argv, " "); cmd != b.Plugin {
		label = fmt.Sprintf("backend %q (plugin %q: %s)", b.Name, b.Plugin, cmd)
	}
	config, err := backendConfig(b)
	if err != nil {
		return nil, err
	}
	p, err := h.start(ctx, label, argv, b.SHA256)
	if err != nil {
		return nil, err
	}
	if !p.desc.GetBackend() {
		p.kill()
		return nil, fmt.Errorf("%s serves no backend (it offers pass kinds %s)", label, strings.Join(kindNames(p.desc), ", "))
	}
	wrap := func(op string, err error) error {
		if op == "Close" && p.exited(time.Second) {
			return nil // a dead plugin has nothing left to close; its crash was reported
		}
		return p.wrap(op, err)
	}
	be := wire.NewBackendClient(pb.NewBackendClient(p.conn.Conn), wrap, func() error {
		p.kill()
		return nil
	})
	if err := be.Open(ctx, config); err != nil {
		p.kill()
		return nil, err
	}
	h.log.Debug("backend plugin started", "backend", b.Name, "plugin", b.Plugin, "path", p.path, "version", p.desc.GetVersion())
	return be, nil
}

// backendConfig encodes a block's other attributes as a JSON object.
func backendConfig(b *recipe.Backend) (json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for name, v := range b.Config {
		data, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			return nil, fmt.Errorf("backend %q: attribute %q: %w", b.Name, name, err)
		}
		out[name] = data
	}
	return json.Marshal(out)
}

func kindNames(d *pb.DescribeResponse) []string {
	var out []string
	for _, k := range d.GetPasses() {
		out = append(out, k.GetKind())
	}
	sort.Strings(out)
	return out
}

// Provider is the pipeline.BackendProvider of the CLI: a backend block
// with a plugin attribute runs in that plugin's process, anything else on
// the built-in backend, in process.
type Provider struct {
	Host *Host
	// Default builds the built-in, in-process backend; nil means this
	// build has none.
	Default func() (backend.Backend, error)
}

// Open implements pipeline.BackendProvider.
func (p *Provider) Open(ctx context.Context, b *recipe.Backend) (backend.Backend, error) {
	if b != nil && b.Plugin != "" {
		if p.Host == nil {
			return nil, errors.New("plugins are not enabled in this program")
		}
		return p.Host.OpenBackend(ctx, b)
	}
	if b != nil {
		// The built-in backend takes no settings: say so rather than
		// ignore what the recipe asked for.
		if b.SHA256 != "" {
			return nil, fmt.Errorf("backend %q pins sha256 but names no plugin binary; set plugin, or remove sha256", b.Name)
		}
		if len(b.Config) > 0 {
			names := make([]string, 0, len(b.Config))
			for n := range b.Config {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("backend %q names no plugin, and the built-in backend takes no settings (%s); set plugin, or remove them", b.Name, strings.Join(names, ", "))
		}
	}
	if p.Default == nil {
		return nil, errors.New("this whittle has no built-in backend; declare backend \"x\" { plugin = \"...\" } and set backend = backend.x on the pass")
	}
	return p.Default()
}

// Package torch holds the tests that run whittle's PyTorch backend plugin
// (a Python program, whittle-plugin-torch beside this file) through the
// plugin host, as a recipe's backend block would start it.
package torch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/conformance"
	"github.com/whittle-ml/whittle/core/plugin"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

// EnableEnv must be 1 for these tests to run: they need Debian's
// python3-torch, python3-grpcio and python3-protobuf (make test-torch
// installs them), which `make test` does not.
const EnableEnv = "WHITTLE_TORCH_TEST"

func pluginPath(t *testing.T) string {
	t.Helper()
	if os.Getenv(EnableEnv) != "1" {
		t.Skipf("set %s=1 to run the torch plugin (make test-torch)", EnableEnv)
	}
	p, err := filepath.Abs("whittle-plugin-torch")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(p, "info").CombinedOutput(); err != nil {
		t.Fatalf("%s info: %v\n%s", p, err, out)
	}
	return p
}

// ranks is the rank counts the suite runs with: WHITTLE_TORCH_RANKS
// ("1,2" by default).
func ranks() []int {
	s := os.Getenv("WHITTLE_TORCH_RANKS")
	if s == "" {
		s = "1,2"
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func decl(bin string, nproc int, extra map[string]cty.Value) *recipe.Backend {
	device := os.Getenv("WHITTLE_TORCH_DEVICE")
	if device == "" {
		device = "cpu"
	}
	cfg := map[string]cty.Value{
		"device": cty.StringVal(device), "nproc_per_node": cty.NumberIntVal(int64(nproc)), "timeout": cty.NumberIntVal(120),
	}
	if device == "cpu" {
		cfg["threads"] = cty.NumberIntVal(1)
	}
	for k, v := range extra {
		cfg[k] = v
	}
	return &recipe.Backend{Name: "cluster", Plugin: bin, Config: cfg}
}

// TestServedConformance runs the backend conformance suite through the
// gRPC boundary against the plugin with 1 and with 2 ranks (gloo on CPU),
// with the CPU backend as the reference.
func TestServedConformance(t *testing.T) {
	bin := pluginPath(t)
	for _, n := range ranks() {
		t.Run(fmt.Sprintf("ranks=%d", n), func(t *testing.T) {
			host := plugin.New(plugin.Options{})
			t.Cleanup(host.Close)
			d := decl(bin, n, nil)
			conformance.Run(t, func() (backend.Backend, error) {
				return host.OpenBackend(context.Background(), d)
			}, conformance.Options{Reference: func() (backend.Backend, error) { return cpu.New(cpu.Options{}) }})
		})
	}
}

// TestServedBadAttribute: a misspelt backend attribute fails the start
// with a message naming it.
func TestServedBadAttribute(t *testing.T) {
	bin := pluginPath(t)
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	_, err := host.OpenBackend(context.Background(), &recipe.Backend{Name: "cluster", Plugin: bin,
		Config: map[string]cty.Value{"nproc_per_nod": cty.NumberIntVal(2)}})
	if err == nil || !strings.Contains(err.Error(), "nproc_per_nod") {
		t.Fatalf("a backend block with an unknown attribute: error %v, want one naming it", err)
	}
}

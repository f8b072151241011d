package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/conformance"
	"github.com/whittle-ml/whittle/core/plugin"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/plugins/cpu"
)

// TestServedConformance builds the plugin binary, has whittle's plugin
// host start it as a recipe's backend block would, and runs the
// conformance suite through the gRPC boundary.
func TestServedConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the plugin")
	}
	bin := filepath.Join(t.TempDir(), "whittle-plugin-gotch")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	decl := &recipe.Backend{Name: "gotch", Plugin: bin, Config: map[string]cty.Value{
		"device": cty.StringVal("cpu"), "precision": cty.StringVal("fp32"),
	}}
	conformance.Run(t, func() (backend.Backend, error) {
		return host.OpenBackend(context.Background(), decl)
	}, conformance.Options{Reference: func() (backend.Backend, error) { return cpu.New(cpu.Options{}) }})
}

// TestServedBadAttribute: a misspelt backend attribute fails the start
// with a message naming it.
func TestServedBadAttribute(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the plugin")
	}
	bin := filepath.Join(t.TempDir(), "whittle-plugin-gotch")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	_, err := host.OpenBackend(context.Background(), &recipe.Backend{Name: "gotch", Plugin: bin, Config: map[string]cty.Value{"devcie": cty.StringVal("cpu")}})
	if err == nil {
		t.Fatal("a backend block with an unknown attribute opened")
	}
	t.Log(err)
}

// Package torch holds the tests that run whittle's PyTorch backend plugin
// (a Python program, whittle-plugin-torch beside this file) through the
// plugin host, as a recipe's backend block would start it.
package torch

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/backend/conformance"
	corebench "github.com/whittle-ml/whittle/core/bench"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/core/plugin"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/irtest"
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
	p := os.Getenv("WHITTLE_TORCH_PLUGIN") // the GPU check runs the test binary elsewhere
	if p == "" {
		p = "whittle-plugin-torch"
	}
	p, err := filepath.Abs(p)
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

// llamaFixture writes the llama family's test model (Llama 3.1 RoPE
// scaling, grouped-query attention) as a Hugging Face directory, and n
// random rows of l tokens.
func llamaFixture(t *testing.T, n, l int) (dir, tokens string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	m := irtest.RandomModel(t, irtest.Families()["llama"], rng)
	dir = filepath.Join(t.TempDir(), "llama")
	if err := hf.Save(m, dir, hf.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	flat := make([]int32, n*l)
	for i := range flat {
		flat[i] = int32(rng.IntN(m.Config.Vocab))
	}
	tokens = filepath.Join(t.TempDir(), "tokens.npy")
	if err := npy.WriteInt32(tokens, []int{n, l}, flat); err != nil {
		t.Fatal(err)
	}
	return dir, tokens
}

// TestServedInfo: Info names the ranks and the sharding strategy, which
// on torch < 2.4 is DDP + ZeRO-1.
func TestServedInfo(t *testing.T) {
	bin := pluginPath(t)
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	b, err := host.OpenBackend(context.Background(), decl(bin, 2, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	info, err := b.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info.Device, "x2 ranks") || !(strings.Contains(info.Device, "ZeRO-1") || strings.Contains(info.Device, "FSDP2")) {
		t.Errorf("Info.Device %q does not name 2 ranks and the strategy", info.Device)
	}
	t.Log(info.Device)
}

// TestServedRopeScaling: the llama family's model with Llama 3.1 RoPE
// scaling evaluates to the CPU backend's loss, at 1 and 2 ranks.
func TestServedRopeScaling(t *testing.T) {
	bin := pluginPath(t)
	dir, tokens := llamaFixture(t, 5, 40)
	ctx := context.Background()
	eval := func(b backend.Backend) float64 {
		t.Helper()
		id, err := b.Load(ctx, backend.LoadRequest{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		res, err := b.Evaluate(ctx, backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: tokens}, BatchSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		return res.LM.Loss
	}
	ref, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	want := eval(ref)
	for _, n := range ranks() {
		host := plugin.New(plugin.Options{})
		b, err := host.OpenBackend(ctx, decl(bin, n, nil))
		if err != nil {
			t.Fatal(err)
		}
		if got := eval(b); math.Abs(got-want) > 1e-4*want {
			t.Errorf("%d ranks: LM loss %.8g, CPU backend %.8g", n, got, want)
		}
		b.Close()
		host.Close()
	}
}

// TestServedDeadRank: a rank that dies fails the call in progress with an
// error naming it, and later calls fail too (the run is then resumed by
// running the recipe again, with a fresh plugin).
func TestServedDeadRank(t *testing.T) {
	bin := pluginPath(t)
	dir, tokens := llamaFixture(t, 4, 16)
	t.Setenv("WHITTLE_TORCH_TEST_DIE", "1:stats")
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	ctx := context.Background()
	b, err := host.OpenBackend(ctx, decl(bin, 2, map[string]cty.Value{"timeout": cty.NumberIntVal(30)}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	id, err := b.Load(ctx, backend.LoadRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Stats(ctx, backend.StatsRequest{Model: id, Data: backend.Sequences{Path: tokens}, BlockInfluence: true})
	if err == nil || !strings.Contains(err.Error(), "rank 1") || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("stats with rank 1 dead: error %v, want one naming rank 1", err)
	}
	t.Log(err)
	if _, err := b.Evaluate(ctx, backend.EvalRequest{Model: id, LM: &backend.Sequences{Path: tokens}}); err == nil || !strings.Contains(err.Error(), "rank 1") {
		t.Errorf("a call after the rank died: error %v, want one naming rank 1", err)
	}
}

// TestServedBenchZeRO: at 2 ranks each rank holds about half the AdamW
// state of 1 rank (within 10 %: ZeRO-1 partitions whole tensors), the
// whole parameters and gradients (DDP replicates them) — or, under
// FSDP2, about half of those too.
func TestServedBenchZeRO(t *testing.T) {
	bin := pluginPath(t)
	ctx := context.Background()
	run := func(n int) *corebench.Result {
		t.Helper()
		host := plugin.New(plugin.Options{})
		defer host.Close()
		b, err := host.OpenBackend(ctx, decl(bin, n, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		r, err := b.(backend.Benchmarker).Bench(ctx, corebench.Request{Shape: "stories260K", Workload: corebench.Train, Batch: 2, Seq: 16, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.PerRank) != n {
			t.Fatalf("%d ranks report %d memory entries", n, len(r.PerRank))
		}
		for _, m := range r.PerRank {
			t.Logf("%d ranks: rank %d: params %d B, grads %d B, optimizer state %d B, peak RSS %d MiB",
				n, m.Rank, m.ParamBytes, m.GradBytes, m.OptimStateBytes, m.PeakRSSBytes>>20)
		}
		return r
	}
	one, two := run(1), run(2)
	whole := one.PerRank[0]
	if want := 2 * 4 * one.Params; whole.OptimStateBytes < want {
		t.Errorf("1 rank: optimizer state %d B, want at least two float32 moments per parameter (%d B)", whole.OptimStateBytes, want)
	}
	fsdp := !strings.Contains(two.Kernel, "ZeRO-1")
	for _, m := range two.PerRank {
		if r := float64(m.OptimStateBytes) / (float64(whole.OptimStateBytes) / 2); r < 0.9 || r > 1.1 {
			t.Errorf("rank %d: optimizer state %d B, %.2f× half of 1 rank's %d B", m.Rank, m.OptimStateBytes, r, whole.OptimStateBytes)
		}
		wantParams := whole.ParamBytes
		if fsdp {
			wantParams /= 2
		}
		if r := float64(m.ParamBytes) / float64(wantParams); r < 0.9 || r > 1.1 {
			t.Errorf("rank %d: parameters %d B, want about %d B", m.Rank, m.ParamBytes, wantParams)
		}
	}
}

// TestServedDeadRankResume: a rank that dies in the middle of training
// fails the run naming it; the same request on a fresh plugin (what
// running the recipe again does) resumes from the last checkpoint and
// ends where an uninterrupted run does.
func TestServedDeadRankResume(t *testing.T) {
	bin := pluginPath(t)
	dir, tokens := llamaFixture(t, 8, 16)
	ctx := context.Background()
	req := backend.TrainRequest{Objective: backend.ObjectiveCE, Data: backend.Sequences{Path: tokens}, Steps: 6, BatchSize: 2,
		CheckpointEvery: 2, Optim: backend.OptimConfig{LR: 1e-3, WarmupSteps: 1, WeightDecay: 0.1, GradClip: 1}}
	train := func(ckpt string) (*backend.TrainResult, map[string][]float32, error) {
		host := plugin.New(plugin.Options{})
		defer host.Close()
		b, err := host.OpenBackend(ctx, decl(bin, 2, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		// Later starts (the resumed run's) get no fault.
		os.Setenv("WHITTLE_TORCH_TEST_DIE", "")
		r := req
		r.CheckpointDir = ckpt
		if r.Model, err = b.Load(ctx, backend.LoadRequest{Dir: dir, Trainable: true}); err != nil {
			t.Fatal(err)
		}
		res, err := b.Train(ctx, r, nil)
		if err != nil {
			return nil, nil, err
		}
		out := filepath.Join(t.TempDir(), "trained")
		if err := b.Save(ctx, backend.SaveRequest{Model: r.Model, Dir: out}); err != nil {
			t.Fatal(err)
		}
		m, err := hf.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		w := map[string][]float32{}
		for _, n := range m.TensorNames() {
			tt, _ := m.Tensor(n)
			if w[n], err = tt.Float32(); err != nil {
				t.Fatal(err)
			}
		}
		return res, w, nil
	}
	want, wantW, err := train(filepath.Join(t.TempDir(), "straight"))
	if err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(t.TempDir(), "ckpt")
	t.Setenv("WHITTLE_TORCH_TEST_DIE", "1:train:3") // rank 1 exits before step 4, after the step-2 checkpoint
	if _, _, err := train(ckpt); err == nil || !strings.Contains(err.Error(), "rank 1") {
		t.Fatalf("training with rank 1 dying: error %v, want one naming rank 1", err)
	} else {
		t.Log(err)
	}
	got, gotW, err := train(ckpt)
	if err != nil {
		t.Fatalf("resuming: %v", err)
	}
	if got.ResumedFrom != 2 {
		t.Errorf("resumed from step %d, want 2", got.ResumedFrom)
	}
	for i := range want.History {
		if math.Abs(got.History[i].Loss-want.History[i].Loss) > 1e-6*math.Abs(want.History[i].Loss) {
			t.Errorf("step %d loss %g after resuming, %g uninterrupted", i+1, got.History[i].Loss, want.History[i].Loss)
		}
	}
	for n, w := range wantW {
		for i := range w {
			if math.Abs(float64(gotW[n][i]-w[i])) > 1e-6*(1+math.Abs(float64(w[i]))) {
				t.Errorf("%s[%d] = %g after resuming, %g uninterrupted", n, i, gotW[n][i], w[i])
				break
			}
		}
	}
}

// TestServedRankError: a call that fails on another rank than 0 (before
// any collective, as a rank that cannot read a file does) is reported
// naming that rank, and the ranks stay in step for the next call.
func TestServedRankError(t *testing.T) {
	bin := pluginPath(t)
	dir, tokens := llamaFixture(t, 4, 16)
	t.Setenv("WHITTLE_TORCH_TEST_FAIL", "1:evaluate")
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	ctx := context.Background()
	b, err := host.OpenBackend(ctx, decl(bin, 2, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	id, err := b.Load(ctx, backend.LoadRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// An evaluation of nothing: rank 0 reaches the end-of-call agreement
	// without a collective rank 1 would miss.
	_, err = b.Evaluate(ctx, backend.EvalRequest{Model: id})
	if err == nil || !strings.Contains(err.Error(), "rank 1: injected failure") {
		t.Fatalf("evaluate failing on rank 1: error %v, want one naming rank 1", err)
	}
	t.Log(err)
	if _, err := b.Stats(ctx, backend.StatsRequest{Model: id, Data: backend.Sequences{Path: tokens}, BlockInfluence: true}); err != nil {
		t.Errorf("stats after a failed call: %v", err)
	}
}

// TestServedWithoutOpenSSL: where there is no openssl command the plugin
// makes its AutoMTLS certificate with the cryptography package, and the
// host still connects.
func TestServedWithoutOpenSSL(t *testing.T) {
	bin := pluginPath(t)
	if out, err := exec.Command("/usr/bin/python3", "-c", "import cryptography").CombinedOutput(); err != nil {
		t.Skipf("no cryptography package: %s", out)
	}
	t.Setenv("PATH", t.TempDir())
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	b, err := host.OpenBackend(context.Background(), decl(bin, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestServedStoppedRank: a rank that hangs (here stopped with SIGSTOP) is
// named when the collective waiting for it times out.
func TestServedStoppedRank(t *testing.T) {
	bin := pluginPath(t)
	dir, tokens := llamaFixture(t, 4, 16)
	t.Setenv("WHITTLE_TORCH_TEST_STOP", "1:stats")
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	ctx := context.Background()
	b, err := host.OpenBackend(ctx, decl(bin, 2, map[string]cty.Value{"timeout": cty.NumberIntVal(10)}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	id, err := b.Load(ctx, backend.LoadRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Stats(ctx, backend.StatsRequest{Model: id, Data: backend.Sequences{Path: tokens}, BlockInfluence: true})
	if err == nil || !strings.Contains(err.Error(), "rank 1") || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("stats with rank 1 stopped: error %v, want one naming rank 1", err)
	}
	t.Log(err)
}

// TestServedFamiliesSave: a model of every family (irtest.Families and
// irtest.MoEFamilies) saved by the plugin reads back with ir/hf to the very
// weights it was loaded from (Phi-3's fused projections joined again,
// experts split into one tensor each), and so do the MoE fixture
// checkpoints in their own dtype, byte for byte.
func TestServedFamiliesSave(t *testing.T) {
	bin := pluginPath(t)
	host := plugin.New(plugin.Options{})
	t.Cleanup(host.Close)
	ctx := context.Background()
	b, err := host.OpenBackend(ctx, decl(bin, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fams := irtest.Families()
	maps.Copy(fams, irtest.MoEFamilies())
	// roundTrip saves the model loaded from dir as dtype and compares
	// every tensor's bytes with m's.
	roundTrip := func(t *testing.T, m *ir.Model, dir, dtype string) {
		id, err := b.Load(ctx, backend.LoadRequest{Dir: dir, Trainable: true})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "out")
		if err := b.Save(ctx, backend.SaveRequest{Model: id, Dir: out, DType: dtype}); err != nil {
			t.Fatal(err)
		}
		got, err := hf.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		defer got.Close()
		if got.Config.Arch != m.Config.Arch {
			t.Errorf("saved as %q, want %q", got.Config.Arch, m.Config.Arch)
		}
		for _, n := range m.TensorNames() {
			want, _ := m.Tensor(n)
			g, err := got.Tensor(n)
			if err != nil {
				t.Errorf("saved model lacks %s: %v", n, err)
				continue
			}
			wb, err := want.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			gb, err := g.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if g.DType != want.DType || string(wb) != string(gb) {
				t.Errorf("%s differs after a round trip", n)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		t.Run(name, func(t *testing.T) {
			m := irtest.RandomModel(t, fams[name], rand.New(rand.NewPCG(1, 2)))
			dir := filepath.Join(t.TempDir(), "in")
			if err := hf.Save(m, dir, hf.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			roundTrip(t, m, dir, "")
		})
	}
	for _, name := range []string{"mixtral", "qwen2_moe", "qwen3_moe"} {
		t.Run("fixture/"+name, func(t *testing.T) {
			dir, err := filepath.Abs(filepath.Join("../../ir/testdata/families", name))
			if err != nil {
				t.Fatal(err)
			}
			m, err := hf.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			roundTrip(t, m, dir, "bf16") // the fixtures are bfloat16
		})
	}
}

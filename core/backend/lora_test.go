package backend

import (
	"math"
	"reflect"
	"testing"

	"github.com/whittle-ml/whittle/ir"
)

func TestLoRAResolve(t *testing.T) {
	all := []string{ir.RoleQ, ir.RoleK, ir.RoleV, ir.RoleO, ir.RoleGate, ir.RoleUp, ir.RoleDown}
	cases := []struct {
		in   *LoRAConfig
		want ResolvedLoRA
		err  bool
	}{
		{nil, ResolvedLoRA{Rank: 8, Alpha: 8, Roles: all}, false},
		{&LoRAConfig{Rank: 4}, ResolvedLoRA{Rank: 4, Alpha: 4, Roles: all}, false},
		{&LoRAConfig{Targets: []string{"v_proj", ir.RoleQ}}, ResolvedLoRA{Rank: 8, Alpha: 8, Roles: []string{ir.RoleV, ir.RoleQ}}, false},
		{&LoRAConfig{Targets: []string{"q_proj", ir.RoleQ}}, ResolvedLoRA{}, true},
		{&LoRAConfig{Alpha: math.NaN()}, ResolvedLoRA{}, true},
		{&LoRAConfig{Rank: 2, Alpha: 16, Targets: []string{"down_proj", ir.RoleGate}}, ResolvedLoRA{Rank: 2, Alpha: 16, Roles: []string{ir.RoleDown, ir.RoleGate}}, false},
		{&LoRAConfig{Rank: -1}, ResolvedLoRA{}, true},
		{&LoRAConfig{Targets: []string{"qproj"}}, ResolvedLoRA{}, true},
	}
	for _, c := range cases {
		got, err := c.in.Resolve()
		if (err != nil) != c.err || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Resolve(%+v) = %+v, %v; want %+v (error %v)", c.in, got, err, c.want, c.err)
		}
	}
}

func TestCheckMode(t *testing.T) {
	for _, c := range []struct {
		req TrainRequest
		ok  bool
	}{
		{TrainRequest{}, true},
		{TrainRequest{Mode: ModeNormOnly}, true},
		{TrainRequest{Mode: ModeLoRA, LoRA: &LoRAConfig{Rank: 4}}, true},
		{TrainRequest{Mode: "partial"}, false},
		{TrainRequest{Mode: ModeFull, LoRA: &LoRAConfig{}}, false},
	} {
		if err := c.req.CheckMode(); (err == nil) != c.ok {
			t.Errorf("CheckMode(mode %q, lora %v) = %v, want ok=%v", c.req.Mode, c.req.LoRA != nil, err, c.ok)
		}
	}
}

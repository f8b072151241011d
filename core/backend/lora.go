package backend

import (
	"fmt"

	"github.com/whittle-ml/whittle/ir"
)

// DefaultLoRARank is the adapter rank when LoRAConfig.Rank is 0 (PEFT's).
const DefaultLoRARank = 8

// loraRoles maps LoRAConfig's short projection names to IR roles.
var loraRoles = map[string]string{
	"q_proj": ir.RoleQ, "k_proj": ir.RoleK, "v_proj": ir.RoleV, "o_proj": ir.RoleO,
	"gate_proj": ir.RoleGate, "up_proj": ir.RoleUp, "down_proj": ir.RoleDown,
}

// ResolvedLoRA is a LoRAConfig with its defaults applied and its targets
// as IR roles (ir.RoleQ, …), what every backend builds adapters from.
type ResolvedLoRA struct {
	Rank  int
	Alpha float64
	Roles []string
}

// Resolve applies the documented defaults (rank 8, alpha = rank, targets
// q_proj and v_proj) to c, which may be nil, and maps the targets, given
// as short names or IR roles, to IR roles.
func (c *LoRAConfig) Resolve() (ResolvedLoRA, error) {
	var r LoRAConfig
	if c != nil {
		r = *c
	}
	if r.Rank < 0 {
		return ResolvedLoRA{}, fmt.Errorf("negative lora rank %d", r.Rank)
	}
	if r.Rank == 0 {
		r.Rank = DefaultLoRARank
	}
	if r.Alpha == 0 {
		r.Alpha = float64(r.Rank)
	}
	if len(r.Targets) == 0 {
		r.Targets = []string{"q_proj", "v_proj"}
	}
	out := ResolvedLoRA{Rank: r.Rank, Alpha: r.Alpha}
	for _, t := range r.Targets {
		role, ok := loraRoles[t]
		if !ok {
			for _, known := range loraRoles {
				if t == known {
					role, ok = known, true
				}
			}
		}
		if !ok {
			return ResolvedLoRA{}, fmt.Errorf("unknown lora target %q (want q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)", t)
		}
		out.Roles = append(out.Roles, role)
	}
	return out, nil
}

// CheckMode reports a Mode that is not full, norm-only or lora (empty means
// full), and LoRA settings given for a mode other than lora.
func (r *TrainRequest) CheckMode() error {
	switch r.Mode {
	case ModeFull, "", ModeNormOnly, ModeLoRA:
	default:
		return fmt.Errorf("unknown mode %q (want %s, %s or %s)", r.Mode, ModeFull, ModeNormOnly, ModeLoRA)
	}
	if r.Mode != ModeLoRA && r.LoRA != nil {
		return fmt.Errorf("lora settings given for mode %q", r.Mode)
	}
	return nil
}

package backend

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// DefaultLoRARank is the adapter rank when LoRAConfig.Rank is 0 (PEFT's).
const DefaultLoRARank = 8

// LoRATargets are the matrices LoRA may adapt, by their short names, in
// layer order; all of them are adapted when LoRAConfig.Targets is empty.
var LoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// loraRoles maps LoRATargets to IR roles.
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

// Resolve applies the documented defaults (rank 8, alpha = rank, every
// matrix of LoRATargets) to c, which may be nil, and maps the targets,
// given as short names or IR roles, to IR roles.
func (c *LoRAConfig) Resolve() (ResolvedLoRA, error) {
	var r LoRAConfig
	if c != nil {
		r = *c
	}
	if r.Rank < 0 {
		return ResolvedLoRA{}, fmt.Errorf("negative lora rank %d", r.Rank)
	}
	if math.IsNaN(r.Alpha) || math.IsInf(r.Alpha, 0) {
		return ResolvedLoRA{}, fmt.Errorf("lora alpha %g must be finite", r.Alpha)
	}
	if r.Rank == 0 {
		r.Rank = DefaultLoRARank
	}
	if r.Alpha == 0 {
		r.Alpha = float64(r.Rank)
	}
	if len(r.Targets) == 0 {
		r.Targets = LoRATargets
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
			return ResolvedLoRA{}, fmt.Errorf("unknown lora target %q (want some of %s)", t, strings.Join(LoRATargets, ", "))
		}
		if slices.Contains(out.Roles, role) {
			return ResolvedLoRA{}, fmt.Errorf("lora target %q listed twice", t)
		}
		out.Roles = append(out.Roles, role)
	}
	return out, nil
}

// config is r as a LoRAConfig with short target names.
func (r ResolvedLoRA) config() *LoRAConfig {
	c := &LoRAConfig{Rank: r.Rank, Alpha: r.Alpha}
	for _, role := range r.Roles {
		for short, known := range loraRoles {
			if role == known {
				c.Targets = append(c.Targets, short)
			}
		}
	}
	return c
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

package gguf

import (
	"strconv"
	"strings"

	"github.com/whittle-ml/whittle/ir"
)

// GGUF tensor names of the per-layer roles (blk.N.<name>.weight).
var ggufRoles = map[string]string{
	ir.RoleAttnNorm: "attn_norm",
	ir.RoleQ:        "attn_q",
	ir.RoleK:        "attn_k",
	ir.RoleV:        "attn_v",
	ir.RoleO:        "attn_output",
	ir.RoleMLPNorm:  "ffn_norm",
	ir.RoleGate:     "ffn_gate",
	ir.RoleUp:       "ffn_up",
	ir.RoleDown:     "ffn_down",
}

// GGUF names of the tensors outside the layers.
var ggufGlobals = map[string]string{
	ir.NameEmbed:      "token_embd.weight",
	ir.NameFinalNorm:  "output_norm.weight",
	ir.NameClassifier: "output.weight",
}

// GGUFName is the GGUF tensor name of a canonical IR tensor name in the
// llama architecture (the other architectures: see layout).
func GGUFName(canonical string) (string, bool) {
	if n, ok := ggufGlobals[canonical]; ok {
		return n, true
	}
	rest, ok := strings.CutPrefix(canonical, "model.layers.")
	if !ok {
		return "", false
	}
	num, role, ok := strings.Cut(rest, ".")
	if !ok || !canonicalInt(num) {
		return "", false
	}
	role, ok = strings.CutSuffix(role, ".weight")
	if !ok {
		return "", false
	}
	g, ok := ggufRoles[role]
	if !ok {
		return "", false
	}
	return "blk." + num + "." + g + ".weight", true
}

// CanonicalName is the IR name of a GGUF tensor name, with the layer
// number of a per-layer tensor (-1 for the others).
func CanonicalName(gguf string) (name string, layer int, ok bool) {
	for c, g := range ggufGlobals {
		if g == gguf {
			return c, -1, true
		}
	}
	rest, ok := strings.CutPrefix(gguf, "blk.")
	if !ok {
		return "", 0, false
	}
	num, role, ok := strings.Cut(rest, ".")
	if !ok || !canonicalInt(num) {
		return "", 0, false
	}
	role, ok = strings.CutSuffix(role, ".weight")
	if !ok {
		return "", 0, false
	}
	for r, g := range ggufRoles {
		if g == role {
			l, _ := strconv.Atoi(num)
			return ir.LayerName(l, r), l, true
		}
	}
	return "", 0, false
}

// canonicalInt accepts a decimal without sign or leading zeros that fits
// an int32, so every layer number has exactly one spelling.
func canonicalInt(s string) bool {
	n, err := strconv.ParseInt(s, 10, 32)
	return err == nil && n >= 0 && strconv.FormatInt(n, 10) == s
}

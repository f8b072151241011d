// Command mkvariants writes two variants of stories260K that no whittle
// command produces, for scripts/check_exports.sh: an untied model (its
// classifier is the embedding with rows rescaled, so lm_head.weight and
// output.weight must be written and used) and a non-uniform one (layer 1
// keeps 128 of its 172 MLP neurons), each as an HF directory and a GGUF
// file. It lives under testdata so that ./... skips it.
//
// Usage: go run ./scripts/testdata/mkvariants MODELDIR OUTDIR
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/modelio"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mkvariants MODELDIR OUTDIR")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "mkvariants:", err)
		os.Exit(1)
	}
}

func load(dir string) (*ir.Model, error) {
	return modelio.Load(filepath.Join(dir, "stories260K.bin"),
		modelio.LoadOptions{Tokenizer: filepath.Join(dir, "tok512.bin")})
}

func save(m *ir.Model, out, name string) error {
	if err := modelio.Save(m, filepath.Join(out, name+"-hf"), modelio.HF, modelio.SaveOptions{}); err != nil {
		return err
	}
	return modelio.Save(m, filepath.Join(out, name+".gguf"), modelio.GGUF, modelio.SaveOptions{})
}

func run(dir, out string) error {
	m, err := load(dir)
	if err != nil {
		return err
	}
	e, err := m.Tensors[ir.NameEmbed].Float32()
	if err != nil {
		return err
	}
	h := m.Config.Hidden
	for r := range m.Config.Vocab {
		for c := range h {
			e[r*h+c] *= 1 + 0.5*float32(r%7)/7
		}
	}
	m.Config.Tied = false
	m.Tensors[ir.NameClassifier] = ir.FromFloat32(ir.F32, []int{m.Config.Vocab, h}, e)
	if err := save(m, out, "untied"); err != nil {
		return err
	}

	if m, err = load(dir); err != nil {
		return err
	}
	const layer, keep = 1, 128
	ff := m.Config.Layers[layer].MLP
	for _, role := range []string{ir.RoleGate, ir.RoleUp, ir.RoleDown} {
		n := ir.LayerName(layer, role)
		v, err := m.Tensors[n].Float32()
		if err != nil {
			return err
		}
		if role == ir.RoleDown { // [hidden, ff]: keep the first columns
			var kept []float32
			for r := range h {
				kept = append(kept, v[r*ff:r*ff+keep]...)
			}
			m.Tensors[n] = ir.FromFloat32(ir.F32, []int{h, keep}, kept)
		} else { // [ff, hidden]: keep the first rows
			m.Tensors[n] = ir.FromFloat32(ir.F32, []int{keep, h}, v[:keep*h])
		}
	}
	m.Config.Layers[layer].MLP = keep
	return save(m, out, "nonuniform")
}

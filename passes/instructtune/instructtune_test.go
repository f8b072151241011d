package instructtune

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/passes/internal/passtest"
	"github.com/whittle-ml/whittle/passes/internal/passutil"
)

func ptr[T any](v T) *T { return &v }

func recipeWith(attrs string) string {
	return passtest.Inputs + `
pass "instruction-tune" {
  model   = model.base
  dataset = dataset.pairs
  into    = "chat"
  steps   = 4
  batch   = 2
  seq_len = 48
  seed    = 5
` + attrs + `}
`
}

func TestDecodeAndPlan(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	r := env.MustLoad(t, reg, recipeWith("  template = \"Q:{prompt}A:{response}\"\n  packing = true\n  mode = \"norm-only\"\n"))
	got := r.Passes[0].Config.(*Config)
	want := &Config{Model: recipe.Ref{Kind: "model", Name: "base"}, Dataset: recipe.Ref{Kind: "dataset", Name: "pairs"},
		Template: ptr("Q:{prompt}A:{response}"), Packing: ptr(true),
		TrainOptions: passutil.TrainOptions{Mode: ptr("norm-only"), Steps: ptr(4), Batch: ptr(2), SeqLen: ptr(48), Seed: ptr(int64(5))}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	plan, err := pipeline.MakePlan(r, reg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*plan.Stages[1].Config, env.Config) {
		t.Error("instruction-tune changed the planned architecture")
	}
}

func TestRecipeErrors(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	tests := []struct {
		name, src, at, want string
	}{
		{"text dataset", strings.Replace(recipeWith(""), "dataset.pairs", "dataset.corpus", 1), "dataset.corpus\n  into", `needs prompt/response pairs`},
		{"template without response", recipeWith("  template = \"{prompt}\"\n"), `"{prompt}"`, "once each"},
		{"template reversed", recipeWith("  template = \"{response}{prompt}\"\n"), `"{response}{prompt}"`, "before {prompt}"},
		{"packing not bool", recipeWith("  packing = \"yes please\"\n"), `"yes please"`, `Invalid value for "packing"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, diags := env.Load(t, reg, tc.src)
			at := passtest.Pos(t, tc.src, tc.at)
			if diags.HasErrors() {
				if !strings.Contains(diags.Error(), tc.want) || passtest.DiagPos(diags) != at {
					t.Errorf("diagnostics %q at %s, want %q at %s", diags.Error(), passtest.DiagPos(diags), tc.want, at)
				}
				return
			}
			_, err := pipeline.MakePlan(r, reg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), at) {
				t.Fatalf("plan error %v, want %q at %s", err, tc.want, at)
			}
		})
	}
}

func TestRun(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	if _, err := env.Run(t, reg, recipeWith("  template = \"Q:{prompt}A:{response}\"\n"), fake, pipeline.Events{}); err != nil {
		t.Fatal(err)
	}
	trainPath := env.DataFile(t, "pairs-train-L48-????????????????.npy")
	valPath := env.DataFile(t, "pairs-validation-L48-????????????????.npy")
	val := &backend.Sequences{Path: valPath, MaskPath: strings.TrimSuffix(valPath, ".npy") + ".mask.npy"}

	tr := fake.CallsOf("Train")[0].Req.(backend.TrainRequest)
	if tr.Objective != backend.ObjectiveCE || !reflect.DeepEqual(tr.Validation, val) || tr.Data.MaskPath == "" {
		t.Fatalf("train request %+v", tr)
	}
	if ev := fake.CallsOf("Evaluate")[0].Req.(backend.EvalRequest); !reflect.DeepEqual(ev.LM, val) {
		t.Errorf("validation loss measured on %+v, want the masked validation split", ev.LM)
	}
	shape, toks := passtest.ReadInt32(t, tr.Data.Path)
	mshape, mask := passtest.ReadUint8(t, tr.Data.MaskPath)
	oshape, orig := passtest.ReadInt32(t, trainPath)
	_, omask := passtest.ReadUint8(t, strings.TrimSuffix(trainPath, ".npy")+".mask.npy")
	// Unpacked: one row per training pair (16 of 20 with a 0.2 split).
	if !slices.Equal(shape, []int{16, 48}) || !slices.Equal(mshape, shape) || !slices.Equal(oshape, shape) {
		t.Fatalf("shapes: tokens %v, mask %v, prepared %v", shape, mshape, oshape)
	}
	tok := passtest.Tokenizer()
	L := 48
	for i, src := range passutil.Permutation(16, 0, 5) {
		row, mrow := toks[i*L:(i+1)*L], mask[i*L:(i+1)*L]
		if !slices.Equal(row, orig[src*L:(src+1)*L]) || !slices.Equal(mrow, omask[src*L:(src+1)*L]) {
			t.Fatalf("row %d: tokens and mask are not row %d of the split, shuffled together", i, src)
		}
		// The loss counts the response (and EOS) only: the unmasked
		// tokens are the templated prompt, the masked ones the response.
		var prompt, resp []int
		for j, id := range row {
			switch {
			case mrow[j] == 1:
				resp = append(resp, int(id))
			case id != int32(tok.EOS): // padding is EOS with mask 0
				prompt = append(prompt, int(id))
			}
		}
		if got := tok.Decode(resp); got != " the dog sat." {
			t.Fatalf("row %d: the scored tokens decode to %q", i, got)
		}
		if got := tok.Decode(prompt); !strings.HasPrefix(got, "Q:q: the cat ") || !strings.HasSuffix(got, "\na:A:") {
			t.Fatalf("row %d: the masked prompt decodes to %q", i, got)
		}
	}
}

func TestPacking(t *testing.T) {
	env := passtest.NewEnv(t)
	reg := passtest.Registry(t, Pass{})
	fake := passtest.NewFake()
	if _, err := env.Run(t, reg, recipeWith("  packing = true\n  shuffle = false\n"), fake, pipeline.Events{}); err != nil {
		t.Fatal(err)
	}
	tr := fake.CallsOf("Train")[0].Req.(backend.TrainRequest)
	shape, toks := passtest.ReadInt32(t, tr.Data.Path)
	_, mask := passtest.ReadUint8(t, tr.Data.MaskPath)
	// Packed rows hold several pairs: fewer rows than pairs, and every
	// response is still scored.
	if shape[0] >= 16 || shape[1] != 48 {
		t.Fatalf("packed shape %v", shape)
	}
	tok := passtest.Tokenizer()
	var resp []int
	for j, id := range toks {
		if mask[j] == 1 && id != int32(tok.EOS) {
			resp = append(resp, int(id))
		}
	}
	if got := tok.Decode(resp); got != strings.Repeat(" the dog sat.", 16) {
		t.Errorf("scored tokens decode to %q", got)
	}
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/passes"
)

// experiment is one run directory, read back.
type experiment struct {
	name, recipe, dir string
	man               *pipeline.Manifest // nil when the experiment has not run
	machine           *Machine
	// passes is how many passes the recipe declares; stale is set when
	// the recipe changed after the run.
	passes int
	stale  bool
}

func loadExperiment(recipePath, runsDir string) (*experiment, error) {
	name := strings.TrimSuffix(filepath.Base(recipePath), ".hcl")
	e := &experiment{name: name, recipe: recipePath, dir: filepath.Join(runsDir, name)}
	man, err := pipeline.ReadManifest(filepath.Join(e.dir, pipeline.ManifestName))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.dir, err)
	}
	e.man = man
	reg, err := passes.Registry()
	if err != nil {
		return nil, err
	}
	r, diags := recipe.Load(recipePath, nil, reg.Language())
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: %s", recipePath, diags.Error())
	}
	e.passes = len(r.Passes)
	if man != nil {
		cur, err := pipeline.HashPath(recipePath)
		if err != nil {
			return nil, err
		}
		e.stale = cur.SHA256 != man.Recipe.SHA256
	}
	b, err := os.ReadFile(filepath.Join(e.dir, MachineFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		e.machine = &Machine{}
		if err := json.Unmarshal(b, e.machine); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(e.dir, MachineFile), err)
		}
	}
	return e, nil
}

// complete reports whether every pass of the recipe finished.
func (e *experiment) complete() bool {
	if e.man == nil || len(e.man.Passes) != e.passes {
		return false
	}
	for _, p := range e.man.Passes {
		if p.Status != pipeline.StatusDone {
			return false
		}
	}
	return true
}

func (e *experiment) pass(name string) *pipeline.PassRecord {
	if e.man == nil {
		return nil
	}
	for i := range e.man.Passes {
		if e.man.Passes[i].Name == name {
			return &e.man.Passes[i]
		}
	}
	return nil
}

// num is a numeric metric of a pass, NaN when absent (rendered "n/a").
func (e *experiment) num(pass, key string) float64 {
	p := e.pass(pass)
	if p == nil {
		return math.NaN()
	}
	if f, ok := p.Metrics[key].(float64); ok {
		return f
	}
	return math.NaN()
}

// ints is a metric holding a list of integers (dropped_layers).
func (e *experiment) ints(pass, key string) []int {
	p := e.pass(pass)
	if p == nil {
		return nil
	}
	list, _ := p.Metrics[key].([]any)
	var out []int
	for _, v := range list {
		if f, ok := v.(float64); ok {
			out = append(out, int(f))
		}
	}
	return out
}

func (e *experiment) floats(pass, key string) []float64 {
	p := e.pass(pass)
	if p == nil {
		return nil
	}
	list, _ := p.Metrics[key].([]any)
	var out []float64
	for _, v := range list {
		f, _ := v.(float64)
		out = append(out, f)
	}
	return out
}

// point is one evaluation during training.
type point struct {
	tokens  float64
	valLoss float64
}

func (e *experiment) curve(pass string) []point {
	p := e.pass(pass)
	if p == nil {
		return nil
	}
	list, _ := p.Metrics["val_history"].([]any)
	var out []point
	for _, v := range list {
		m, _ := v.(map[string]any)
		tok, ok1 := m["tokens"].(float64)
		loss, ok2 := m["val_loss"].(float64)
		if ok1 && ok2 {
			out = append(out, point{tok, loss})
		}
	}
	return out
}

// tokensToReach is the first evaluation's token count at which a curve's
// loss is at most target, NaN if it never gets there.
func tokensToReach(c []point, target float64) float64 {
	for _, p := range c {
		if p.valLoss <= target {
			return p.tokens
		}
	}
	return math.NaN()
}

// seconds is the compute time of the experiment's passes, as each ran
// (a resumed pass keeps its original time).
func (e *experiment) seconds() float64 {
	var s float64
	if e.man != nil {
		for _, p := range e.man.Passes {
			s += p.Seconds
		}
	}
	return s
}

func (e *experiment) variable(name string) string {
	if e.man == nil {
		return "?"
	}
	if v, ok := e.man.Variables[name]; ok {
		return string(v)
	}
	return "?"
}

// arch is the architecture and size of the model a pass produced.
type arch struct {
	layers, hidden, mlp int
	params, flops       int64
}

func (e *experiment) arch(pass string) (arch, error) {
	p := e.pass(pass)
	if p == nil {
		return arch{}, fmt.Errorf("%s has no pass %q", e.name, pass)
	}
	path := filepath.Join(e.dir, "passes", fmt.Sprintf("%02d-%s", p.Index, p.Name), "model", hf.ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return arch{}, err
	}
	c, err := hf.ParseConfig(b)
	if err != nil {
		return arch{}, fmt.Errorf("%s: %w", path, err)
	}
	a := arch{layers: len(c.Layers), hidden: c.Hidden, params: c.Params().Total, flops: c.FLOPsPerToken(128)}
	if len(c.Layers) > 0 {
		a.mlp = c.Layers[0].MLP
	}
	return a, nil
}

// Formatting. NaN (a missing number) prints as n/a.
func f4(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.4f", v)
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

func signedPct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f%%", 100*v)
}

func count(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return pipeline.FormatCount(int64(math.Round(v)))
}

func layerList(l []int) string {
	if l == nil {
		return "n/a"
	}
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = fmt.Sprint(v)
	}
	return "{" + strings.Join(s, ", ") + "}"
}

// dur renders seconds as a duration to the second.
func dur(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

func anyNaN(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) {
			return true
		}
	}
	return false
}

// table is a Markdown table; the first column and those listed in left
// are left-aligned, the rest (numbers) right-aligned.
type table struct {
	head []string
	rows [][]string
	left []int
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.head, " | "))
	seps := make([]string, len(t.head))
	for i := range seps {
		seps[i] = "---:"
		if i == 0 || slices.Contains(t.left, i) {
			seps[i] = "---"
		}
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
}

// section renders one finding from its experiment.
type section struct {
	recipe string // file name without .hcl
	title  string
	claim  string // the paper's claim, as docs/minitron.md states it
	write  func(w io.Writer, e *experiment) error
}

var sections = []section{
	{"01-prune-vs-scratch", "1. Pruning + distillation vs training from random initialization",
		"Pruning + distillation recovers far more of the teacher's quality than training the same student architecture from random initialization on the same token budget (the papers: up to 40× fewer training tokens).",
		writePruneVsScratch},
	{"02-teacher-correction", "2. Teacher correction on out-of-domain distillation data",
		"When the distillation data differs from the teacher's pretraining data, teacher correction lowers the teacher's loss on that data, and the student distilled from the corrected teacher ends with a lower loss than one distilled from the uncorrected teacher.",
		writeTeacherCorrection},
	{"03-width-vs-depth", "3. Width vs depth pruning at equal parameter count",
		"Width pruning keeps more quality than depth pruning at equal parameter count; depth pruning runs faster (Llama-3.1-Minitron-4B on an H100: depth ≈ 2.7×, width ≈ 1.8× the 8B teacher's throughput).",
		writeWidthVsDepth},
	{"04-depth-selection", "4. Depth selection: contiguous block vs individually least important layers",
		"Removing the contiguous block whose removal hurts least beats removing the individually least important layers on a downstream score (Llama-3.1-8B, 32→16 layers, ranked by Winogrande: 0.595 vs 0.50).",
		writeDepthSelection},
	{"05-distill-loss", "5. Distillation loss: forward KL, cross-entropy, their mix, top-k logits",
		"Minitron distils with forward KL on the logits alone; cross-entropy on the data, mixing, and truncating the teacher to its top-k logits are the alternatives the ecosystem uses.",
		writeDistillLoss},
}

func writeReport(w io.Writer, recipeDir, runsDir string, recipes []string) error {
	exps := map[string]*experiment{}
	var names []string
	for _, p := range recipes {
		e, err := loadExperiment(p, runsDir)
		if err != nil {
			return err
		}
		exps[e.name] = e
		names = append(names, e.name)
	}
	sort.Strings(names)

	fmt.Fprint(w, `# Minitron findings, reproduced at small scale

Generated by `+"`go run ./examples/stories260k/experiments/results`"+` from the run directories under
`+"`"+filepath.ToSlash(runsDir)+"/`"+` (recipes in `+"`"+filepath.ToSlash(recipeDir)+"/`"+`; edit those, not this file).
Teacher: the pretrained stories260K (TinyStories, 5 layers, hidden 64, 8/4 heads, MLP 172, 260,032
parameters). Distillation data: tiny-shakespeare, far out of the teacher's domain (5% held out, split by
seed; the teacher is first corrected by 150 steps of full fine-tuning, 307,200 tokens, LR 2e-3 → 2e-4), and
for in-domain comparisons held-out TinyStories text (`+"`tinystories_val.txt`"+`, 10% held out) with the original
teacher. Every student trains with AdamW, batch 16 × 128 tokens, LR 3e-3 → 3e-4 cosine after 20 warm-up
steps. Losses are next-token cross-entropy in nats per token on the held-out split of the data named (31,369
scored tokens of shakespeare, 37,846 of TinyStories). A uniform guess scores ln 512 = 6.24.

`)
	mt := table{head: []string{"experiment", "seed", "machine", "threads", "load (1 min) before → after", "compute time", "state"}, left: []int{2, 6}}
	var total float64
	for _, n := range names {
		e := exps[n]
		state := "not run"
		switch {
		case e.complete() && e.stale:
			state = "stale: the recipe changed since"
		case e.complete():
			state = "complete"
		case e.man != nil:
			state = "incomplete"
		}
		mach, threads, load := "n/a", "n/a", "n/a"
		if m := e.machine; m != nil {
			mach = fmt.Sprintf("%s, %d cores, %s, %s, %s", m.CPU, m.Cores, m.OS, m.Go, m.Date.Format(time.DateOnly))
			threads = fmt.Sprint(m.Threads)
			load = fmt.Sprintf("%.1f → %.1f", m.LoadBefore, m.LoadAfter)
		}
		s := e.seconds()
		total += s
		mt.add("`"+n+"`", e.variable("seed"), mach, threads, load, dur(s), state)
	}
	fmt.Fprintf(w, "## Runs\n\n")
	mt.write(w)
	fmt.Fprintf(w, "Total compute time %s (the sum of the passes' wall times; a resumed pass keeps the time it first took).\n"+
		"Quality numbers are bitwise repeatable on the CPU backend for the same seeds, machine and build; timings\n"+
		"are not, and a load above the core count means other work shared the CPU while they were taken.\n\n",
		dur(total))

	for _, s := range sections {
		fmt.Fprintf(w, "## %s\n\n*Paper:* %s\n\n", s.title, s.claim)
		e, ok := exps[s.recipe]
		if !ok {
			fmt.Fprintf(w, "*No recipe %s.hcl.*\n\n", s.recipe)
			continue
		}
		fmt.Fprintf(w, "Recipe: `%s`; run: `%s`.\n\n", filepath.ToSlash(e.recipe), filepath.ToSlash(e.dir))
		if !e.complete() {
			fmt.Fprintf(w, "*Not run yet (or unfinished): run the generator to complete it.*\n\n")
			continue
		}
		if e.stale {
			fmt.Fprintf(w, "*The recipe changed after this run; run the generator again to bring it up to date.*\n\n")
		}
		if err := s.write(w, e); err != nil {
			return fmt.Errorf("%s: %w", s.recipe, err)
		}
	}
	return nil
}

func writePruneVsScratch(w io.Writer, e *experiment) error {
	a, err := e.arch("prune-width")
	if err != nil {
		return err
	}
	teacher := e.num("pruned-kd", "teacher_val_loss")
	type arm struct{ label, pass, init, objective string }
	arms := []arm{
		{"pruned + distilled", "pruned-kd", "pruned teacher", "forward KL"},
		{"random init + CE", "scratch-ce", "N(0, 0.02²)", "cross-entropy"},
		{"random init + distilled", "scratch-kd", "N(0, 0.02²)", "forward KL"},
		{"random init + CE, 4× tokens", "scratch-ce-4x", "N(0, 0.02²)", "cross-entropy"},
	}
	fmt.Fprintf(w, "Student: %d layers, hidden %d, MLP %d, %s parameters (%.0f%% of the teacher). Seed %s.\n\n",
		a.layers, a.hidden, a.mlp, count(float64(a.params)), 100*float64(a.params)/260032, e.variable("seed"))
	t := table{head: []string{"student", "initialization", "objective", "training tokens", "val loss before", "val loss after", "val ppl after", "gap to teacher"}, left: []int{1, 2}}
	t.add("teacher (corrected)", "-", "-", "-", "-", f4(teacher), f2(math.Exp(teacher)), "-")
	for _, r := range arms {
		after := e.num(r.pass, "val_loss")
		t.add(r.label, r.init, r.objective, count(e.num(r.pass, "tokens")), f4(e.num(r.pass, "val_loss_before")), f4(after), f2(math.Exp(after)), f4(after-teacher))
	}
	t.write(w)

	kd, ce, kdScratch := e.curve("pruned-kd"), e.curve("scratch-ce"), e.curve("scratch-kd")
	c := table{head: []string{"tokens", "pruned + distilled", "random init + CE", "random init + distilled"}}
	for i := range kd {
		row := []string{count(kd[i].tokens), f4(kd[i].valLoss), "n/a", "n/a"}
		if i < len(ce) && ce[i].tokens == kd[i].tokens {
			row[2] = f4(ce[i].valLoss)
		}
		if i < len(kdScratch) && kdScratch[i].tokens == kd[i].tokens {
			row[3] = f4(kdScratch[i].valLoss)
		}
		c.add(row...)
	}
	fmt.Fprintf(w, "Validation loss during training:\n\n")
	c.write(w)
	c4 := table{head: []string{"tokens", "random init + CE, 4× tokens"}}
	for _, p := range e.curve("scratch-ce-4x") {
		c4.add(count(p.tokens), f4(p.valLoss))
	}
	fmt.Fprintf(w, "The 4× run (its cosine schedule stretched over 4× the steps):\n\n")
	c4.write(w)

	ts := table{head: []string{"student", "initialization", "objective", "training tokens", "val loss before", "val loss after", "val ppl after", "gap to teacher"}, left: []int{1, 2}}
	tteacher := e.num("ts-pruned-kd", "teacher_val_loss")
	ts.add("teacher (original)", "-", "-", "-", "-", f4(tteacher), f2(math.Exp(tteacher)), "-")
	for _, r := range []arm{{"pruned + distilled", "ts-pruned-kd", "pruned teacher", "forward KL"}, {"random init + CE", "ts-scratch-ce", "N(0, 0.02²)", "cross-entropy"}} {
		after := e.num(r.pass, "val_loss")
		ts.add(r.label, r.init, r.objective, count(e.num(r.pass, "tokens")), f4(e.num(r.pass, "val_loss_before")), f4(after), f2(math.Exp(after)), f4(after-tteacher))
	}
	fmt.Fprintf(w, "In the teacher's own domain — the original teacher, the student pruned by TinyStories importance, 10%% of `tinystories_val.txt` held out; the random student is the same draw:\n\n")
	ts.write(w)
	tc := table{head: []string{"tokens", "pruned + distilled", "random init + CE"}}
	tkd, tce := e.curve("ts-pruned-kd"), e.curve("ts-scratch-ce")
	for i := range tkd {
		row := []string{count(tkd[i].tokens), f4(tkd[i].valLoss), "n/a"}
		if i < len(tce) && tce[i].tokens == tkd[i].tokens {
			row[2] = f4(tce[i].valLoss)
		}
		tc.add(row...)
	}
	tc.write(w)

	pk, sc, sk, s4 := e.num("pruned-kd", "val_loss"), e.num("scratch-ce", "val_loss"), e.num("scratch-kd", "val_loss"), e.num("scratch-ce-4x", "val_loss")
	budget := e.num("pruned-kd", "tokens")
	if anyNaN(pk, sc, sk, s4, teacher, budget) {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.** On the same %s tokens the pruned + distilled student ends at %.4f, %.2f nats above the teacher, while the same architecture from random initialization ends at %.4f with cross-entropy and %.4f with the same distillation loss.",
		count(budget), pk, pk-teacher, sc, sk)
	if pk < math.Min(sc, sk) {
		fmt.Fprintf(&b, " Starting from the pruned weights is worth %.2f nats over the better random-init run.", math.Min(sc, sk)-pk)
		if reach := tokensToReach(kd, math.Min(sc, sk)); !math.IsNaN(reach) {
			if reach == kd[0].tokens {
				fmt.Fprintf(&b, " The pruned student is below that run's final loss already at its first evaluation, after %s tokens: at least %.0f× fewer.", count(reach), budget/reach)
			} else {
				fmt.Fprintf(&b, " The pruned student is below that run's final loss after %s tokens (evaluations every %s), %.0f× fewer.", count(reach), count(kd[0].tokens), budget/reach)
			}
		}
	} else {
		fmt.Fprintf(&b, " Random initialization does as well or better here, contrary to the papers.")
	}
	s4Curve := e.curve("scratch-ce-4x")
	if reach := tokensToReach(s4Curve, pk); !math.IsNaN(reach) {
		fmt.Fprintf(&b, " Given more tokens, though, the random-init student catches up: it matches the pruned student's final loss after %s tokens (%.1f× the budget; evaluations every %s tokens) and ends its 4× run at %.4f",
			count(reach), reach/budget, count(s4Curve[0].tokens), s4)
		if s4 < teacher {
			fmt.Fprintf(&b, ", below even the teacher (%.4f). The corrected teacher has itself seen only %s shakespeare tokens; a distilled student converges towards its teacher, while a student trained on the data has no such ceiling, so the advantage of pruning + distillation here is a head start, worth about %.1f× in tokens, not the papers' 40×.",
				teacher, count(e.num("teacher-correction", "tokens")), reach/budget)
		} else {
			fmt.Fprintf(&b, ". The advantage of pruning + distillation here is a head start worth about %.1f× in tokens, not the papers' 40×.", reach/budget)
		}
	} else {
		fmt.Fprintf(&b, " Even with 4× the tokens (%s) the random-init student only reaches %.4f, still %.2f nats behind.", count(e.num("scratch-ce-4x", "tokens")), s4, s4-pk)
	}
	if sk < sc {
		fmt.Fprintf(&b, " Distillation also helps the random student (%.4f vs %.4f with plain cross-entropy), so part of the gain is the teacher's soft targets and part the inherited weights.", sk, sc)
	} else {
		fmt.Fprintf(&b, " For the random student distillation does not beat plain cross-entropy (%.4f vs %.4f), so the gain comes from the inherited weights.", sk, sc)
	}
	tpk, tsc := e.num("ts-pruned-kd", "val_loss"), e.num("ts-scratch-ce", "val_loss")
	if !anyNaN(tpk, tsc, tteacher) && len(tkd) > 0 {
		tb := e.num("ts-pruned-kd", "tokens")
		fmt.Fprintf(&b, " In the teacher's own domain, where its pretraining taught it far more than the student's %s tokens hold, the pruned + distilled student ends at %.4f (teacher %.4f) against %.4f from random initialization, %.2f nats apart",
			count(tb), tpk, tteacher, tsc, tsc-tpk)
		if reach := tokensToReach(tkd, tsc); !math.IsNaN(reach) && reach == tkd[0].tokens {
			fmt.Fprintf(&b, "; it passes the random student's final loss already at its first evaluation (%s tokens, at least %.0f× fewer): there the head start is worth much more than on shakespeare.", count(reach), tb/reach)
		} else {
			fmt.Fprintf(&b, ".")
		}
	}
	fmt.Fprintf(&b, " At equal tokens the papers' central claim holds in both settings; the size of the saving is not comparable to theirs (a 163K-parameter model, a 1 MB corpus seen for 1.25 epochs at 1× and 5 at 4×, one seed, one learning rate tuned for neither arm).\n\n")
	_, err = io.WriteString(w, b.String())
	return err
}

func writeTeacherCorrection(w io.Writer, e *experiment) error {
	ts, tt := e.num("eval-teacher", "dataset.shakespeare.loss"), e.num("eval-teacher", "dataset.tinystories.loss")
	cs, ct := e.num("eval-corrected", "dataset.shakespeare.loss"), e.num("eval-corrected", "dataset.tinystories.loss")
	fmt.Fprintf(w, "Correction: %s tokens of shakespeare (full fine-tune); TinyStories validation: %s scored tokens held out from `tinystories_val.txt`. Seed %s.\n\n",
		count(e.num("teacher-correction", "tokens")), count(e.num("eval-teacher", "dataset.tinystories.tokens")), e.variable("seed"))
	t := table{head: []string{"teacher", "shakespeare loss", "shakespeare ppl", "TinyStories loss", "TinyStories ppl"}}
	t.add("original stories260K", f4(ts), f2(math.Exp(ts)), f4(tt), f2(math.Exp(tt)))
	t.add("corrected", f4(cs), f2(math.Exp(cs)), f4(ct), f2(math.Exp(ct)))
	t.add("change", signedPct(cs/ts-1), "", signedPct(ct/tt-1), "")
	t.write(w)

	a, err := e.arch("prune-width")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Student: width-pruned to hidden %d, MLP %d (%s parameters) using importance from the original teacher, then distilled (forward KL) for %s tokens.\n\n",
		a.hidden, a.mlp, count(float64(a.params)), count(e.num("kd-from-corrected", "tokens")))
	s := table{head: []string{"distilled from", "student shakespeare loss", "ppl", "student TinyStories loss", "KL to its teacher (val)"}}
	os_, ot := e.num("eval-from-original", "dataset.shakespeare.loss"), e.num("eval-from-original", "dataset.tinystories.loss")
	xs, xt := e.num("eval-from-corrected", "dataset.shakespeare.loss"), e.num("eval-from-corrected", "dataset.tinystories.loss")
	s.add("original teacher", f4(os_), f2(math.Exp(os_)), f4(ot), f4(e.num("kd-from-original", "val_kl")))
	s.add("corrected teacher", f4(xs), f2(math.Exp(xs)), f4(xt), f4(e.num("kd-from-corrected", "val_kl")))
	s.write(w)
	if anyNaN(ts, tt, cs, ct, os_, ot, xs, xt) {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.** Correction moves the teacher's shakespeare loss from %.4f to %.4f (%s)", ts, cs, signedPct(cs/ts-1))
	fmt.Fprintf(&b, ", far more than the paper's −6%%: the domain gap between children's stories and Shakespeare is much wider than between Llama's pretraining data and the paper's distillation corpus. It costs the teacher its own domain: TinyStories loss goes from %.4f to %.4f.", tt, ct)
	if xs < os_ {
		fmt.Fprintf(&b, " The student distilled from the corrected teacher ends at %.4f on shakespeare against %.4f from the original teacher (%.2f nats lower), as the paper claims;", xs, os_, os_-xs)
	} else {
		fmt.Fprintf(&b, " The student distilled from the corrected teacher ends at %.4f on shakespeare against %.4f from the original teacher — not lower, contrary to the paper;", xs, os_)
	}
	fmt.Fprintf(&b, " the student of the original teacher imitates a model that is itself poor on this data, so it keeps more TinyStories ability (%.4f vs %.4f) instead.\n\n", ot, xt)
	_, err = io.WriteString(w, b.String())
	return err
}

func writeWidthVsDepth(w io.Writer, e *experiment) error {
	type arm struct{ label, pass, kd, speed string }
	arms := []arm{
		{"teacher (corrected)", "teacher-correction", "", "teacher"},
		{"width-pruned", "prune-width", "kd-width", "width"},
		{"depth-pruned", "prune-depth", "kd-depth", "depth"},
	}
	const rounds = 3
	fmt.Fprintf(w, "Both students distilled (forward KL) for %s tokens from the corrected teacher; depth pruning removed layers %s (the two least important by LM loss with the layer removed). Throughput: LM evaluation (a forward pass scoring every position) of the same %s tokens (1,024 training sequences of 128, batch 16) on %s thread(s), %d rounds in alternation; the best round counts. FLOPs per token are the forward matmul cost at context 128. Seed %s.\n\n",
		count(e.num("kd-width", "tokens")), layerList(e.ints("prune-depth", "dropped_layers")), count(e.num("speed-teacher-1", "dataset.shakespeare.tokens")),
		threadsOf(e), rounds, e.variable("seed"))
	head := []string{"model", "layers", "hidden", "MLP", "params", "loss pruned", "loss distilled"}
	for r := 1; r <= rounds; r++ {
		head = append(head, fmt.Sprintf("tokens/s round %d", r))
	}
	t := table{head: append(head, "best vs teacher", "MFLOPs/token")}
	best := func(speed string) float64 {
		b := math.NaN()
		for r := 1; r <= rounds; r++ {
			v := e.num(fmt.Sprintf("speed-%s-%d", speed, r), "dataset.shakespeare.tokens_per_s")
			if math.IsNaN(b) || v > b {
				b = v
			}
		}
		return b
	}
	teacherBest := best("teacher")
	res := map[string][3]float64{} // loss distilled, best tokens/s, flops
	for _, r := range arms {
		a, err := e.arch(r.pass)
		if err != nil {
			return err
		}
		before, after := e.num(r.kd, "val_loss_before"), e.num(r.kd, "val_loss")
		if r.kd == "" {
			before, after = math.NaN(), e.num(r.pass, "val_loss")
		}
		row := []string{r.label, fmt.Sprint(a.layers), fmt.Sprint(a.hidden), fmt.Sprint(a.mlp), count(float64(a.params)), f4(before), f4(after)}
		for i := 1; i <= rounds; i++ {
			row = append(row, count(e.num(fmt.Sprintf("speed-%s-%d", r.speed, i), "dataset.shakespeare.tokens_per_s")))
		}
		b := best(r.speed)
		t.add(append(row, fmt.Sprintf("%.2f×", b/teacherBest), fmt.Sprintf("%.2f", float64(a.flops)/1e6))...)
		res[r.speed] = [3]float64{after, b, float64(a.flops)}
	}
	t.write(w)
	wd, dp, th := res["width"], res["depth"], res["teacher"]
	if anyNaN(wd[0], dp[0], wd[1], dp[1], th[1]) {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil
	}
	var b strings.Builder
	wp, dpp := e.num("kd-width", "val_loss_before"), e.num("kd-depth", "val_loss_before")
	fmt.Fprintf(&b, "**Reading.** Right after pruning, width keeps more (%.4f vs %.4f for depth). After distillation the width-pruned student ends at %.4f and the depth-pruned one at %.4f", wp, dpp, wd[0], dp[0])
	switch diff := dp[0] - wd[0]; {
	case math.Abs(diff) < 0.02:
		fmt.Fprintf(&b, ": %.3f nats apart, a tie at one seed, so the paper's advantage for width (73.5 vs 72.1 Winogrande at 4B) does not show after distillation at this scale.", math.Abs(diff))
	case diff > 0:
		fmt.Fprintf(&b, ": width keeps more quality (by %.3f nats), as in the paper.", diff)
	default:
		fmt.Fprintf(&b, ": depth ends ahead by %.3f nats, unlike the paper.", -diff)
	}
	fmt.Fprintf(&b, " Forward throughput: depth %.2f×, width %.2f× the teacher's (best of %d rounds)", dp[1]/th[1], wd[1]/th[1], rounds)
	if dp[1] > wd[1] {
		fmt.Fprintf(&b, ", so depth pruning is the faster one, as the paper found (2.7× vs 1.8× on an H100).")
	} else {
		fmt.Fprintf(&b, ", so depth pruning is not faster here, unlike the paper (2.7× vs 1.8× on an H100).")
	}
	fmt.Fprintf(&b, " By FLOP count depth needs %.2f and width %.2f MFLOPs per token (teacher %.2f): removing layers also removes their attention-score work, which narrowing the hidden size leaves untouched because the heads are kept.", dp[2]/1e6, wd[2]/1e6, th[2]/1e6)
	if flopsGain, speed := th[2]/wd[2], wd[1]/th[1]; speed < 1+(flopsGain-1)/2 {
		fmt.Fprintf(&b, " The width-pruned model's measured speed-up (%.2f×) falls well short of its FLOP saving (%.2f×): at hidden 48 and MLP 136 the kernels do fewer operations but not proportionally less time (not investigated further).", speed, flopsGain)
	}
	fmt.Fprintf(&b, " At this size per-layer overheads (norms, RoPE, softmax, goroutine hand-offs) weigh more than in a GPU-sized model, and a shared CPU makes timings noisy: compare the rounds before trusting a difference.\n\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func threadsOf(e *experiment) string {
	if e.machine == nil {
		return "?"
	}
	return fmt.Sprint(e.machine.Threads)
}

func writeDepthSelection(w io.Writer, e *experiment) error {
	// Per-layer and per-block rankings.
	lm1, bi, acc1 := e.floats("score-layers", "layers.lm_loss"), e.floats("score-layers", "layers.block_influence"), e.floats("score-layers", "layers.accuracy")
	lm2, acc2 := e.floats("score-blocks", "layers.lm_loss"), e.floats("score-blocks", "layers.accuracy")
	wItems, cItems := e.num("eval-teacher", "task.winogrande.items"), e.num("eval-teacher", "task.copa.items")
	fmt.Fprintf(w, "Teacher: the original stories260K in its own domain — TinyStories validation text, 10%% held out (%s scored tokens), the rest for calibration and distillation. Importance of each layer (higher = more important): LM-loss increase on 256 held-out sequences with the layer (block) removed, Block Influence 1 − cos(x_in, x_out) on 256 training sequences, and the COPA accuracy drop (%s items) with the layer (block) removed. Blocks of two start at layer l; the last row's block is cut short and is no candidate. Seed %s.\n\n",
		count(e.num("eval-teacher", "dataset.tinystories.tokens")), count(cItems), e.variable("seed"))
	t := table{head: []string{"layer l", "LM loss Δ, layer l", "Block Influence", "COPA Δ, layer l", "LM loss Δ, layers l..l+1", "COPA Δ, layers l..l+1"}}
	for l := range lm1 {
		at := func(v []float64, f func(float64) string) string {
			if l < len(v) {
				return f(v[l])
			}
			return "n/a"
		}
		t.add(fmt.Sprint(l), at(lm1, f4), at(bi, f4), at(acc1, signedPctPoints), at(lm2, f4), at(acc2, signedPctPoints))
	}
	t.write(w)

	type variant struct{ label, name string }
	vs := []variant{
		{"individual, LM loss", "individual-lm-loss"},
		{"individual, Block Influence", "individual-block-influence"},
		{"individual, COPA", "individual-accuracy"},
		{"contiguous block, LM loss", "block-lm-loss"},
		{"contiguous block, COPA", "block-accuracy"},
	}
	fmt.Fprintf(w, "Two of five layers removed (169,152 parameters), then distilled for %s tokens (forward KL). Loss: held-out TinyStories.\n\n", count(e.num("kd-block-lm-loss", "tokens")))
	r := table{left: []int{1}, head: []string{"selection", "layers removed", "loss pruned", "COPA pruned", "Winogrande pruned", "loss distilled", "COPA distilled", "Winogrande distilled"}}
	r.add("teacher (5 layers)", "-", f4(e.num("eval-teacher", "dataset.tinystories.loss")), pct(e.num("eval-teacher", "task.copa.acc")), pct(e.num("eval-teacher", "task.winogrande.acc")), "-", "-", "-")
	type outcome struct {
		label, layers            string
		loss, copa, pLoss, pCopa float64
	}
	var outs []outcome
	for _, v := range vs {
		p, d := "eval-"+v.name+"-pruned", "eval-"+v.name+"-distilled"
		layers := layerList(e.ints("prune-"+v.name, "dropped_layers"))
		r.add(v.label, layers, f4(e.num(p, "dataset.tinystories.loss")), pct(e.num(p, "task.copa.acc")), pct(e.num(p, "task.winogrande.acc")),
			f4(e.num(d, "dataset.tinystories.loss")), pct(e.num(d, "task.copa.acc")), pct(e.num(d, "task.winogrande.acc")))
		outs = append(outs, outcome{v.label, layers, e.num(d, "dataset.tinystories.loss"), e.num(d, "task.copa.acc"), e.num(p, "dataset.tinystories.loss"), e.num(p, "task.copa.acc")})
	}
	r.write(w)
	for _, o := range outs {
		if anyNaN(o.loss, o.copa, o.pLoss, o.pCopa, wItems, cItems) {
			fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
			return nil
		}
	}

	// Group the variants by the layers they chose: identical choices give
	// identical models.
	groups := map[string][]string{}
	var order []string
	for _, o := range outs {
		if _, ok := groups[o.layers]; !ok {
			order = append(order, o.layers)
		}
		groups[o.layers] = append(groups[o.layers], o.label)
	}
	best, bestCopa := outs[0], outs[0]
	for _, o := range outs[1:] {
		if o.loss < best.loss {
			best = o
		}
		if o.copa > bestCopa.copa {
			bestCopa = o
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.** The five rankings chose %d distinct sets of layers:", len(order))
	for i, l := range order {
		sep := ";"
		if i == len(order)-1 {
			sep = "."
		}
		fmt.Fprintf(&b, " %s by %s%s", l, strings.Join(groups[l], " and "), sep)
	}
	fmt.Fprintf(&b, " By held-out LM loss after distillation the best choice is %s (%s: %.4f); by COPA after distillation %s (%s: %s).",
		best.layers, best.label, best.loss, bestCopa.layers, bestCopa.label, pct(bestCopa.copa))
	lo, hi := outs[0].copa, outs[0].copa
	loP, hiP := outs[0].pCopa, outs[0].pCopa
	for _, o := range outs {
		lo, hi = math.Min(lo, o.copa), math.Max(hi, o.copa)
		loP, hiP = math.Min(loP, o.pCopa), math.Max(hiP, o.pCopa)
	}
	se := math.Sqrt(0.25 / cItems)
	fmt.Fprintf(&b, " COPA spreads over %.0f points right after pruning (%.1f standard errors) and %.0f points after distillation (%.1f).", 100*(hiP-loP), (hiP-loP)/se, 100*(hi-lo), (hi-lo)/se)
	fmt.Fprintf(&b, " The downstream scores are weak evidence at this scale: one standard error is %.1f points on COPA's %s items and %.1f on Winogrande's %s, the teacher is at chance on Winogrande (%s), and ranking and evaluating on the same COPA items favours the COPA-ranked variants.",
		100*se, count(cItems), 100*math.Sqrt(0.25/wItems), count(wItems), pct(e.num("eval-teacher", "task.winogrande.acc")))
	fmt.Fprintf(&b, " The paper's result (contiguous block 0.595 vs individual 0.50 Winogrande on Llama-3.1-8B, 32→16 layers) concerns a model with 32 layers to choose from; with 5 layers and 2 removed the candidate sets overlap heavily. What carries over is the method: `score` with `block = 2` measures removing a block as a whole, and `prune-depth` with `selection = \"block\"` removes the measured best block instead of summing single-layer scores.\n\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func signedPctPoints(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f pt", 100*v)
}

func writeDistillLoss(w io.Writer, e *experiment) error {
	a, err := e.arch("prune-width")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Student: width-pruned to hidden %d, MLP %d (%s parameters). Val KL is the full-vocabulary forward KL from the teacher on the held-out split, whatever the training loss. One learning rate (3e-3) for every arm. Seed %s.\n\n",
		a.hidden, a.mlp, count(float64(a.params)), e.variable("seed"))
	ood, err := distillArms(w, e, "", "Out of domain: the corrected teacher on tiny-shakespeare")
	if err != nil || ood == nil {
		return err
	}
	in, err := distillArms(w, e, "ts-", "In domain: the original teacher on TinyStories")
	if err != nil || in == nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.**")
	for _, st := range []struct {
		name string
		r    []distillResult
	}{{"Out of domain", ood}, {"In domain", in}} {
		byLoss := append([]distillResult(nil), st.r...)
		sort.SliceStable(byLoss, func(i, j int) bool { return byLoss[i].loss < byLoss[j].loss })
		fmt.Fprintf(&b, " %s, ranked by held-out loss:", st.name)
		for i, r := range byLoss {
			sep := ";"
			if i == len(byLoss)-1 {
				sep = "."
			}
			fmt.Fprintf(&b, " %s %.4f%s", r.label, r.loss, sep)
		}
	}
	kl, ce, mix := in[0], in[1], in[2]
	oKL, oCE := ood[0], ood[1]
	switch {
	case kl.loss < ce.loss && oKL.loss < oCE.loss:
		fmt.Fprintf(&b, " Forward KL beats cross-entropy on the data in both settings, in line with the Minitron choice of logit-only KL.")
	case kl.loss < ce.loss:
		fmt.Fprintf(&b, " Forward KL beats cross-entropy in domain (%.4f vs %.4f) but not out of domain (%.4f vs %.4f).", kl.loss, ce.loss, oKL.loss, oCE.loss)
	case oKL.loss < oCE.loss:
		fmt.Fprintf(&b, " Forward KL beats cross-entropy out of domain (%.4f vs %.4f) but not in domain (%.4f vs %.4f).", oKL.loss, oCE.loss, kl.loss, ce.loss)
	default:
		fmt.Fprintf(&b, " On the data's own loss, pure forward KL does not beat plain cross-entropy here, in domain (%.4f vs %.4f) or out of it (%.4f vs %.4f), contrary to the Minitron choice of logit-only KL;", kl.loss, ce.loss, oKL.loss, oCE.loss)
		fmt.Fprintf(&b, " the KL student is pulled towards its teacher rather than the data (val KL %.4f vs %.4f for the cross-entropy student in domain), and out of domain the corrected teacher (%.4f) is itself no better than a student trained on the data (%.4f). Whether KL catches up with longer training (the papers distil for billions of tokens) was not measured.", kl.kl, ce.kl, e.num("kl", "teacher_val_loss"), oCE.loss)
	}
	if mix.loss < math.Min(kl.loss, ce.loss) {
		fmt.Fprintf(&b, " The equal mix is the best in domain (%.4f): the teacher's soft targets and the data's hard ones help together", mix.loss)
		if oMix := ood[2].loss; oMix < math.Min(oKL.loss, oCE.loss) {
			fmt.Fprintf(&b, ", and out of domain too (%.4f).", oMix)
		} else {
			fmt.Fprintf(&b, "; out of domain it is %.4f, %.4f behind the best arm.", oMix, oMix-math.Min(oKL.loss, oCE.loss))
		}
	}
	fmt.Fprintf(&b, " Keeping only the teacher's top-64 of 512 logits is nearly free (%+.4f in domain, %+.4f out of domain, relative to the full softmax); top-8 costs %+.4f and %+.4f, because the student then never sees the tail of the teacher's distribution.",
		in[3].loss-kl.loss, ood[3].loss-oKL.loss, in[4].loss-kl.loss, ood[4].loss-oKL.loss)
	fmt.Fprintf(&b, " Each arm is one seed and one learning rate; seed-to-seed variation was not measured, so differences of a few thousandths of a nat are unresolved.\n\n")
	_, err = io.WriteString(w, b.String())
	return err
}

type distillResult struct {
	label    string
	loss, kl float64
}

// distillArms writes the table of one setting's five arms (pass names
// prefixed by prefix) and returns their results, or nil when a number is
// missing.
func distillArms(w io.Writer, e *experiment, prefix, title string) ([]distillResult, error) {
	type arm struct{ label, pass, ce, topk string }
	arms := []arm{
		{"forward KL", "kl", "0", "all 512"},
		{"cross-entropy on the data", "ce", "1", "-"},
		{"½ KL + ½ CE", "mix-0.5", "0.5", "all 512"},
		{"forward KL, top-64 logits", "kl-top64", "0", "64"},
		{"forward KL, top-8 logits", "kl-top8", "0", "8"},
	}
	first := prefix + arms[0].pass
	fmt.Fprintf(w, "%s — %s training tokens per arm; student val loss %s before training, teacher %s:\n\n",
		title, count(e.num(first, "tokens")), f4(e.num(first, "val_loss_before")), f4(e.num(first, "teacher_val_loss")))
	t := table{left: []int{2}, head: []string{"training loss", "ce_weight", "teacher logits", "val loss (CE)", "val ppl", "val KL to teacher"}}
	var rs []distillResult
	missing := false
	for _, r := range arms {
		l, kl := e.num(prefix+r.pass, "val_loss"), e.num(prefix+r.pass, "val_kl")
		t.add(r.label, r.ce, r.topk, f4(l), f2(math.Exp(l)), f4(kl))
		rs = append(rs, distillResult{r.label, l, kl})
		missing = missing || anyNaN(l, kl)
	}
	t.write(w)
	if missing {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil, nil
	}
	return rs, nil
}

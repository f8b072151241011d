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
	"strconv"
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

// loadExperiment reads the run of recipePath in dir (one seed's).
func loadExperiment(recipePath, dir string) (*experiment, error) {
	name := strings.TrimSuffix(filepath.Base(recipePath), ".hcl")
	e := &experiment{name: name, recipe: recipePath, dir: dir}
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

// arch is the architecture and size of the model a pass produced.
type arch struct {
	layers, hidden, mlp int
	heads, kvHeads      int
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
		a.mlp, a.heads, a.kvHeads = c.Layers[0].MLP, c.Layers[0].Heads, c.Layers[0].KVHeads
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

// section renders one finding from its experiment's complete seeds.
type section struct {
	recipe string // file name without .hcl
	title  string
	claim  string // the paper's claim, as docs/minitron.md states it
	write  func(w io.Writer, x seeded) error
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
	{"06-search", "6. Prune to a budget: searched vs hand-picked vs random student",
		"Minitron ranks candidate architectures of the target size after a light retraining instead of fixing the student's shape by hand, since the ranking of candidates right after pruning is not their ranking after retraining; Model Optimizer's auto pruning keeps the candidate that scores best under `params`, `active_params` or `memory` budgets.",
		writeSearch},
}

// loadSeeds reads every seed's run of a recipe, adds each to the runs
// table, and returns the complete ones with the compute time of all.
func loadSeeds(mt *table, recipePath, runsDir string, seeds []int) (seeded, float64, error) {
	name := strings.TrimSuffix(filepath.Base(recipePath), ".hcl")
	var done seeded
	var total float64
	for _, seed := range seeds {
		e, err := loadExperiment(recipePath, seedDir(runsDir, name, seed))
		if err != nil {
			return seeded{}, 0, err
		}
		total += mt.addRun(name, seed, e)
		if e.complete() {
			done.runs = append(done.runs, e)
			done.seeds = append(done.seeds, seed)
		}
	}
	return done, total, nil
}

func writeReport(w io.Writer, recipeDir, runsDir string, recipes []string, seeds []int) error {
	recipes = slices.Sorted(slices.Values(recipes))
	mt := table{head: []string{"experiment", "seed", "machine", "threads", "load (1 min) before → after", "compute time", "state"}, left: []int{2, 6}}
	bySeed := map[string]seeded{}
	paths := map[string]string{}
	var total float64
	for _, p := range recipes {
		x, s, err := loadSeeds(&mt, p, runsDir, seeds)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(filepath.Base(p), ".hcl")
		bySeed[name], paths[name] = x, p
		total += s
	}

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

Every experiment runs once per seed (`+seedWords(seeds)+`); the seed draws the data split, the sampled batches and
the random initializations. Each number below is the mean ± sample standard deviation (n − 1) over the seeds
whose run completed, n given per section; a number alone had one seed. A reading calls one number better than
another only when their means differ by more than the sum of their standard deviations, and otherwise says the
difference is within the seed-to-seed spread.

`)
	fmt.Fprintf(w, "## Runs\n\n")
	mt.write(w)
	fmt.Fprintf(w, "Total compute time %s (the sum of the passes' wall times; a resumed pass keeps the time it first took).\n"+
		"Quality numbers are bitwise repeatable on the CPU backend for the same seed, machine and build; timings\n"+
		"are not, and a load above the core count means other work shared the CPU while they were taken.\n\n",
		dur(total))

	for _, s := range sections {
		fmt.Fprintf(w, "## %s\n\n*Paper:* %s\n\n", s.title, s.claim)
		x, ok := bySeed[s.recipe]
		if !ok {
			fmt.Fprintf(w, "*No recipe %s.hcl.*\n\n", s.recipe)
			continue
		}
		fmt.Fprintf(w, "Recipe: `%s`; runs: `%s`.\n\n", filepath.ToSlash(paths[s.recipe]), filepath.ToSlash(filepath.Join(runsDir, s.recipe, "seed-<n>")))
		if len(x.runs) == 0 {
			fmt.Fprintf(w, "*Not run yet (or unfinished): run the generator to complete it.*\n\n")
			continue
		}
		fmt.Fprintf(w, "**n = %d** (%s %s).", len(x.runs), plural(len(x.runs), "seed", "seeds"), x.seedList())
		if len(x.runs) < len(seeds) {
			fmt.Fprintf(w, " *Only %d of the %d seeds %s completed; run the generator to complete the rest.*", len(x.runs), len(seeds), plural(len(x.runs), "has", "have"))
		}
		if len(x.runs) < 2 {
			fmt.Fprintf(w, " *With one seed there is no spread: no difference below is resolved.*")
		}
		var stale []string
		for i, e := range x.runs {
			if e.stale {
				stale = append(stale, fmt.Sprint(x.seeds[i]))
			}
		}
		if len(stale) > 0 {
			fmt.Fprintf(w, " *The recipe changed after the run of %s %s; run the generator again to bring it up to date.*", plural(len(stale), "seed", "seeds"), strings.Join(stale, ", "))
		}
		fmt.Fprintf(w, "\n\n")
		if err := s.write(w, x); err != nil {
			return fmt.Errorf("%s: %w", s.recipe, err)
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// seedWords is "seeds 1, 2 and 3".
func seedWords(seeds []int) string {
	return plural(len(seeds), "seed", "seeds") + " " + seeded{seeds: seeds}.seedList()
}

// curveTable tabulates the mean validation curves of passes, one column
// each, at the first pass's evaluations.
func curveTable(x seeded, labels, passes []string) table {
	curves := make([][]curvePoint, len(passes))
	for i, p := range passes {
		curves[i] = x.curve(p)
	}
	t := table{head: append([]string{"tokens"}, labels...)}
	for i, p := range curves[0] {
		row := []string{count(p.tokens)}
		for _, c := range curves {
			cell := "n/a"
			if i < len(c) && c[i].tokens == p.tokens {
				cell = lossCell(c[i].loss)
			}
			row = append(row, cell)
		}
		t.add(row...)
	}
	return t
}

// trainArm is a training pass of finding 1 and its table row.
type trainArm struct{ label, pass, init, objective string }

// trainTable tabulates training arms against the teacher loss recorded
// by teacherPass.
func trainTable(x seeded, teacherLabel, teacherPass string, arms []trainArm) table {
	t := table{head: []string{"student", "initialization", "objective", "training tokens", "val loss before", "val loss after", "val ppl after", "gap to teacher"}, left: []int{1, 2}}
	t.add(teacherLabel, "-", "-", "-", "-", lossCell(x.num(teacherPass, "teacher_val_loss")), pplCell(x.exp(teacherPass, "teacher_val_loss")), "-")
	for _, r := range arms {
		gap := x.of(func(e *experiment) float64 { return e.num(r.pass, "val_loss") - e.num(teacherPass, "teacher_val_loss") })
		t.add(r.label, r.init, r.objective, countCell(x.num(r.pass, "tokens")), lossCell(x.num(r.pass, "val_loss_before")),
			lossCell(x.num(r.pass, "val_loss")), pplCell(x.exp(r.pass, "val_loss")), lossCell(gap))
	}
	return t
}

func writePruneVsScratch(w io.Writer, x seeded) error {
	a, err := x.first().arch("prune-width")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Student: %d layers, hidden %d, MLP %d, %s parameters (%.0f%% of the teacher).\n\n",
		a.layers, a.hidden, a.mlp, count(float64(a.params)), 100*float64(a.params)/260032)
	tt := trainTable(x, "teacher (corrected)", "pruned-kd", []trainArm{
		{"pruned + distilled", "pruned-kd", "pruned teacher", "forward KL"},
		{"random init + CE", "scratch-ce", "N(0, 0.02²)", "cross-entropy"},
		{"random init + distilled", "scratch-kd", "N(0, 0.02²)", "forward KL"},
		{"random init + CE, 4× tokens", "scratch-ce-4x", "N(0, 0.02²)", "cross-entropy"},
	})
	tt.write(w)
	fmt.Fprintf(w, "Validation loss during training:\n\n")
	c := curveTable(x, []string{"pruned + distilled", "random init + CE", "random init + distilled"}, []string{"pruned-kd", "scratch-ce", "scratch-kd"})
	c.write(w)
	fmt.Fprintf(w, "The 4× run (its cosine schedule stretched over 4× the steps):\n\n")
	c4 := curveTable(x, []string{"random init + CE, 4× tokens"}, []string{"scratch-ce-4x"})
	c4.write(w)
	fmt.Fprintf(w, "In the teacher's own domain — the original teacher, the student pruned by TinyStories importance, 10%% of `tinystories_val.txt` held out; the random student is the same draw:\n\n")
	ts := trainTable(x, "teacher (original)", "ts-pruned-kd", []trainArm{
		{"pruned + distilled", "ts-pruned-kd", "pruned teacher", "forward KL"},
		{"random init + CE", "ts-scratch-ce", "N(0, 0.02²)", "cross-entropy"},
	})
	ts.write(w)
	tc := curveTable(x, []string{"pruned + distilled", "random init + CE"}, []string{"ts-pruned-kd", "ts-scratch-ce"})
	tc.write(w)

	teacher := x.num("pruned-kd", "teacher_val_loss")
	pk, sc, sk, s4 := x.num("pruned-kd", "val_loss"), x.num("scratch-ce", "val_loss"), x.num("scratch-kd", "val_loss"), x.num("scratch-ce-4x", "val_loss")
	budget := x.num("pruned-kd", "tokens").mean
	if anyNaN(pk.mean, sc.mean, sk.mean, s4.mean, teacher.mean, budget) {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.** On the same %s tokens the pruned + distilled student ends at %s (the teacher: %s), while the same architecture from random initialization ends at %s with cross-entropy and %s with the same distillation loss.",
		count(budget), lossCell(pk), lossCell(teacher), lossCell(sc), lossCell(sk))
	rand, randName := sc, "random init + CE"
	if sk.mean < sc.mean {
		rand, randName = sk, "random init + distilled"
	}
	prunedWins := judge(pk, rand, nats)
	fmt.Fprintf(&b, " Against the better random-init run, %s.", compare("pruned + distilled", pk, randName, rand, nats))
	kd := means(x.curve("pruned-kd"))
	if reach := tokensToReach(kd, rand.mean); prunedWins > 0 && !math.IsNaN(reach) {
		if reach == kd[0].tokens {
			fmt.Fprintf(&b, " The pruned student's mean curve is below that run's final mean already at its first evaluation, after %s tokens: at least %.0f× fewer.", count(reach), budget/reach)
		} else {
			fmt.Fprintf(&b, " The pruned student's mean curve is below that run's final mean after %s tokens (evaluations every %s), %.0f× fewer.", count(reach), count(kd[0].tokens), budget/reach)
		}
	}
	s4Curve := means(x.curve("scratch-ce-4x"))
	if reach := tokensToReach(s4Curve, pk.mean); !math.IsNaN(reach) {
		fmt.Fprintf(&b, " Given more tokens the random-init student catches up: its mean curve reaches the pruned student's final mean after %s tokens (%.1f× the budget; evaluations every %s tokens), and at the end of its 4× run %s.",
			count(reach), reach/budget, count(s4Curve[0].tokens), compare("random init + CE, 4× tokens", s4, "the teacher", teacher, nats))
		if judge(s4, teacher, nats) > 0 {
			fmt.Fprintf(&b, " The corrected teacher has itself seen only %s shakespeare tokens; a distilled student converges towards its teacher, while a student trained on the data has no such ceiling.", count(x.num("teacher-correction", "tokens").mean))
		}
		if prunedWins > 0 {
			fmt.Fprintf(&b, " The advantage of pruning + distillation here is a head start, worth about %.1f× in tokens, not the papers' 40×.", reach/budget)
		}
	} else {
		fmt.Fprintf(&b, " With 4× the tokens (%s), %s.", count(x.num("scratch-ce-4x", "tokens").mean), compare("pruned + distilled", pk, "random init + CE", s4, nats))
	}
	fmt.Fprintf(&b, " For the random student, %s", compare("distillation", sk, "plain cross-entropy", sc, nats))
	switch judge(sk, sc, nats) {
	case 1:
		fmt.Fprintf(&b, ", so part of the gain is the teacher's soft targets and part the inherited weights.")
	case -1:
		fmt.Fprintf(&b, ", so the gain comes from the inherited weights.")
	default:
		fmt.Fprintf(&b, ", so the teacher's soft targets alone are not shown to help.")
	}
	tteacher, tpk, tsc := x.num("ts-pruned-kd", "teacher_val_loss"), x.num("ts-pruned-kd", "val_loss"), x.num("ts-scratch-ce", "val_loss")
	inDomainWins := 0
	if tkd := means(x.curve("ts-pruned-kd")); !anyNaN(tpk.mean, tsc.mean, tteacher.mean) && len(tkd) > 0 {
		inDomainWins = judge(tpk, tsc, nats)
		tb := x.num("ts-pruned-kd", "tokens").mean
		fmt.Fprintf(&b, " In the teacher's own domain, where its pretraining taught it far more than the student's %s tokens hold, the pruned + distilled student ends at %s (the teacher: %s) and the random-init one at %s: %s",
			count(tb), lossCell(tpk), lossCell(tteacher), lossCell(tsc), compare("pruned + distilled", tpk, "random init", tsc, nats))
		if reach := tokensToReach(tkd, tsc.mean); inDomainWins > 0 && !math.IsNaN(reach) && reach == tkd[0].tokens {
			fmt.Fprintf(&b, "; its mean curve passes the random student's final mean already at its first evaluation (%s tokens, at least %.0f× fewer).", count(reach), tb/reach)
		} else {
			fmt.Fprintf(&b, ".")
		}
	}
	if prunedWins > 0 && inDomainWins > 0 {
		fmt.Fprintf(&b, " At equal tokens the papers' central claim holds in both settings, beyond the spread;")
	} else {
		fmt.Fprintf(&b, " At equal tokens the papers' central claim is not resolved in both settings here;")
	}
	fmt.Fprintf(&b, " the size of the saving is not comparable to theirs (a %s-parameter model, a 1 MB corpus seen for 1.25 epochs at 1× and 5 at 4×, %d %s, one learning rate tuned for neither arm).\n\n",
		count(float64(a.params)), len(x.runs), plural(len(x.runs), "seed", "seeds"))
	_, err = io.WriteString(w, b.String())
	return err
}

func writeTeacherCorrection(w io.Writer, x seeded) error {
	ts, tt := x.num("eval-teacher", "dataset.shakespeare.loss"), x.num("eval-teacher", "dataset.tinystories.loss")
	cs, ct := x.num("eval-corrected", "dataset.shakespeare.loss"), x.num("eval-corrected", "dataset.tinystories.loss")
	change := func(data string) stat {
		return x.of(func(e *experiment) float64 {
			return e.num("eval-corrected", "dataset."+data+".loss")/e.num("eval-teacher", "dataset."+data+".loss") - 1
		})
	}
	dS, dT := change("shakespeare"), change("tinystories")
	fmt.Fprintf(w, "Correction: %s tokens of shakespeare (full fine-tune); TinyStories validation: %s scored tokens held out from `tinystories_val.txt`.\n\n",
		countCell(x.num("teacher-correction", "tokens")), countCell(x.num("eval-teacher", "dataset.tinystories.tokens")))
	t := table{head: []string{"teacher", "shakespeare loss", "shakespeare ppl", "TinyStories loss", "TinyStories ppl"}}
	t.add("original stories260K", lossCell(ts), pplCell(x.exp("eval-teacher", "dataset.shakespeare.loss")), lossCell(tt), pplCell(x.exp("eval-teacher", "dataset.tinystories.loss")))
	t.add("corrected", lossCell(cs), pplCell(x.exp("eval-corrected", "dataset.shakespeare.loss")), lossCell(ct), pplCell(x.exp("eval-corrected", "dataset.tinystories.loss")))
	t.add("change", changeCell(dS), "", changeCell(dT), "")
	t.write(w)

	a, err := x.first().arch("prune-width")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Student: width-pruned to hidden %d, MLP %d (%s parameters) using importance from the original teacher, then distilled (forward KL) for %s tokens.\n\n",
		a.hidden, a.mlp, count(float64(a.params)), countCell(x.num("kd-from-corrected", "tokens")))
	s := table{head: []string{"distilled from", "student shakespeare loss", "ppl", "student TinyStories loss", "KL to its teacher (val)"}}
	os_, ot := x.num("eval-from-original", "dataset.shakespeare.loss"), x.num("eval-from-original", "dataset.tinystories.loss")
	xs, xt := x.num("eval-from-corrected", "dataset.shakespeare.loss"), x.num("eval-from-corrected", "dataset.tinystories.loss")
	s.add("original teacher", lossCell(os_), pplCell(x.exp("eval-from-original", "dataset.shakespeare.loss")), lossCell(ot), lossCell(x.num("kd-from-original", "val_kl")))
	s.add("corrected teacher", lossCell(xs), pplCell(x.exp("eval-from-corrected", "dataset.shakespeare.loss")), lossCell(xt), lossCell(x.num("kd-from-corrected", "val_kl")))
	s.write(w)
	if anyNaN(ts.mean, tt.mean, cs.mean, ct.mean, os_.mean, ot.mean, xs.mean, xt.mean) {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.** Correction changes the teacher's shakespeare loss by %s (the paper: −6%%): %s", changeCell(dS), compare("the corrected teacher", cs, "the original", ts, nats))
	if judge(cs, ts, nats) > 0 && dS.mean < -2*0.06 {
		fmt.Fprintf(&b, ", a far larger gain than the paper's: the domain gap between children's stories and Shakespeare is much wider than between Llama's pretraining data and the paper's distillation corpus.")
	} else {
		fmt.Fprintf(&b, ".")
	}
	fmt.Fprintf(&b, " On TinyStories, %s", compare("the original teacher", tt, "the corrected one", ct, nats))
	if judge(tt, ct, nats) > 0 {
		fmt.Fprintf(&b, ": correction costs the teacher its own domain.")
	} else {
		fmt.Fprintf(&b, ".")
	}
	j := judge(xs, os_, nats)
	fmt.Fprintf(&b, " Of the students, on shakespeare %s, %s.", compare("the student of the corrected teacher", xs, "the student of the original teacher", os_, nats), paperAgrees(j))
	fmt.Fprintf(&b, " On TinyStories %s", compare("the student of the original teacher", ot, "the student of the corrected teacher", xt, nats))
	if judge(ot, xt, nats) > 0 {
		fmt.Fprintf(&b, ": it imitates a teacher that is itself poor on shakespeare and keeps more of the TinyStories ability instead.\n\n")
	} else {
		fmt.Fprintf(&b, ".\n\n")
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// bestRound is a model's best throughput over the speed rounds of one
// seed's run: the round least disturbed by other work.
func bestRound(e *experiment, speed string, rounds int) float64 {
	b := math.NaN()
	for r := 1; r <= rounds; r++ {
		v := e.num(fmt.Sprintf("speed-%s-%d", speed, r), "dataset.shakespeare.tokens_per_s")
		if math.IsNaN(b) || v > b {
			b = v
		}
	}
	return b
}

func writeWidthVsDepth(w io.Writer, x seeded) error {
	type arm struct{ label, pass, kd, speed string }
	arms := []arm{
		{"teacher (corrected)", "teacher-correction", "", "teacher"},
		{"width-pruned", "prune-width", "kd-width", "width"},
		{"depth-pruned", "prune-depth", "kd-depth", "depth"},
	}
	const rounds = 3
	fmt.Fprintf(w, "Both students distilled (forward KL) for %s tokens from the corrected teacher; depth pruning removed layers %s (the two least important by LM loss with the layer removed). Throughput: LM evaluation (a forward pass scoring every position) of the same %s tokens (1,024 training sequences of 128, batch 16) on %s thread(s), %d rounds in alternation; the best round of each seed counts. FLOPs per token are the forward matmul cost at context 128.\n\n",
		countCell(x.num("kd-width", "tokens")), x.choices("prune-depth", "dropped_layers"), countCell(x.num("speed-teacher-1", "dataset.shakespeare.tokens")),
		threadsOf(x.first()), rounds)
	head := []string{"model", "layers", "hidden", "MLP", "params", "loss pruned", "loss distilled"}
	for r := 1; r <= rounds; r++ {
		head = append(head, fmt.Sprintf("tokens/s round %d", r))
	}
	t := table{head: append(head, "best vs teacher", "MFLOPs/token")}
	type result struct {
		before, after, ratio stat
		flops                float64
		hidden               int
	}
	res := map[string]result{}
	for _, r := range arms {
		a, err := x.first().arch(r.pass)
		if err != nil {
			return err
		}
		before, after := x.num(r.kd, "val_loss_before"), x.num(r.kd, "val_loss")
		if r.kd == "" {
			before, after = meanSD(nil), x.num(r.pass, "val_loss")
		}
		row := []string{r.label, fmt.Sprint(a.layers), fmt.Sprint(a.hidden), fmt.Sprint(a.mlp), count(float64(a.params)), lossCell(before), lossCell(after)}
		for i := 1; i <= rounds; i++ {
			row = append(row, countCell(x.num(fmt.Sprintf("speed-%s-%d", r.speed, i), "dataset.shakespeare.tokens_per_s")))
		}
		ratio := x.of(func(e *experiment) float64 { return bestRound(e, r.speed, rounds) / bestRound(e, "teacher", rounds) })
		t.add(append(row, ratio.render(times, times), fmt.Sprintf("%.2f", float64(a.flops)/1e6))...)
		res[r.speed] = result{before, after, ratio, float64(a.flops), a.hidden}
	}
	t.write(w)
	wd, dp, th := res["width"], res["depth"], res["teacher"]
	if anyNaN(wd.before.mean, dp.before.mean, wd.after.mean, dp.after.mean, wd.ratio.mean, dp.ratio.mean) {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.** Right after pruning, %s.", compare("width", wd.before, "depth", dp.before, nats))
	j := judge(wd.after, dp.after, nats)
	fmt.Fprintf(&b, " After distillation %s", compare("the width-pruned student", wd.after, "the depth-pruned one", dp.after, nats))
	switch j {
	case 1:
		fmt.Fprintf(&b, ", as in the paper.")
	case -1:
		fmt.Fprintf(&b, ", unlike the paper.")
	default:
		fmt.Fprintf(&b, ", so the paper's advantage for width (73.5 vs 72.1 Winogrande at 4B) does not show after distillation at this scale.")
	}
	fmt.Fprintf(&b, " Forward throughput (each seed's best of %d rounds): depth %s, width %s the teacher's; %s, %s (2.7× vs 1.8× on an H100).",
		rounds, dp.ratio.render(times, times), wd.ratio.render(times, times), compare("depth pruning", dp.ratio, "width pruning", wd.ratio, speedup), paperAgrees(judge(dp.ratio, wd.ratio, speedup)))
	fmt.Fprintf(&b, " By FLOP count depth needs %.2f and width %.2f MFLOPs per token (teacher %.2f): removing layers also removes their attention-score work, which narrowing the hidden size leaves untouched because the heads are kept.", dp.flops/1e6, wd.flops/1e6, th.flops/1e6)
	// The speed-up falls short when even its upper end is below half
	// the FLOP saving.
	if gain, speed := th.flops/wd.flops, wd.ratio; speed.mean+math.Max(speed.sd, 0) < 1+(gain-1)/2 {
		fmt.Fprintf(&b, " The width-pruned model's measured speed-up (%s) falls well short of its FLOP saving (%.2f×): at hidden %d the kernels do fewer operations but not proportionally less time (not investigated further).", speed.render(times, times), gain, wd.hidden)
	}
	fmt.Fprintf(&b, " At this size per-layer overheads (norms, RoPE, softmax, goroutine hand-offs) weigh more than in a GPU-sized model, and a shared CPU makes timings noisy; their spread over seeds includes that noise.\n\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func times(v float64) string { return fmt.Sprintf("%.2f×", v) }

func threadsOf(e *experiment) string {
	if e.machine == nil {
		return "?"
	}
	return fmt.Sprint(e.machine.Threads)
}

func writeDepthSelection(w io.Writer, x seeded) error {
	// Per-layer and per-block rankings.
	lm1, bi, acc1 := x.floats("score-layers", "layers.lm_loss"), x.floats("score-layers", "layers.block_influence"), x.floats("score-layers", "layers.accuracy")
	lm2, acc2 := x.floats("score-blocks", "layers.lm_loss"), x.floats("score-blocks", "layers.accuracy")
	wItems, cItems := x.num("eval-teacher", "task.winogrande.items").mean, x.num("eval-teacher", "task.copa.items").mean
	fmt.Fprintf(w, "Teacher: the original stories260K in its own domain — TinyStories validation text, 10%% held out (%s scored tokens), the rest for calibration and distillation. Importance of each layer (higher = more important): LM-loss increase on 256 held-out sequences with the layer (block) removed, Block Influence 1 − cos(x_in, x_out) on 256 training sequences, and the COPA accuracy drop (%s items) with the layer (block) removed. Blocks of two start at layer l; the last row's block is cut short and is no candidate.\n\n",
		countCell(x.num("eval-teacher", "dataset.tinystories.tokens")), count(cItems))
	t := table{head: []string{"layer l", "LM loss Δ, layer l", "Block Influence", "COPA Δ, layer l", "LM loss Δ, layers l..l+1", "COPA Δ, layers l..l+1"}}
	for l := range lm1 {
		at := func(v []stat, f func(stat) string) string {
			if l < len(v) {
				return f(v[l])
			}
			return "n/a"
		}
		t.add(fmt.Sprint(l), at(lm1, lossCell), at(bi, lossCell), at(acc1, pointsCell), at(lm2, lossCell), at(acc2, pointsCell))
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
	fmt.Fprintf(w, "Two of five layers removed (169,152 parameters), then distilled for %s tokens (forward KL). Loss: held-out TinyStories.\n\n", countCell(x.num("kd-block-lm-loss", "tokens")))
	r := table{left: []int{1}, head: []string{"selection", "layers removed", "loss pruned", "COPA pruned", "Winogrande pruned", "loss distilled", "COPA distilled", "Winogrande distilled"}}
	teacherWino := x.num("eval-teacher", "task.winogrande.acc")
	r.add("teacher (5 layers)", "-", lossCell(x.num("eval-teacher", "dataset.tinystories.loss")), pctCell(x.num("eval-teacher", "task.copa.acc")), pctCell(teacherWino), "-", "-", "-")
	type outcome struct {
		label, layers            string
		loss, copa, pLoss, pCopa stat
	}
	var outs []outcome
	for _, v := range vs {
		p, d := "eval-"+v.name+"-pruned", "eval-"+v.name+"-distilled"
		o := outcome{v.label, x.choices("prune-"+v.name, "dropped_layers"),
			x.num(d, "dataset.tinystories.loss"), x.num(d, "task.copa.acc"), x.num(p, "dataset.tinystories.loss"), x.num(p, "task.copa.acc")}
		r.add(v.label, o.layers, lossCell(o.pLoss), pctCell(o.pCopa), pctCell(x.num(p, "task.winogrande.acc")),
			lossCell(o.loss), pctCell(o.copa), pctCell(x.num(d, "task.winogrande.acc")))
		outs = append(outs, o)
	}
	r.write(w)
	for _, o := range outs {
		if anyNaN(o.loss.mean, o.copa.mean, o.pLoss.mean, o.pCopa.mean, wItems, cItems, teacherWino.mean) {
			fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
			return nil
		}
	}

	// Group the variants by the layers they chose: identical choices give
	// identical models, so only distinct choices are compared.
	groups := map[string][]string{}
	var distinct []outcome
	for _, o := range outs {
		if _, ok := groups[o.layers]; !ok {
			distinct = append(distinct, o)
		}
		groups[o.layers] = append(groups[o.layers], o.label)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.** The five rankings chose %d distinct %s of layers:", len(distinct), plural(len(distinct), "set", "sets"))
	for i, o := range distinct {
		sep := ";"
		if i == len(distinct)-1 {
			sep = "."
		}
		fmt.Fprintf(&b, " %s by %s%s", o.layers, strings.Join(groups[o.layers], " and "), sep)
	}
	byLoss := slices.Clone(distinct)
	slices.SortStableFunc(byLoss, func(p, q outcome) int { return cmpFloat(p.loss.mean, q.loss.mean) })
	byCopa := slices.Clone(distinct)
	slices.SortStableFunc(byCopa, func(p, q outcome) int { return cmpFloat(q.copa.mean, p.copa.mean) })
	fmt.Fprintf(&b, " By held-out LM loss after distillation the lowest mean is %s's (%s, %s)", byLoss[0].layers, byLoss[0].label, lossCell(byLoss[0].loss))
	if len(byLoss) > 1 {
		fmt.Fprintf(&b, "; against the runner-up %s", compare(byLoss[0].layers, byLoss[0].loss, byLoss[1].layers, byLoss[1].loss, nats))
	}
	fmt.Fprintf(&b, ". By COPA after distillation the highest mean is %s's (%s, %s)", byCopa[0].layers, byCopa[0].label, pctCell(byCopa[0].copa))
	if len(byCopa) > 1 {
		fmt.Fprintf(&b, "; against the runner-up %s", compare(byCopa[0].layers, byCopa[0].copa, byCopa[1].layers, byCopa[1].copa, accuracy))
	}
	fmt.Fprintf(&b, ".")
	lo, hi, loP, hiP := outs[0].copa.mean, outs[0].copa.mean, outs[0].pCopa.mean, outs[0].pCopa.mean
	for _, o := range outs {
		lo, hi = math.Min(lo, o.copa.mean), math.Max(hi, o.copa.mean)
		loP, hiP = math.Min(loP, o.pCopa.mean), math.Max(hiP, o.pCopa.mean)
	}
	se, seW := math.Sqrt(0.25/cItems), math.Sqrt(0.25/wItems)
	fmt.Fprintf(&b, " The mean COPA scores spread over %.0f points right after pruning (%.1f standard errors) and %.0f points after distillation (%.1f).", 100*(hiP-loP), (hiP-loP)/se, 100*(hi-lo), (hi-lo)/se)
	chance := "at chance on Winogrande (%s, within two standard errors of 50%%)"
	if math.Abs(teacherWino.mean-0.5) > 2*seW {
		chance = "off chance on Winogrande (%s, more than two standard errors from 50%%)"
	}
	chance = fmt.Sprintf(chance, pctCell(teacherWino))
	fmt.Fprintf(&b, " The downstream scores are weak evidence at this scale: one standard error is %.1f points on COPA's %s items and %.1f on Winogrande's %s, the teacher is %s, and ranking and evaluating on the same COPA items favours the COPA-ranked variants.",
		100*se, count(cItems), 100*seW, count(wItems), chance)
	fmt.Fprintf(&b, " The paper's result (contiguous block 0.595 vs individual 0.50 Winogrande on Llama-3.1-8B, 32→16 layers) concerns a model with 32 layers to choose from; with 5 layers and 2 removed the candidate sets overlap heavily. What carries over is the method: `score` with `block = 2` measures removing a block as a whole, and `prune-depth` with `selection = \"block\"` removes the measured best block instead of summing single-layer scores.\n\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// cmpFloat orders numbers with missing ones (NaN) last.
func cmpFloat(a, b float64) int {
	switch {
	case math.IsNaN(a) && math.IsNaN(b):
		return 0
	case math.IsNaN(a):
		return 1
	case math.IsNaN(b):
		return -1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func signedPctPoints(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f pt", 100*v)
}

func writeDistillLoss(w io.Writer, x seeded) error {
	a, err := x.first().arch("prune-width")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Student: width-pruned to hidden %d, MLP %d (%s parameters). Val KL is the full-vocabulary forward KL from the teacher on the held-out split, whatever the training loss. One learning rate (3e-3) for every arm.\n\n",
		a.hidden, a.mlp, count(float64(a.params)))
	ood := distillArms(w, x, "", "Out of domain: the corrected teacher on tiny-shakespeare")
	if ood == nil {
		return nil
	}
	in := distillArms(w, x, "ts-", "In domain: the original teacher on TinyStories")
	if in == nil {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Reading.**")
	for _, st := range []struct {
		name string
		r    []distillResult
	}{{"Out of domain", ood}, {"In domain", in}} {
		byLoss := slices.Clone(st.r)
		slices.SortStableFunc(byLoss, func(p, q distillResult) int { return cmpFloat(p.loss.mean, q.loss.mean) })
		fmt.Fprintf(&b, " %s, ranked by mean held-out loss:", st.name)
		for i, r := range byLoss {
			sep := ";"
			if i == len(byLoss)-1 {
				sep = "."
			}
			fmt.Fprintf(&b, " %s %s%s", r.label, lossCell(r.loss), sep)
		}
	}
	kl, ce, mix := in[0], in[1], in[2]
	oKL, oCE, oMix := ood[0], ood[1], ood[2]
	jIn, jOut := judge(kl.loss, ce.loss, nats), judge(oKL.loss, oCE.loss, nats)
	fmt.Fprintf(&b, " In domain %s; out of domain %s.", compare("forward KL", kl.loss, "cross-entropy on the data", ce.loss, nats), compare("forward KL", oKL.loss, "cross-entropy on the data", oCE.loss, nats))
	switch {
	case jIn > 0 && jOut > 0:
		fmt.Fprintf(&b, " Forward KL wins in both settings, in line with the Minitron choice of logit-only KL.")
	case jIn < 0 && jOut < 0:
		fmt.Fprintf(&b, " On the data's own loss pure forward KL loses in both settings, contrary to the Minitron choice of logit-only KL: the KL student is pulled towards its teacher rather than the data (in domain, val KL %s against %s for the cross-entropy student), and out of domain %s. Whether KL catches up with longer training (the papers distil for billions of tokens) was not measured.",
			lossCell(kl.kl), lossCell(ce.kl), compare("the corrected teacher", x.num("kl", "teacher_val_loss"), "the cross-entropy student", oCE.loss, nats))
	default:
		fmt.Fprintf(&b, " Forward KL does not beat cross-entropy beyond the spread in both settings, so these runs do not confirm the Minitron choice of logit-only KL.")
	}
	best, bestName := kl.loss, "forward KL"
	if ce.loss.mean < kl.loss.mean {
		best, bestName = ce.loss, "cross-entropy"
	}
	oBest, oBestName := oKL.loss, "forward KL"
	if oCE.loss.mean < oKL.loss.mean {
		oBest, oBestName = oCE.loss, "cross-entropy"
	}
	fmt.Fprintf(&b, " Against the better pure objective, in domain %s; out of domain %s.", compare("the equal mix", mix.loss, bestName, best, nats), compare("the equal mix", oMix.loss, oBestName, oBest, nats))
	if judge(mix.loss, best, nats) > 0 {
		fmt.Fprintf(&b, " In domain the teacher's soft targets and the data's hard ones help together.")
	}
	for _, k := range []struct {
		label string
		in    distillResult
		ood   distillResult
	}{{"top-64", in[3], ood[3]}, {"top-8", in[4], ood[4]}} {
		fmt.Fprintf(&b, " Keeping only the teacher's %s of 512 logits: in domain %s; out of domain %s.", k.label,
			compare(k.label, k.in.loss, "the full softmax", kl.loss, nats), compare(k.label, k.ood.loss, "the full softmax", oKL.loss, nats))
	}
	if judge(in[4].loss, kl.loss, nats) < 0 || judge(ood[4].loss, oKL.loss, nats) < 0 {
		fmt.Fprintf(&b, " Where truncation costs, the student never sees the tail of the teacher's distribution.")
	}
	fmt.Fprintf(&b, " Each arm ran %d %s at one learning rate.\n\n", len(x.runs), plural(len(x.runs), "seed", "seeds"))
	_, err = io.WriteString(w, b.String())
	return err
}

type distillResult struct {
	label    string
	loss, kl stat
}

// distillArms writes the table of one setting's five arms (pass names
// prefixed by prefix) and returns their results, or nil when a number is
// missing.
func distillArms(w io.Writer, x seeded, prefix, title string) []distillResult {
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
		title, countCell(x.num(first, "tokens")), lossCell(x.num(first, "val_loss_before")), lossCell(x.num(first, "teacher_val_loss")))
	t := table{left: []int{2}, head: []string{"training loss", "ce_weight", "teacher logits", "val loss (CE)", "val ppl", "val KL to teacher"}}
	var rs []distillResult
	missing := false
	for _, r := range arms {
		l, kl := x.num(prefix+r.pass, "val_loss"), x.num(prefix+r.pass, "val_kl")
		t.add(r.label, r.ce, r.topk, lossCell(l), pplCell(x.exp(prefix+r.pass, "val_loss")), lossCell(kl))
		rs = append(rs, distillResult{r.label, l, kl})
		missing = missing || anyNaN(l.mean, kl.mean)
	}
	t.write(w)
	if missing {
		fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
		return nil
	}
	return rs
}

// addRun adds one seed's run of experiment name to the runs table and
// returns its compute time.
func (t *table) addRun(name string, seed int, e *experiment) float64 {
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
	t.add("`"+name+"`", strconv.Itoa(seed), mach, threads, load, dur(s), state)
	return s
}

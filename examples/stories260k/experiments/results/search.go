package main

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/whittle-ml/whittle/core/pipeline"
	"github.com/whittle-ml/whittle/passes/search"
)

// Finding 6: at each budget three students, chosen by the search, by
// hand and at random among the search's candidates, are distilled alike.
// Pass names: "<arm>-<budget>" chooses the student (search, prune-width),
// "kd-<arm>-<budget>" distills it.

// searchBudgets are 06-search.hcl's budgets: pass-name suffix and label.
var searchBudgets = []struct{ key, label string }{{"160k", "≈160K"}, {"200k", "≈200K"}}

// searchArms are the ways a student is chosen: pass-name prefix and label.
var searchArms = []struct{ key, label string }{
	{"search", "searched"},
	{"hand", "hand-picked"},
	{"random", "random pick"},
}

// String is an architecture as the tables print it.
func (a arch) String() string {
	return fmt.Sprintf("hidden %d, MLP %d, %d/%d heads, %d layers", a.hidden, a.mlp, a.heads, a.kvHeads, a.layers)
}

// searchResults reads a search pass's candidates.json, nil when absent.
func (e *experiment) searchResults(pass string) *search.Results {
	p := e.pass(pass)
	if p == nil {
		return nil
	}
	r, err := search.ReadResults(filepath.Join(pipeline.PassDir(e.dir, p.Index, p.Name), search.ResultsFile))
	if err != nil {
		return nil
	}
	return r
}

// searchRank is where an architecture came in a search's own scoring
// (1 = the winner) among the scored candidates, or 0 when the search did
// not score it.
func searchRank(r *search.Results, a arch) (rank, scored int) {
	if r == nil {
		return 0, 0
	}
	var rows []search.Row
	for _, row := range r.Rows {
		if row.Scored && row.Score != nil {
			rows = append(rows, row)
		}
	}
	slices.SortStableFunc(rows, func(p, q search.Row) int {
		if r.LowerIsBetter {
			return cmpFloat(p.Score.Value, q.Score.Value)
		}
		return cmpFloat(q.Score.Value, p.Score.Value)
	})
	for i, row := range rows {
		if row.Hidden == a.hidden && row.MLP == a.mlp && row.Heads == a.heads && row.KVHeads == a.kvHeads && row.Layers == a.layers {
			return i + 1, len(rows)
		}
	}
	return 0, len(rows)
}

// perSeed renders one string per seed: the string alone when the seeds
// agree, else each with its seeds ("A (seeds 1, 2), B (seed 3)").
func (s seeded) perSeed(f func(i int, e *experiment) string) string {
	var order []string
	by := map[string][]string{}
	for i, e := range s.runs {
		v := f(i, e)
		if _, ok := by[v]; !ok {
			order = append(order, v)
		}
		by[v] = append(by[v], fmt.Sprint(s.seeds[i]))
	}
	if len(order) == 1 {
		return order[0]
	}
	parts := make([]string, len(order))
	for i, v := range order {
		parts[i] = fmt.Sprintf("%s (%s %s)", v, plural(len(by[v]), "seed", "seeds"), strings.Join(by[v], ", "))
	}
	return strings.Join(parts, "; ")
}

func durCell(s stat) string { return s.render(dur, dur) }

// timesCell is a ratio, without a spread the seeds agree on.
func timesCell(s stat) string {
	if s.sd == 0 {
		return times(s.mean)
	}
	return s.render(times, times)
}

// searchOutcome is one arm at one budget over the seeds.
type searchOutcome struct {
	label  string
	arches []arch // per seed
	loss   stat   // after distillation
	delta  stat   // paired: this arm's loss − the hand-picked's, per seed
}

func writeSearch(w io.Writer, x seeded) error {
	first := x.first()
	retrain := math.NaN()
	if sr := first.searchResults("search-" + searchBudgets[0].key); sr != nil {
		retrain = float64(sr.RetrainTokens)
	}
	kd0 := "kd-search-" + searchBudgets[0].key
	fmt.Fprintf(w, "Teacher: the original stories260K in its own domain (held-out TinyStories; teacher loss %s). "+
		"Space: hidden and MLP each × 1, 0.9375, …, 0.5 (multiples of 4), 4 or 2 KV heads, 5, 4 or 3 layers (dropped by LM-loss importance); "+
		"a candidate fits within 3%% below the budget. The *searched* student is the best of all fitting candidates after each was distilled for %s tokens "+
		"and scored by LM loss on 64 held-out sequences (64 of the sequences the final loss is also measured on, so the choice is not wholly independent of the evaluation); the *hand-picked* one is the demo's width student (hidden and MLP cut by one ratio, every head kept), "+
		"whose parameter count is the budget; the *random pick* is one of the same candidates drawn from the seed (`pick = \"random\"`). "+
		"Each is then distilled for %s tokens (forward KL). Search rank: the student's place in the search's own scoring of the candidates (per seed). "+
		"Δ: the student's loss minus the hand-picked student's, seed by seed.\n\n",
		lossCell(x.num(kd0, "teacher_val_loss")), count(retrain), countCell(x.num(kd0, "tokens")))

	t := table{left: []int{1, 2}, head: []string{"budget", "student", "architecture", "parameters", "FLOPs/token", "search rank", "time to choose", "loss pruned", "loss distilled", "Δ vs hand-picked"}}
	results := map[string][]searchOutcome{}
	for _, b := range searchBudgets {
		var outs []searchOutcome
		for _, a := range searchArms {
			choose, kd := a.key+"-"+b.key, "kd-"+a.key+"-"+b.key
			o := searchOutcome{label: a.label, loss: x.num(kd, "val_loss"),
				delta: x.of(func(e *experiment) float64 {
					return e.num(kd, "val_loss") - e.num("kd-hand-"+b.key, "val_loss")
				})}
			var params, flops []float64
			for _, e := range x.runs {
				ar, err := e.arch(choose)
				if err != nil {
					return err
				}
				o.arches = append(o.arches, ar)
				params, flops = append(params, float64(ar.params)), append(flops, float64(ar.flops))
			}
			archCell := x.perSeed(func(i int, _ *experiment) string { return o.arches[i].String() })
			rankCell := x.perSeed(func(i int, e *experiment) string {
				r, n := searchRank(e.searchResults("search-"+b.key), o.arches[i])
				if r == 0 {
					return "n/a"
				}
				return fmt.Sprintf("%d of %d", r, n)
			})
			secs := x.of(func(e *experiment) float64 {
				if p := e.pass(choose); p != nil {
					return p.Seconds
				}
				return math.NaN()
			})
			delta := lossCell(o.delta)
			if a.key == "hand" {
				delta = "-"
			}
			t.add(b.label, a.label, archCell, countCell(meanSD(params)), countCell(meanSD(flops)), rankCell, durCell(secs),
				lossCell(x.num(kd, "val_loss_before")), lossCell(o.loss), delta)
			outs = append(outs, o)
		}
		results[b.key] = outs
	}
	t.write(w)

	for _, b := range searchBudgets {
		for _, o := range results[b.key] {
			if anyNaN(o.loss.mean, o.delta.mean) {
				fmt.Fprintf(w, "*Incomplete metrics; no reading.*\n\n")
				return nil
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Reading.**")
	wins, lowerRuns, differentRuns := 0, 0, 0
	for _, b := range searchBudgets {
		outs := results[b.key]
		s, h, r := outs[0], outs[1], outs[2]
		budget := count(float64(h.arches[0].params))
		fmt.Fprintf(&sb, " At %s (%s parameters) %s, and %s.", b.label, budget,
			compare("the searched student", s.loss, "the hand-picked one", h.loss, nats),
			compare("the searched student", s.loss, "the random pick", r.loss, nats))
		// The seed draws the data split, which moves every arm's loss
		// together: the per-seed differences are the sharper measure.
		vsHand, vsRandom := x.paired("kd-search-"+b.key, "kd-hand-"+b.key), x.paired("kd-search-"+b.key, "kd-random-"+b.key)
		why := ""
		if b == searchBudgets[0] {
			why = " (each seed draws its own data split, which moves all three students' losses together)"
		}
		fmt.Fprintf(&sb, " Paired by seed%s, the searched student's loss minus the hand-picked one's is %s, minus the random pick's %s.",
			why, vsHand.words(), vsRandom.words())
		for _, d := range []pairedDiff{vsHand, vsRandom} {
			lowerRuns += d.lower
			differentRuns += d.n - d.equal
		}
		if shallower(s.arches, h.arches) {
			fmt.Fprintf(&sb, " The searched students are shallower (layers kept: %s; the hand-picked one keeps all %d and narrows them) and need %s of its FLOPs per token.",
				inSeeds(x, func(i int) string { return fmt.Sprint(s.arches[i].layers) }), h.arches[0].layers,
				timesCell(x.of(func(e *experiment) float64 {
					i := slices.Index(x.runs, e)
					return float64(s.arches[i].flops) / float64(h.arches[i].flops)
				})))
		}
		if same := sameSeeds(x, s.arches, h.arches); same != "" {
			fmt.Fprintf(&sb, " The search chose the hand-picked shape itself in %s.", same)
		}
		if same := sameSeeds(x, r.arches, h.arches); same != "" {
			fmt.Fprintf(&sb, " The random pick drew the hand-picked shape in %s.", same)
		}
		if same := sameSeeds(x, r.arches, s.arches); same != "" {
			fmt.Fprintf(&sb, " The random pick drew the searched shape in %s.", same)
		}
		if judge(s.loss, h.loss, nats) > 0 && judge(s.loss, r.loss, nats) > 0 {
			wins++
		}
	}
	if agree, pairs := rankAgreement(x, results); pairs > 0 {
		fmt.Fprintf(&sb, " Does the search's own ranking (after its short retraining) predict the ranking after the full distillation? Of the %d pairs of different students (per seed and budget), %d end in the order the search ranked them.", pairs, agree)
	}
	switch wins {
	case len(searchBudgets):
		fmt.Fprintf(&sb, " At both budgets the search's gain over both baselines is larger than the seed-to-seed spread.")
	case 0:
		fmt.Fprintf(&sb, " At neither budget is the search's gain over both baselines larger than the seed-to-seed spread.")
	default:
		fmt.Fprintf(&sb, " The search's gain over both baselines exceeds the seed-to-seed spread at one budget only.")
	}
	fmt.Fprintf(&sb, " Paired by seed, the searched student ended below the baseline in %d of the %d (seed, budget, baseline) comparisons that are not ties (a tie: the same student, hence the same loss).", lowerRuns, differentRuns)
	fmt.Fprintf(&sb, " Each arm ran %d %s; the search costs %s tokens of retraining per candidate on top of the common distillation.\n\n",
		len(x.runs), plural(len(x.runs), "seed", "seeds"), count(retrain))
	_, err := io.WriteString(w, sb.String())
	return err
}

// signedLoss renders a paired difference: "−0.0123 ± 0.0040 nats".
func signedLoss(s stat) string {
	return s.render(func(v float64) string { return fmt.Sprintf("%+.4f", v) }, f4) + " nats"
}

// sameSeeds lists the seeds in which two arms chose the same
// architecture: "seeds 1 and 3", "every seed", or "".
func sameSeeds(x seeded, a, b []arch) string {
	var seeds []string
	for i := range a {
		if i < len(b) && a[i] == b[i] {
			seeds = append(seeds, fmt.Sprint(x.seeds[i]))
		}
	}
	switch {
	case len(seeds) == 0:
		return ""
	case len(seeds) == len(x.seeds):
		return "every seed"
	case len(seeds) == 1:
		return "seed " + seeds[0]
	}
	return "seeds " + strings.Join(seeds[:len(seeds)-1], ", ") + " and " + seeds[len(seeds)-1]
}

// rankAgreement counts, over seeds and budgets, the pairs of arms with
// different students whose losses after distillation are in the order of
// the search's own scores.
func rankAgreement(x seeded, results map[string][]searchOutcome) (agree, pairs int) {
	for _, b := range searchBudgets {
		outs := results[b.key]
		for i, e := range x.runs {
			sr := e.searchResults("search-" + b.key)
			for p := range outs {
				for q := p + 1; q < len(outs); q++ {
					if outs[p].arches[i] == outs[q].arches[i] {
						continue
					}
					rp, _ := searchRank(sr, outs[p].arches[i])
					rq, _ := searchRank(sr, outs[q].arches[i])
					lp := e.num("kd-"+searchArms[p].key+"-"+b.key, "val_loss")
					lq := e.num("kd-"+searchArms[q].key+"-"+b.key, "val_loss")
					if rp == 0 || rq == 0 || anyNaN(lp, lq) {
						continue
					}
					pairs++
					if (rp < rq) == (lp < lq) {
						agree++
					}
				}
			}
		}
	}
	return agree, pairs
}

// shallower reports whether every seed's a has fewer layers than its b.
func shallower(a, b []arch) bool {
	for i := range a {
		if i >= len(b) || a[i].layers >= b[i].layers {
			return false
		}
	}
	return len(a) > 0
}

// pairedDiff is one arm's loss minus another's, seed by seed.
type pairedDiff struct {
	d            stat
	lower, equal int // seeds in which the first is lower, the same
	n            int
}

func (s seeded) paired(a, b string) pairedDiff {
	p := pairedDiff{n: len(s.runs)}
	p.d = s.of(func(e *experiment) float64 {
		d := e.num(a, "val_loss") - e.num(b, "val_loss")
		switch {
		case d < 0:
			p.lower++
		case d == 0:
			p.equal++
		}
		return d
	})
	return p
}

// words renders a paired difference: "-0.0330 ± 0.0025 nats (lower in
// 3 of 3 seeds; the same student in 1)".
func (p pairedDiff) words() string {
	out := signedLoss(p.d) + fmt.Sprintf(" (lower in %d of %d %s", p.lower, p.n, plural(p.n, "seed", "seeds"))
	if p.equal > 0 {
		out += fmt.Sprintf("; equal in %d: the same student", p.equal)
	}
	return out + ")"
}

// inSeeds renders one value per seed: "3" when the seeds agree, else
// "3 in seeds 1 and 2, 4 in seed 3".
func inSeeds(x seeded, f func(i int) string) string {
	var order []string
	by := map[string][]string{}
	for i := range x.runs {
		v := f(i)
		if _, ok := by[v]; !ok {
			order = append(order, v)
		}
		by[v] = append(by[v], fmt.Sprint(x.seeds[i]))
	}
	if len(order) == 1 {
		return order[0]
	}
	parts := make([]string, len(order))
	for i, v := range order {
		seeds := by[v]
		list := seeds[0]
		if n := len(seeds); n > 1 {
			list = strings.Join(seeds[:n-1], ", ") + " and " + seeds[n-1]
		}
		parts[i] = fmt.Sprintf("%s in %s %s", v, plural(len(seeds), "seed", "seeds"), list)
	}
	return strings.Join(parts, ", ")
}

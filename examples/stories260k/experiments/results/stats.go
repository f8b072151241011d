package main

import (
	"fmt"
	"math"
	"strings"
)

// stat is one number measured once per seed: its mean and sample
// standard deviation (n−1 in the denominator) over n seeds.
type stat struct {
	mean, sd float64
	n        int
}

// meanSD summarizes one number's values over the seeds. A missing value
// (NaN) makes the mean NaN, rendered "n/a"; with fewer than two values
// the spread is unknown (NaN).
func meanSD(xs []float64) stat {
	s := stat{mean: math.NaN(), sd: math.NaN(), n: len(xs)}
	if len(xs) == 0 {
		return s
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	s.mean = sum / float64(len(xs))
	if len(xs) < 2 {
		return s
	}
	var ss float64
	for _, x := range xs {
		ss += (x - s.mean) * (x - s.mean)
	}
	s.sd = math.Sqrt(ss / float64(len(xs)-1))
	return s
}

// render renders "mean ± sd" with mean and sd formatting each part, the
// mean alone when the spread is unknown, "n/a" when the mean is.
func (s stat) render(mean, sd func(float64) string) string {
	switch {
	case math.IsNaN(s.mean):
		return "n/a"
	case math.IsNaN(s.sd):
		return mean(s.mean)
	}
	return mean(s.mean) + " ± " + sd(s.sd)
}

// The table cells: losses to 4 decimals, perplexities to 2, fractions as
// percentages or signed percentage points, counts with separators (a
// count the seeds agree on, as a token budget, without its zero spread).
func lossCell(s stat) string   { return s.render(f4, f4) }
func pplCell(s stat) string    { return s.render(f2, f2) }
func pctCell(s stat) string    { return s.render(pct, pct) }
func changeCell(s stat) string { return s.render(signedPct, pct) }
func pointsCell(s stat) string {
	return s.render(signedPctPoints, func(v float64) string { return fmt.Sprintf("%.1f pt", 100*v) })
}
func countCell(s stat) string {
	if s.sd == 0 {
		return count(s.mean)
	}
	return s.render(count, count)
}

// seeded is one experiment's complete runs, one per seed.
type seeded struct {
	runs  []*experiment
	seeds []int // runs[i] ran with seeds[i]
}

// num is a metric of a pass over the seeds (see experiment.num).
func (s seeded) num(pass, key string) stat {
	xs := make([]float64, len(s.runs))
	for i, e := range s.runs {
		xs[i] = e.num(pass, key)
	}
	return meanSD(xs)
}

// of summarizes any number computed from one seed's run.
func (s seeded) of(f func(e *experiment) float64) stat {
	xs := make([]float64, len(s.runs))
	for i, e := range s.runs {
		xs[i] = f(e)
	}
	return meanSD(xs)
}

// exp is e raised to a metric of a pass, per seed (a perplexity from a
// loss): the mean of the exponentials, not the exponential of the mean.
func (s seeded) exp(pass, key string) stat {
	return s.of(func(e *experiment) float64 { return math.Exp(e.num(pass, key)) })
}

// first is the first complete seed's run, for what the seeds share (the
// architecture a recipe fixes).
func (s seeded) first() *experiment { return s.runs[0] }

// floats summarizes a list metric element by element over the seeds; the
// list is as long as the first seed's, and an element a seed lacks is
// missing (n/a).
func (s seeded) floats(pass, key string) []stat {
	lists := make([][]float64, len(s.runs))
	for i, e := range s.runs {
		lists[i] = e.floats(pass, key)
	}
	if len(lists) == 0 {
		return nil
	}
	out := make([]stat, len(lists[0]))
	for j := range out {
		xs := make([]float64, len(lists))
		for i, l := range lists {
			xs[i] = math.NaN()
			if j < len(l) {
				xs[i] = l[j]
			}
		}
		out[j] = meanSD(xs)
	}
	return out
}

// curvePoint is one evaluation during training over the seeds.
type curvePoint struct {
	tokens float64
	loss   stat
}

// curve averages a pass's validation curves over the seeds, evaluation
// by evaluation; a seed whose i-th evaluation is missing or at another
// token count makes that point missing (n/a).
func (s seeded) curve(pass string) []curvePoint {
	curves := make([][]point, len(s.runs))
	for i, e := range s.runs {
		curves[i] = e.curve(pass)
	}
	if len(curves) == 0 {
		return nil
	}
	out := make([]curvePoint, len(curves[0]))
	for j, p := range curves[0] {
		xs := make([]float64, len(curves))
		for i, c := range curves {
			xs[i] = math.NaN()
			if j < len(c) && c[j].tokens == p.tokens {
				xs[i] = c[j].valLoss
			}
		}
		out[j] = curvePoint{p.tokens, meanSD(xs)}
	}
	return out
}

// means is a curve of the mean losses, for tokensToReach.
func means(c []curvePoint) []point {
	out := make([]point, len(c))
	for i, p := range c {
		out[i] = point{p.tokens, p.loss.mean}
	}
	return out
}

// choices renders the layers a pass dropped: "{2, 3}" when every seed
// chose them, else each choice with its seeds, "{2, 3} (seeds 1, 2),
// {2, 4} (seed 3)".
func (s seeded) choices(pass, key string) string {
	var order []string
	by := map[string][]string{}
	for i, e := range s.runs {
		l := layerList(e.ints(pass, key))
		if _, ok := by[l]; !ok {
			order = append(order, l)
		}
		by[l] = append(by[l], fmt.Sprint(s.seeds[i]))
	}
	if len(order) == 1 {
		return order[0]
	}
	parts := make([]string, len(order))
	for i, l := range order {
		word := "seeds"
		if len(by[l]) == 1 {
			word = "seed"
		}
		parts[i] = fmt.Sprintf("%s (%s %s)", l, word, strings.Join(by[l], ", "))
	}
	return strings.Join(parts, ", ")
}

// seedList is "1, 2, 3".
func (s seeded) seedList() string {
	out := make([]string, len(s.seeds))
	for i, n := range s.seeds {
		out[i] = fmt.Sprint(n)
	}
	return strings.Join(out, ", ")
}

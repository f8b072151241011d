package main

import (
	"fmt"
	"math"
)

// The readings compare numbers measured over several seeds and call one
// better only when the means differ by more than the seed-to-seed spread:
// |mean_a − mean_b| > sd_a + sd_b. Everything a reading claims about a
// difference goes through judge or compare, so no claim outruns the data.

// resolved reports whether two numbers differ by more than their spread.
// Without a spread (fewer than two seeds) or with a number missing no
// difference is resolved.
func resolved(a, b stat) bool {
	if a.n < 2 || b.n < 2 || anyNaN(a.mean, b.mean, a.sd, b.sd) {
		return false
	}
	return math.Abs(a.mean-b.mean) > a.sd+b.sd
}

// quantity says how to compare and word two numbers of one kind.
type quantity struct {
	higherBetter bool
	verb         string  // what the better does to the other: "beats"
	scale        float64 // applied to a difference before printing (100 for percentage points)
	prec         int
	unit         string // after a printed difference: " nats"
}

var (
	// nats compares losses: lower is better.
	nats = quantity{verb: "beats", scale: 1, prec: 4, unit: " nats"}
	// speedup compares throughputs relative to a baseline's.
	speedup = quantity{higherBetter: true, verb: "is faster than", scale: 1, prec: 2, unit: "×"}
	// accuracy compares task accuracies (fractions) in percentage points.
	accuracy = quantity{higherBetter: true, verb: "beats", scale: 100, prec: 1, unit: " points"}
)

// judge is +1 when a is better than b by more than the spread, −1 when b
// is better than a by more than the spread, and 0 otherwise.
func judge(a, b stat, q quantity) int {
	if !resolved(a, b) {
		return 0
	}
	if (a.mean > b.mean) == q.higherBetter {
		return 1
	}
	return -1
}

// compare words a reading of a against b:
//
//	A beats B by 0.5606 nats (spread ±0.0123)
//	A and B are within the seed-to-seed spread (0.0081 nats apart, spread ±0.0150)
//	A and B are 0.0081 nats apart, unresolved with a single seed
//	A and B cannot be compared (a number is missing)
func compare(aName string, a stat, bName string, b stat, q quantity) string {
	if anyNaN(a.mean, b.mean) {
		return fmt.Sprintf("%s and %s cannot be compared (a number is missing)", aName, bName)
	}
	d := q.scale * math.Abs(a.mean-b.mean)
	if a.n < 2 || b.n < 2 || anyNaN(a.sd, b.sd) {
		return fmt.Sprintf("%s and %s are %.*f%s apart, unresolved with a single seed", aName, bName, q.prec, d, q.unit)
	}
	spread := q.scale * (a.sd + b.sd)
	switch judge(a, b, q) {
	case 1:
		return fmt.Sprintf("%s %s %s by %.*f%s (spread ±%.*f)", aName, q.verb, bName, q.prec, d, q.unit, q.prec, spread)
	case -1:
		return fmt.Sprintf("%s %s %s by %.*f%s (spread ±%.*f)", bName, q.verb, aName, q.prec, d, q.unit, q.prec, spread)
	}
	return fmt.Sprintf("%s and %s are within the seed-to-seed spread (%.*f%s apart, spread ±%.*f)", aName, bName, q.prec, d, q.unit, q.prec, spread)
}

// paperAgrees words whether a judged difference backs a paper's claim
// that a beats b (+1 from judge): "as the paper found", "contrary to the
// paper", or "so the paper's claim is not resolved here".
func paperAgrees(j int) string {
	switch j {
	case 1:
		return "as the paper found"
	case -1:
		return "contrary to the paper"
	}
	return "so the paper's claim is not resolved here"
}

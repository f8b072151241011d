package tokenizer

import "strings"

// Encode tokenizes text exactly as llama2.c's run.c encode does:
//
//  1. BOS when bos is set;
//  2. for non-empty text, the dummy prefix: the piece " ";
//  3. one token per character, where a character is a byte followed by up
//     to three UTF-8 continuation bytes (a whole code point for valid
//     UTF-8; run.c's grouping is kept for invalid input), or one
//     byte-fallback token "<0xHH>" per byte when the character is no piece;
//  4. repeatedly merge the adjacent pair whose concatenation is a piece of
//     the highest score, the leftmost on ties, until no pair merges (the
//     BOS token takes part, as in run.c);
//  5. EOS when eos is set.
//
// run.c rescans every pair after each merge (quadratic); this
// implementation keeps the candidate pairs in a priority queue ordered by
// (score, position), which picks the same pair at every step, so the
// output is identical while whole files encode in O(n log n).
//
// Differences from run.c only where run.c misbehaves: a NUL byte is
// encoded (C strings end there), and a vocabulary without the piece " " or
// without byte pieces falls back to byte tokens or UNK instead of invalid
// ids. BOS and EOS are the tokenizer's ids (run.c hard-codes 1 and 2) and
// are left out when it has none (id -1); byte fallback uses the "<0xHH>"
// pieces wherever they are (run.c assumes byte+3, Llama's layout).
func (t *Tokenizer) Encode(text string, bos, eos bool) []int {
	if len(t.Pieces) == 0 {
		return []int{}
	}
	if t.ByteLevel != nil {
		return t.ByteLevel.encode(t, text, bos, eos)
	}
	ix := t.index()
	if t.FoldSpaces {
		text = foldSpaces(text)
	}
	syms := make([]int32, 0, len(text)+3)
	if bos && t.BOS >= 0 && t.BOS < len(t.Pieces) {
		syms = append(syms, int32(t.BOS))
	}
	if text != "" && !t.NoDummyPrefix {
		syms = append(syms, ix.dummy...)
	}
	for i := 0; i < len(text); {
		j := i + 1
		for j < len(text) && j-i < 4 && text[j]&0xC0 == 0x80 {
			j++
		}
		if id, ok := ix.byText[text[i:j]]; ok {
			syms = append(syms, id)
		} else {
			for k := i; k < j; k++ {
				syms = append(syms, ix.byteID[text[k]])
			}
		}
		i = j
	}
	syms = ix.merge(t, syms)
	out := make([]int, len(syms), len(syms)+1)
	for i, s := range syms {
		out[i] = int(s)
	}
	if eos && t.EOS >= 0 && t.EOS < len(t.Pieces) {
		out = append(out, t.EOS)
	}
	return out
}

// foldSpaces is SentencePiece's remove_extra_whitespaces for the identity
// normalizer: spaces (U+0020 only) at either end are dropped and inner runs
// become one space.
func foldSpaces(s string) string {
	s = strings.Trim(s, " ")
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	prevSpace := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' && prevSpace {
			continue
		}
		prevSpace = c == ' '
		b.WriteByte(c)
	}
	return b.String()
}

// candidate is a mergeable adjacent pair (left, right) as it was when
// queued; the versions detect pairs that a later merge invalidated.
type candidate struct {
	score       float32
	left, right int32
	verL, verR  uint32
	id          int32
}

// before orders the queue: higher score first, then the leftmost pair,
// which is what run.c's strict '>' scan from the left picks. Positions are
// a node's index in the initial sequence; merged nodes keep the left one's,
// so the order of positions is the order in the current sequence.
func (a *candidate) before(b *candidate) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

type pairQueue []candidate

func (q *pairQueue) push(c candidate) {
	*q = append(*q, c)
	h := *q
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].before(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *pairQueue) pop() candidate {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	h.down(0)
	*q = h
	return top
}

func (q pairQueue) down(i int) {
	n := len(q)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && q[r].before(&q[l]) {
			m = r
		}
		if !q[m].before(&q[i]) {
			return
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
}

// merge applies BPE merges to syms in place of run.c's quadratic loop.
func (ix *index) merge(t *Tokenizer, syms []int32) []int32 {
	n := len(syms)
	if n < 2 {
		return syms
	}
	next := make([]int32, n)
	prev := make([]int32, n)
	ver := make([]uint32, n)
	alive := make([]bool, n)
	for i := range syms {
		next[i] = int32(i + 1)
		prev[i] = int32(i - 1)
		alive[i] = true
	}
	next[n-1] = -1
	q := make(pairQueue, 0, n)
	// try looks the pair up as run.c does, by the concatenation of the
	// two texts; the merged piece is the lowest id of that text, and must
	// score above run.c's floor. Looking pairs up lazily keeps building
	// the index linear in the vocabulary, whatever its pieces.
	var buf []byte
	try := func(l, r int32) (candidate, bool) {
		buf = append(append(buf[:0], ix.text[syms[l]]...), ix.text[syms[r]]...)
		id, ok := ix.byText[string(buf)]
		if !ok {
			return candidate{}, false
		}
		s := t.score(id)
		if !(s > minMergeScore) {
			return candidate{}, false
		}
		return candidate{score: s, left: l, right: r, verL: ver[l], verR: ver[r], id: id}, true
	}
	for i := 0; i+1 < n; i++ {
		if c, ok := try(int32(i), int32(i+1)); ok {
			q = append(q, c)
		}
	}
	for i := len(q)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
	for len(q) > 0 {
		c := q.pop()
		l, r := c.left, c.right
		if !alive[l] || !alive[r] || next[l] != r || ver[l] != c.verL || ver[r] != c.verR {
			continue // stale: a neighbour merged since this pair was queued
		}
		syms[l] = c.id
		ver[l]++
		alive[r] = false
		next[l] = next[r]
		if next[l] >= 0 {
			prev[next[l]] = l
		}
		if p := prev[l]; p >= 0 {
			if c, ok := try(p, l); ok {
				q.push(c)
			}
		}
		if nx := next[l]; nx >= 0 {
			if c, ok := try(l, nx); ok {
				q.push(c)
			}
		}
	}
	out := syms[:0]
	for i := int32(0); i >= 0; i = next[i] {
		out = append(out, syms[i])
	}
	return out
}

// Package batch holds the backend-independent half of a backend's data
// handling: opening a Sequences dataset and cutting it into batches, and
// laying out, batching and aggregating multiple-choice and last-word
// evaluations. Backends supply only the forward pass, so that every
// backend reads, masks, pads and scores the same way.
package batch

import (
	"errors"
	"fmt"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
)

// Sequences is an opened backend.Sequences: token rows mapped from disk,
// read a batch at a time. Its fields are read-only.
type Sequences struct {
	Path, MaskPath string
	// Rows is the number of rows in use (after Limit), Cols the tokens per
	// row.
	Rows, Cols int

	vocab     int
	tok, mask *npy.File
}

// Open maps a token dataset and its mask and checks their shapes against
// the model's vocabulary size and context length (maxSeq ≤ 0: no limit).
func Open(s backend.Sequences, vocab, maxSeq int) (*Sequences, error) {
	if s.Path == "" {
		return nil, errors.New("sequences: no path")
	}
	if s.Limit < 0 {
		return nil, fmt.Errorf("%s: negative limit %d", s.Path, s.Limit)
	}
	tok, err := npy.Open(s.Path)
	if err != nil {
		return nil, err
	}
	d := &Sequences{Path: s.Path, MaskPath: s.MaskPath, tok: tok, vocab: vocab}
	if len(tok.Shape) != 2 {
		d.Close()
		return nil, fmt.Errorf("%s: token array has shape %v, want [sequences, length]", s.Path, tok.Shape)
	}
	d.Rows, d.Cols = tok.Shape[0], tok.Shape[1]
	if s.Limit > 0 {
		d.Rows = min(d.Rows, s.Limit)
	}
	if d.Rows == 0 || d.Cols == 0 {
		d.Close()
		return nil, fmt.Errorf("%s: no tokens (shape %v, limit %d)", s.Path, tok.Shape, s.Limit)
	}
	if maxSeq > 0 && d.Cols > maxSeq {
		d.Close()
		return nil, fmt.Errorf("%s: sequences of %d tokens exceed the model's %d positions", s.Path, d.Cols, maxSeq)
	}
	if s.MaskPath != "" {
		if d.mask, err = npy.Open(s.MaskPath); err != nil {
			d.Close()
			return nil, err
		}
		if len(d.mask.Shape) != 2 || d.mask.Shape[0] != tok.Shape[0] || d.mask.Shape[1] != d.Cols {
			d.Close()
			return nil, fmt.Errorf("%s: mask shape %v differs from the tokens' %v (%s)", s.MaskPath, d.mask.Shape, tok.Shape, s.Path)
		}
	}
	return d, nil
}

// Close unmaps the files.
func (d *Sequences) Close() error {
	var errs []error
	if d.tok != nil {
		errs = append(errs, d.tok.Close())
	}
	if d.mask != nil {
		errs = append(errs, d.mask.Close())
	}
	return errors.Join(errs...)
}

// Batch reads rows start, start+1, … (n of them, wrapping around the rows
// in use) into tokens and sets ids to each position's next-token target:
// −1 at a row's last position and where the mask excludes the target. Both
// slices are reused when large enough.
func (d *Sequences) Batch(start, n int, tokens, ids []int32) ([]int32, []int32, error) {
	if start < 0 || n < 0 {
		return nil, nil, fmt.Errorf("%s: batch of %d rows from row %d", d.Path, n, start)
	}
	l := d.Cols
	tokens, ids = grow(tokens, n*l), grow(ids, n*l)
	for i := 0; i < n; i++ {
		r := (start + i) % d.Rows
		row, err := d.tok.Int32Rows(r, 1)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: row %d: %w", d.Path, r, err)
		}
		for j, id := range row {
			if id < 0 || int(id) >= d.vocab {
				return nil, nil, fmt.Errorf("%s: row %d position %d: token %d outside vocabulary of %d", d.Path, r, j, id, d.vocab)
			}
		}
		copy(tokens[i*l:], row)
		t := ids[i*l : (i+1)*l]
		copy(t, row[1:])
		t[l-1] = -1
		if d.mask != nil {
			mask, err := d.mask.Uint8Rows(r, 1)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: row %d: %w", d.MaskPath, r, err)
			}
			for j := 0; j+1 < l; j++ {
				if mask[j+1] == 0 {
					t[j] = -1
				}
			}
		}
	}
	return tokens, ids, nil
}

func grow(buf []int32, n int) []int32 {
	if cap(buf) < n {
		return make([]int32, n)
	}
	return buf[:n]
}

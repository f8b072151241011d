package backend

import (
	"fmt"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
)

// sequences is an opened api.Sequences: token rows mapped from disk, read
// a batch at a time.
type sequences struct {
	path, maskPath string
	tok, mask      *npy.File
	rows, cols     int // rows in use (after Limit) and tokens per row
	vocab          int
}

// openSequences maps a token dataset and its mask and checks their shapes
// against the model's vocabulary and context length.
func openSequences(s api.Sequences, vocab, maxSeq int) (*sequences, error) {
	if s.Path == "" {
		return nil, fmt.Errorf("sequences: no path")
	}
	if s.Limit < 0 {
		return nil, fmt.Errorf("%s: negative limit %d", s.Path, s.Limit)
	}
	tok, err := npy.Open(s.Path)
	if err != nil {
		return nil, err
	}
	d := &sequences{path: s.Path, maskPath: s.MaskPath, tok: tok, vocab: vocab}
	if len(tok.Shape) != 2 {
		d.close()
		return nil, fmt.Errorf("%s: token array has shape %v, want [sequences, length]", s.Path, tok.Shape)
	}
	d.rows, d.cols = tok.Shape[0], tok.Shape[1]
	if s.Limit > 0 {
		d.rows = min(d.rows, s.Limit)
	}
	if d.rows == 0 || d.cols == 0 {
		d.close()
		return nil, fmt.Errorf("%s: no tokens (shape %v, limit %d)", s.Path, tok.Shape, s.Limit)
	}
	if maxSeq > 0 && d.cols > maxSeq {
		d.close()
		return nil, fmt.Errorf("%s: sequences of %d tokens exceed the model's %d positions", s.Path, d.cols, maxSeq)
	}
	if s.MaskPath != "" {
		if d.mask, err = npy.Open(s.MaskPath); err != nil {
			d.close()
			return nil, err
		}
		if len(d.mask.Shape) != 2 || d.mask.Shape[0] != tok.Shape[0] || d.mask.Shape[1] != d.cols {
			d.close()
			return nil, fmt.Errorf("%s: mask shape %v differs from the tokens' %v (%s)", s.MaskPath, d.mask.Shape, tok.Shape, s.Path)
		}
	}
	return d, nil
}

func (d *sequences) close() {
	if d.tok != nil {
		d.tok.Close()
	}
	if d.mask != nil {
		d.mask.Close()
	}
}

// batch reads n rows from start (wrapping around the rows in use) as
// int64 tokens, and each position's next-token target: −1 at a row's last
// position and where the mask excludes the target.
func (d *sequences) batch(start, n int) (tokens []int64, ids []int32, err error) {
	l := d.cols
	tokens, ids = make([]int64, n*l), make([]int32, n*l)
	for i := 0; i < n; i++ {
		r := (start + i) % d.rows
		row, err := d.tok.Int32Rows(r, 1)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: row %d: %w", d.path, r, err)
		}
		for j, id := range row {
			if id < 0 || int(id) >= d.vocab {
				return nil, nil, fmt.Errorf("%s: row %d position %d: token %d outside vocabulary of %d", d.path, r, j, id, d.vocab)
			}
			tokens[i*l+j] = int64(id)
		}
		t := ids[i*l : (i+1)*l]
		copy(t, row[1:])
		t[l-1] = -1
		if d.mask != nil {
			mask, err := d.mask.Uint8Rows(r, 1)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: row %d: %w", d.maskPath, r, err)
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

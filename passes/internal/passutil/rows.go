package passutil

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/data/npy"
	"github.com/whittle-ml/whittle/internal/fsutil"
)

// splitmix64 is a tiny generator with a fixed definition, so a seed picks
// the same rows with every Go release (math/rand's algorithms may change).
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// below returns a uniform integer in [0, n) (n > 0), by rejection so that
// no value is favoured.
func (s *splitmix64) below(n uint64) uint64 {
	limit := -n % n // 2^64 mod n: values below it would bias the modulo
	for {
		if v := s.next(); v >= limit {
			return v % n
		}
	}
}

// Permutation returns the first k entries of a seeded uniform permutation
// of [0, n) (a partial Fisher–Yates shuffle); k ≤ 0 or k > n means n.
func Permutation(n, k int, seed int64) []int {
	if k <= 0 || k > n {
		k = n
	}
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	rng := splitmix64(uint64(seed))
	for i := 0; i < k; i++ {
		j := i + int(rng.below(uint64(n-i)))
		p[i], p[j] = p[j], p[i]
	}
	return p[:k]
}

// SampleRows writes n rows of a token file (and its mask), drawn by a
// seeded permutation and kept in the drawn order, into dir as
// <source>-<tag>-<content>-n<n>-of<rows>-s<seed>.npy. n ≤ 0 or more than the file holds means
// every row, shuffled. The file is reused when a previous call wrote it.
// It returns the new sequences and the number of rows.
func SampleRows(src backend.Sequences, dir, tag string, n int, seed int64) (backend.Sequences, int, error) {
	f, err := npy.Open(src.Path)
	if err != nil {
		return backend.Sequences{}, 0, fmt.Errorf("opening token file: %w", err)
	}
	defer f.Close()
	if len(f.Shape) != 2 {
		return backend.Sequences{}, 0, fmt.Errorf("%s: token file has shape %v, want [sequences, length]", src.Path, f.Shape)
	}
	rows := f.Rows()
	if src.Limit > 0 && src.Limit < rows {
		rows = src.Limit
	}
	if n <= 0 || n > rows {
		n = rows
	}
	if n == 0 {
		return backend.Sequences{}, 0, fmt.Errorf("%s holds no sequences", src.Path)
	}
	perm := Permutation(rows, n, seed)
	// The name carries everything the content depends on: the source's
	// content (not its name, which depends on how the tokenizer happens
	// to be spelled), the rows drawn from, n and the seed. A stable name
	// lets a backend recognize the same training data when a run resumes.
	key, err := contentKey(src)
	if err != nil {
		return backend.Sequences{}, 0, err
	}
	prefix := strings.TrimSuffix(filepath.Base(src.Path), ".npy")
	if i := strings.LastIndexByte(prefix, '-'); i > 0 {
		prefix = prefix[:i] // drop the source's own cache key
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-%s-%s-n%d-of%d-s%d", prefix, tag, key[:16], n, rows, seed))
	name := func(mask bool) string {
		if mask {
			return base + ".mask.npy"
		}
		return base + ".npy"
	}
	out := backend.Sequences{Path: name(false)}
	if err := writeRows(f, perm, out.Path); err != nil {
		return backend.Sequences{}, 0, err
	}
	if src.MaskPath != "" {
		m, err := npy.Open(src.MaskPath)
		if err != nil {
			return backend.Sequences{}, 0, fmt.Errorf("opening mask file: %w", err)
		}
		defer m.Close()
		if len(m.Shape) != 2 || m.Shape[0] != f.Shape[0] || m.Shape[1] != f.Shape[1] {
			return backend.Sequences{}, 0, fmt.Errorf("%s: mask shape %v differs from the tokens' %v", src.MaskPath, m.Shape, f.Shape)
		}
		out.MaskPath = name(true)
		if err := writeRows(m, perm, out.MaskPath); err != nil {
			return backend.Sequences{}, 0, err
		}
	}
	return out, n, nil
}

// writeRows streams the chosen rows of src into a new .npy file at path,
// unless a complete one of the right shape is already there (files appear
// atomically, so one that exists is whole).
func writeRows(src *npy.File, rows []int, path string) error {
	if f, err := npy.Open(path); err == nil {
		ok := f.Descr == src.Descr && len(f.Shape) == 2 && f.Shape[0] == len(rows) && f.Shape[1] == src.Shape[1]
		f.Close()
		if ok {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	hdr, err := npy.EncodeHeader(npy.Header{Descr: src.Descr, Shape: []int{len(rows), src.Shape[1]}})
	if err != nil {
		return err
	}
	out, err := fsutil.Create(path)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer out.Abort()
	w := bufio.NewWriterSize(out, 1<<20)
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	for _, r := range rows {
		b, err := src.Raw(r, 1)
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := out.Commit(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// contentKey is the hex sha256 of a token file's bytes and its mask's.
func contentKey(s backend.Sequences) (string, error) {
	h := sha256.New()
	for _, f := range []string{s.Path, s.MaskPath} {
		if f == "" {
			continue
		}
		sum, err := fsutil.HashFile(f)
		if err != nil {
			return "", err
		}
		h.Write([]byte(sum))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

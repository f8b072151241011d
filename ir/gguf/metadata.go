package gguf

import (
	"fmt"
	"strconv"
)

// keyErr reports a problem with a metadata value at its offset.
func (f *File) keyErr(key, format string, args ...any) error {
	at := -1
	if i, ok := f.kvIndex[key]; ok && i < len(f.kvAt) {
		at = f.kvAt[i]
	}
	msg := fmt.Sprintf(format, args...)
	if at < 0 {
		return fmt.Errorf("%s: key %q: %s", f.Path, key, msg)
	}
	return fmt.Errorf("%s: offset %d: key %q: %s", f.Path, at, key, msg)
}

func (f *File) str(key string, required bool) (string, error) {
	v, ok := f.Get(key)
	if !ok {
		if required {
			return "", fmt.Errorf("%s: missing metadata key %q", f.Path, key)
		}
		return "", nil
	}
	s, ok := v.Str()
	if !ok {
		return "", f.keyErr(key, "want a string, got %s %s", v.Type, v)
	}
	return s, nil
}

// size reads a non-negative integer of any integer type.
func (f *File) size(key string) (int, bool, error) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false, nil
	}
	i, ok := v.Int()
	if !ok || i < 0 || i > maxSize {
		return 0, false, f.keyErr(key, "want an integer in [0, %d], got %s %s", maxSize, v.Type, v)
	}
	return int(i), true, nil
}

// float reads a float32 or float64. A float32 is widened to the shortest
// decimal that rounds to it, which is the value its writer meant: 1e-5
// stored as float32 reads back as 1e-5, not 9.99999974737875e-06, so
// configs survive a trip through GGUF unchanged.
func (f *File) float(key string) (float64, bool, error) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false, nil
	}
	if x, ok := v.Any().(float32); ok {
		d, err := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		if err != nil {
			d = float64(x)
		}
		return d, true, nil
	}
	x, ok := v.Float()
	if !ok {
		return 0, false, f.keyErr(key, "want a float, got %s %s", v.Type, v)
	}
	return x, true, nil
}

// perLayer reads a key that is either one integer for every layer or an
// array with one per layer. Absent, it takes def (an error when def is
// nil).
func (f *File) perLayer(key string, n int, def []int) ([]int, error) {
	v, ok := f.Get(key)
	if !ok {
		if def == nil {
			return nil, fmt.Errorf("%s: missing metadata key %q", f.Path, key)
		}
		return def, nil
	}
	out := make([]int, n)
	if v.Type != TypeArray {
		x, _, err := f.size(key)
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i] = x
		}
		return out, nil
	}
	xs, ok := v.Ints()
	if !ok || len(xs) != n {
		return nil, f.keyErr(key, "want an integer or %d integers (one per block), got %s", n, v)
	}
	for i, x := range xs {
		if x < 0 || x > maxSize {
			return nil, f.keyErr(key, "layer %d: %d out of range [0, %d]", i, x, maxSize)
		}
		out[i] = int(x)
	}
	return out, nil
}

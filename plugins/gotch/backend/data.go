package backend

import "github.com/whittle-ml/whittle/core/backend/batch"

// readBatch reads n rows from start as batch.Sequences.Batch does, the
// tokens widened to int64, libtorch's index type.
func readBatch(d *batch.Sequences, start, n int) (tokens []int64, ids []int32, err error) {
	t, ids, err := d.Batch(start, n, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return int64s(t), ids, nil
}

func int64s(s []int32) []int64 {
	out := make([]int64, len(s))
	for i, v := range s {
		out[i] = int64(v)
	}
	return out
}

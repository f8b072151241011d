package backend

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"

	api "github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/safetensors"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
)

// CheckpointFile is the name of the training checkpoint inside
// TrainRequest.CheckpointDir: a safetensors file holding the trainable
// weights ("w/NAME") and AdamW moments ("m/NAME", "v/NAME") in float32,
// with the run's position in its metadata. It is written atomically.
const CheckpointFile = "train-gotch.safetensors"

// Metadata keys of a checkpoint.
const (
	metaFingerprint = "whittle.fingerprint"
	metaStep        = "whittle.step"
	metaAdamT       = "whittle.adam_t"
	metaTokens      = "whittle.tokens"
	metaHistory     = "whittle.history"
)

// identity is the checkpoint key of this run (see
// api.ResolvedTrain.CheckpointKey).
func (j *trainJob) identity() (string, error) {
	w, err := j.b.weightsHash(j.m)
	if err != nil {
		return "", err
	}
	st := api.CheckpointState{DataShape: [2]int{j.data.Rows, j.data.Cols}, Weights: w, Layout: j.params}
	if j.teacher != nil {
		if st.Teacher, err = j.b.weightsHash(j.teacher); err != nil {
			return "", err
		}
	}
	return j.req.CheckpointKey(st)
}

// weightsHash is the sha256 of the model's weights as float32 in canonical
// order, cached until they change.
func (b *Backend) weightsHash(m *model) (string, error) {
	if m.hash != "" {
		return m.hash, nil
	}
	h := sha256.New()
	for _, name := range m.names {
		s := torch.NewScope()
		v := s.Float32s(m.w[name])
		err := s.Err()
		s.Free()
		if err != nil {
			return "", fmt.Errorf("hashing %s: %w", name, err)
		}
		buf := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
		}
		h.Write([]byte(name))
		h.Write(buf)
	}
	m.hash = hex.EncodeToString(h.Sum(nil))
	return m.hash, nil
}

// resume loads the checkpoint of this request, if there is one.
func (j *trainJob) resume() error {
	var err error
	if j.fingerprint, err = j.identity(); err != nil {
		return err
	}
	path := filepath.Join(j.req.CheckpointDir, CheckpointFile)
	f, err := safetensors.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	md := f.Metadata
	if md[metaFingerprint] != j.fingerprint {
		j.b.log.Warn("checkpoint belongs to another training run; starting afresh", "path", path)
		return nil
	}
	step, err1 := strconv.Atoi(md[metaStep])
	adamT, err2 := strconv.Atoi(md[metaAdamT])
	tokens, err3 := strconv.ParseInt(md[metaTokens], 10, 64)
	var history []api.TrainEvent
	err4 := json.Unmarshal([]byte(md[metaHistory]), &history)
	if err := firstErr(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("%s: metadata: %w", path, err)
	}
	if step < 0 || step > j.req.Steps || adamT < 0 {
		return fmt.Errorf("%s: checkpoint at step %d (AdamW step %d) does not fit the run's %d steps", path, step, adamT, j.req.Steps)
	}
	s := torch.NewScope()
	defer s.Free()
	load := func(name string, dst torch.Tensor) error {
		t, err := f.Tensor(name)
		if err != nil {
			return err
		}
		want := dst.Shape()
		if t.DType != ir.F32 || len(t.Shape) != len(want) {
			return fmt.Errorf("%s: tensor %s is %v %v, the run needs float32 %v", path, name, t.DType, t.Shape, want)
		}
		for i, d := range want {
			if int64(t.Shape[i]) != d {
				return fmt.Errorf("%s: tensor %s has shape %v, the run needs %v", path, name, t.Shape, want)
			}
		}
		raw, err := t.Bytes()
		if err != nil {
			return err
		}
		s.CopyInto(dst, s.FromBytes(raw, torch.Float32, want...))
		return s.Err()
	}
	for i, name := range j.params {
		for _, p := range []struct {
			key string
			dst torch.Tensor
		}{{"w/" + name, j.ws[i]}, {"m/" + name, j.mom[i]}, {"v/" + name, j.vel[i]}} {
			if err := load(p.key, p.dst); err != nil {
				return err
			}
		}
	}
	j.start, j.adamT, j.tokens, j.history = step, adamT, tokens, history
	j.m.hash = ""
	j.b.log.Info("resuming training from checkpoint", "model", j.m.id, "path", path, "step", step)
	return nil
}

// save writes the checkpoint after step steps.
func (j *trainJob) save(step int) error {
	hist, err := json.Marshal(j.history)
	if err != nil {
		return err
	}
	md := map[string]string{
		metaFingerprint: j.fingerprint,
		metaStep:        strconv.Itoa(step),
		metaAdamT:       strconv.Itoa(j.adamT),
		metaTokens:      strconv.FormatInt(j.tokens, 10),
		metaHistory:     string(hist),
	}
	var srcs []safetensors.Source
	add := func(key string, t torch.Tensor) {
		shape := t.Shape()
		dims := make([]int, len(shape))
		for i, d := range shape {
			dims[i] = int(d)
		}
		srcs = append(srcs, safetensors.Source{Name: key, DType: ir.F32, Shape: dims, Data: func() ([]byte, error) {
			s := torch.NewScope()
			defer s.Free()
			v := s.Float32s(t)
			if err := s.Err(); err != nil {
				return nil, fmt.Errorf("checkpoint tensor %s: %w", key, err)
			}
			return ir.EncodeFloat32(ir.F32, v), nil
		}})
	}
	for i, name := range j.params {
		add("w/"+name, j.ws[i])
		add("m/"+name, j.mom[i])
		add("v/"+name, j.vel[i])
	}
	if err := os.MkdirAll(j.req.CheckpointDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(j.req.CheckpointDir, CheckpointFile)
	if err := safetensors.WriteSources(path, srcs, md); err != nil {
		return fmt.Errorf("writing checkpoint %s: %w", path, err)
	}
	j.b.log.Debug("checkpoint written", "model", j.m.id, "path", path, "step", step)
	return nil
}

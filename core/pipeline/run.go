package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"time"

	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/whittle-ml/whittle/core/backend"
	"github.com/whittle-ml/whittle/core/recipe"
	"github.com/whittle-ml/whittle/core/scores"
	"github.com/whittle-ml/whittle/internal/fsutil"
	"github.com/whittle-ml/whittle/internal/version"
	"github.com/whittle-ml/whittle/ir"
	"github.com/whittle-ml/whittle/ir/hf"
	"github.com/whittle-ml/whittle/ir/modelio"
)

// Options configure a run.
type Options struct {
	// Dir is the run directory. An existing run there is resumed: passes
	// whose inputs and configuration are unchanged are not run again.
	Dir string
	Log *slog.Logger
	// Backends opens compute backends; passes that compute (score,
	// distill, …) fail without one.
	Backends BackendProvider
	// Checked is Check's plan of this very recipe when the caller already
	// made it (the CLI does, to print diagnostics with source lines); nil
	// makes Run check. Either way Run starts nothing before the check.
	Checked *Plan
}

// slot is a named value in the run: a model or a scores table, with the
// content hash that keys the passes consuming it.
type slot struct {
	hash   string
	model  *ir.Model
	scores *scores.Table
	load   func() (*ir.Model, error) // declared models load on first use
	dir    string                    // a Hugging Face directory holding model, once known
}

// RunContext is what a pass sees while running.
type RunContext struct {
	Recipe *recipe.Recipe
	// Dir is this pass's own artifact directory (empty at start).
	Dir string
	// RunDir is the run directory; user-named output paths are relative to it.
	RunDir string
	Log    *slog.Logger

	run      *runner
	pass     *recipe.Pass
	modelDir string
	metrics  map[string]any
	model    *ir.Model
	scores   *scores.Table
	extra    []string
	report   func(Update)
}

// Model returns the model in a slot, loading a declared model on first use.
func (rc *RunContext) Model(ref recipe.Ref) (*ir.Model, error) { return rc.run.model(ref) }

// Scores returns a scores table produced by an earlier pass.
func (rc *RunContext) Scores(ref recipe.Ref) (*scores.Table, error) {
	s, ok := rc.run.slots[slotKey(ref)]
	if !ok || s.scores == nil {
		return nil, fmt.Errorf("scores.%s is not available", ref.Name)
	}
	return s.scores, nil
}

// Dataset returns a declared dataset.
func (rc *RunContext) Dataset(ref recipe.Ref) (*recipe.Dataset, error) {
	for _, d := range rc.Recipe.Datasets {
		if d.Name == ref.Name {
			return d, nil
		}
	}
	return nil, fmt.Errorf("dataset.%s is not declared", ref.Name)
}

// Task returns a declared task.
func (rc *RunContext) Task(ref recipe.Ref) (*recipe.Task, error) {
	for _, t := range rc.Recipe.Tasks {
		if t.Name == ref.Name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("task.%s is not declared", ref.Name)
}

// SetModel publishes the pass's output model.
func (rc *RunContext) SetModel(m *ir.Model) { rc.model = m }

// SetScores publishes the pass's output scores.
func (rc *RunContext) SetScores(t *scores.Table) { rc.scores = t }

// Metric records a named number or value in the manifest.
func (rc *RunContext) Metric(name string, v any) { rc.metrics[name] = v }

// Artifact registers an extra file (absolute, or relative to rc.Dir) that
// the manifest should hash.
func (rc *RunContext) Artifact(path string) { rc.extra = append(rc.extra, path) }

type runner struct {
	r        *recipe.Recipe
	reg      *Registry
	opts     Options
	log      *slog.Logger
	slots    map[string]*slot
	backends map[string]backend.Backend
	man      *Manifest
	prev     map[string]PassRecord // the previous run's passes, by name
}

// Events let a caller show progress.
type Events struct {
	PassStart func(index, total int, p *recipe.Pass)
	PassEnd   func(index int, p *recipe.Pass, rec PassRecord)
	// Progress gets the updates worth a log line; Update gets them all
	// (every training step), for a live display.
	Progress func(p *recipe.Pass, done, total int, msg string)
	Update   func(p *recipe.Pass, u Update)
}

// Run executes the recipe's passes in order and then its outputs. The
// manifest is rewritten after every pass, so an interrupted run can be
// resumed by running it again with the same directory.
func Run(ctx context.Context, r *recipe.Recipe, reg *Registry, opts Options, ev Events) (*Manifest, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	plan := opts.Checked
	if plan == nil {
		var err error
		if plan, err = Check(r, reg); err != nil {
			return nil, err
		}
	}
	if err := CheckRunnable(r, plan); err != nil {
		return nil, err
	}
	lock, err := LockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	manPath := filepath.Join(opts.Dir, ManifestName)
	prevMan, err := ReadManifest(manPath)
	if err != nil {
		return nil, fmt.Errorf("reading the previous run's manifest: %w", err)
	}
	run := &runner{r: r, reg: reg, opts: opts, log: opts.Log, slots: map[string]*slot{}, backends: map[string]backend.Backend{}, prev: map[string]PassRecord{}}
	if prevMan != nil {
		for _, p := range prevMan.Passes {
			run.prev[p.Name] = p
		}
	}
	run.man = &Manifest{
		Whittle:   version.String(),
		Go:        version.Go(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
		Started:   time.Now().UTC(),
		Recipe:    FileRecord{Path: r.Path, SHA256: fsutil.HashBytes(r.Source), Bytes: int64(len(r.Source))},
		Variables: map[string]json.RawMessage{},
		Status:    StatusRunning,
		Planned:   plannedNames(r),
	}
	for name, v := range r.Variables {
		b, err := ctyjson.Marshal(v, v.Type())
		if err == nil {
			run.man.Variables[name] = b
		}
	}
	if err := fsutil.WriteFile(filepath.Join(opts.Dir, "recipe.hcl"), r.Source); err != nil {
		return nil, err
	}
	if err := run.hashInputs(); err != nil {
		return nil, err
	}
	defer run.closeModels()
	defer run.closeBackends()
	for i, p := range r.Passes {
		if ev.PassStart != nil {
			ev.PassStart(i, len(r.Passes), p)
		}
		// Record the pass as running before it starts, so that a run killed
		// mid-pass (SIGKILL, power loss) reports which pass it was in.
		run.man.Passes = append(run.man.Passes, PassRecord{Index: p.Index, Name: p.Name, Kind: p.Kind, Into: p.Into,
			Status: StatusRunning, Started: time.Now().UTC()})
		if err := run.man.write(manPath); err != nil {
			return run.man, err
		}
		rec, err := run.runPass(ctx, p, ev)
		run.man.Passes[len(run.man.Passes)-1] = rec
		if err != nil {
			run.man.Status = StatusFailed
		}
		if werr := run.man.write(manPath); werr != nil && err == nil {
			err = werr
		}
		if ev.PassEnd != nil {
			ev.PassEnd(i, p, rec)
		}
		if err != nil {
			return run.man, fmt.Errorf("%s: pass %q (%s): %w", At(p.DeclRange), p.Name, p.Kind, err)
		}
	}
	for _, o := range r.Outputs {
		rec, err := run.writeOutput(o)
		if err != nil {
			run.man.Status = StatusFailed
			_ = run.man.write(manPath) // best effort: the output's error matters more
			return run.man, fmt.Errorf("%s: output %q: %w", At(o.DeclRange), o.Name, err)
		}
		run.man.Outputs = append(run.man.Outputs, rec)
	}
	run.man.Status = StatusDone
	return run.man, run.man.write(manPath)
}

func slotKey(ref recipe.Ref) string { return ref.Kind + "." + ref.Name }

func (run *runner) hashInputs() error {
	add := func(name, path string) (string, error) {
		if path == "" {
			return "", nil
		}
		rec, err := HashPath(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		rec.Name = name
		run.man.Inputs = append(run.man.Inputs, rec)
		return rec.SHA256, nil
	}
	for _, m := range run.r.Models {
		h, err := add("model."+m.Name, m.Path)
		if err != nil {
			return err
		}
		th, err := add("model."+m.Name+".tokenizer", m.Tokenizer)
		if err != nil {
			return err
		}
		m := m
		s := &slot{hash: fsutil.HashBytes([]byte(h + th)), load: func() (*ir.Model, error) {
			return modelio.Load(m.Path, loadOptions(m))
		}}
		// A Hugging Face directory with no tokenizer override is already
		// what backends load; anything else is converted on first use.
		if f, err := modelio.Detect(m.Path); err == nil && f == modelio.HF && m.Tokenizer == "" {
			s.dir = m.Path
		}
		run.slots["model."+m.Name] = s
	}
	for _, d := range run.r.Datasets {
		h, err := add("dataset."+d.Name, d.Path)
		if err != nil {
			return err
		}
		run.slots["dataset."+d.Name] = &slot{hash: h}
	}
	for _, t := range run.r.Tasks {
		h, err := add("task."+t.Name, t.Path)
		if err != nil {
			return err
		}
		run.slots["task."+t.Name] = &slot{hash: h}
	}
	return nil
}

func (run *runner) model(ref recipe.Ref) (*ir.Model, error) {
	s, ok := run.slots[slotKey(ref)]
	if !ok || ref.Kind != string(recipe.SlotModel) {
		return nil, fmt.Errorf("%s.%s is not an available model", ref.Kind, ref.Name)
	}
	if s.model == nil && s.load != nil {
		m, err := s.load()
		if err != nil {
			return nil, err
		}
		s.model = m
	}
	if s.model == nil {
		return nil, fmt.Errorf("model.%s has no weights", ref.Name)
	}
	return s.model, nil
}

func (run *runner) closeModels() {
	for _, s := range run.slots {
		if s.model != nil {
			s.model.Close()
		}
	}
}

// move takes over the directory of a pass that an earlier run recorded at
// another position (the recipe's passes were reordered): it renames
// passes/<old>-<name> to dir and rewrites the record's artifact paths.
// Pass names are unique, so the new name cannot be another pass's.
func (run *runner) move(prev *PassRecord, index int, dir string) error {
	if prev.Index == index {
		return nil
	}
	old := PassDir(run.opts.Dir, prev.Index, prev.Name)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(old, dir); err != nil {
		return fmt.Errorf("moving the pass's directory: %w", err)
	}
	oldRel, err1 := filepath.Rel(run.opts.Dir, old)
	newRel, err2 := filepath.Rel(run.opts.Dir, dir)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	for i, a := range prev.Artifacts {
		if rest, ok := strings.CutPrefix(filepath.Clean(a.Path), oldRel+string(filepath.Separator)); ok {
			prev.Artifacts[i].Path = filepath.Join(newRel, rest)
		}
	}
	run.log.Info("pass moved in the recipe, reusing its artifacts", "pass", prev.Name, "from", oldRel, "to", newRel)
	prev.Index = index
	return nil
}

// passKey hashes everything a pass's result depends on: its kind, its
// decoded configuration and the content of every slot it references.
func (run *runner) passKey(p *recipe.Pass, config []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "kind=%s\ninto=%s\nconfig=%s\n", p.Kind, p.Into, config)
	refs := collectRefs(p.Config)
	if p.Backend != nil {
		refs = append(refs, *p.Backend)
	}
	for _, ref := range refs {
		if s, ok := run.slots[slotKey(ref)]; ok {
			fmt.Fprintf(h, "%s=%s\n", slotKey(ref), s.hash)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (run *runner) runPass(ctx context.Context, p *recipe.Pass, ev Events) (PassRecord, error) {
	impl, ok := run.reg.Lookup(p.Kind)
	if !ok {
		return PassRecord{}, fmt.Errorf("unknown pass kind %q", p.Kind)
	}
	config, err := json.Marshal(p.Config)
	if err != nil {
		return PassRecord{}, fmt.Errorf("encoding configuration: %w", err)
	}
	rec := PassRecord{Index: p.Index, Name: p.Name, Kind: p.Kind, Into: p.Into, Config: config,
		Key: run.passKey(p, config), Started: time.Now().UTC(), Metrics: map[string]any{}}
	dir := PassDir(run.opts.Dir, p.Index, p.Name)
	produces := impl.Spec().Produces

	if prev, ok := run.prev[p.Name]; ok && prev.Status == StatusDone && prev.Key == rec.Key {
		err := run.move(&prev, p.Index, dir)
		if err == nil {
			err = run.restore(p, produces, dir, prev)
		}
		if err == nil {
			prev.Resumed = true
			run.log.Info("pass unchanged, reusing its artifacts", "pass", p.Name, "dir", dir)
			return prev, nil
		} else {
			run.log.Warn("cannot reuse the previous result, running again", "pass", p.Name, "err", err)
		}
	}

	if err := os.RemoveAll(dir); err != nil {
		return rec, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return rec, err
	}
	rc := &RunContext{Recipe: run.r, Dir: dir, RunDir: run.opts.Dir, Log: run.log.With("pass", p.Name), run: run, pass: p, metrics: rec.Metrics,
		report: reporter(p, ev)}
	start := time.Now()
	err = impl.Run(ctx, rc, p)
	if err == nil {
		err = run.publish(p, produces, rc, dir, &rec)
	}
	rec.Seconds = time.Since(start).Seconds()
	if err != nil {
		rec.Status, rec.Error = StatusFailed, err.Error()
		if errors.Is(err, context.Canceled) {
			rec.Error = "interrupted; run again with the same --out to resume"
		}
		return rec, err
	}
	rec.Status = StatusDone
	return rec, nil
}

// publish saves what the pass produced into its directory, registers it
// as a slot and hashes every artifact.
func (run *runner) publish(p *recipe.Pass, produces recipe.SlotKind, rc *RunContext, dir string, rec *PassRecord) error {
	var slotHash string
	switch produces {
	case recipe.SlotModel:
		if rc.model == nil {
			return fmt.Errorf("pass produced no model")
		}
		mdir := filepath.Join(dir, "model")
		if !sameDir(rc.modelDir, mdir) {
			if err := hf.Save(rc.model, mdir, hf.SaveOptions{}); err != nil {
				return fmt.Errorf("saving the produced model: %w", err)
			}
		}
		fr, err := HashPath(mdir)
		if err != nil {
			return err
		}
		slotHash = fr.SHA256
		run.setSlot("model."+p.Into, &slot{hash: slotHash, model: rc.model, dir: mdir})
	case recipe.SlotScores:
		if rc.scores == nil {
			return fmt.Errorf("pass produced no scores")
		}
		if err := rc.scores.Save(filepath.Join(dir, "scores.json")); err != nil {
			return err
		}
		fr, err := HashPath(filepath.Join(dir, "scores.json"))
		if err != nil {
			return err
		}
		slotHash = fr.SHA256
		run.setSlot("scores."+p.Into, &slot{hash: slotHash, scores: rc.scores})
	}
	metrics, err := json.MarshalIndent(rec.Metrics, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(filepath.Join(dir, "metrics.json"), metrics); err != nil {
		return err
	}
	arts, err := hashTree(dir, run.opts.Dir)
	if err != nil {
		return err
	}
	for _, path := range rc.extra {
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		fr, err := HashPath(path)
		if err != nil {
			return fmt.Errorf("artifact %s: %w", path, err)
		}
		if rel, err := filepath.Rel(run.opts.Dir, path); err == nil && !strings.HasPrefix(rel, "..") {
			fr.Path = filepath.ToSlash(rel)
		}
		arts = append(arts, fr)
	}
	rec.Artifacts = arts
	return nil
}

func (run *runner) setSlot(key string, s *slot) {
	if old, ok := run.slots[key]; ok && old.model != nil && old.model != s.model {
		old.model.Close()
	}
	run.slots[key] = s
}

// restore reloads a finished pass's outputs after checking that its
// artifacts are still the ones the manifest recorded.
func (run *runner) restore(p *recipe.Pass, produces recipe.SlotKind, dir string, prev PassRecord) error {
	for _, a := range prev.Artifacts {
		path := a.Path
		if !filepath.IsAbs(path) {
			path = filepath.Join(run.opts.Dir, path)
		}
		fr, err := HashPath(path)
		if err != nil {
			return err
		}
		if fr.SHA256 != a.SHA256 {
			return fmt.Errorf("artifact %s changed since the run that wrote it", a.Path)
		}
	}
	switch produces {
	case recipe.SlotModel:
		mdir := filepath.Join(dir, "model")
		m, err := hf.Load(mdir)
		if err != nil {
			return err
		}
		fr, err := HashPath(mdir)
		if err != nil {
			m.Close()
			return err
		}
		run.setSlot("model."+p.Into, &slot{hash: fr.SHA256, model: m, dir: mdir})
	case recipe.SlotScores:
		path := filepath.Join(dir, "scores.json")
		t, err := scores.Load(path)
		if err != nil {
			return err
		}
		fr, err := HashPath(path)
		if err != nil {
			return err
		}
		run.setSlot("scores."+p.Into, &slot{hash: fr.SHA256, scores: t})
	}
	return nil
}

func (run *runner) writeOutput(o *recipe.Output) (FileRecord, error) {
	m, err := run.model(o.Model)
	if err != nil {
		return FileRecord{}, err
	}
	path := o.Path
	if !filepath.IsAbs(path) {
		path = filepath.Join(run.opts.Dir, path)
	}
	if err := Export(m, path, o.Format, o.DType); err != nil {
		return FileRecord{}, err
	}
	fr, err := HashPath(path)
	if err != nil {
		return FileRecord{}, err
	}
	fr.Name = o.Name
	return fr, nil
}

// Export writes a model in a format named as in recipes, optionally
// converting its dtype. It is shared by output blocks and the export pass.
func Export(m *ir.Model, path, format, dtype string) error {
	f, err := modelio.ParseFormat(format)
	if err != nil {
		return err
	}
	opts, err := modelio.ParseStorage(f, dtype)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return modelio.Save(m, path, f, opts)
}

// HashPath hashes a file, or a directory as the sorted list of its files'
// relative names and hashes.
func HashPath(path string) (FileRecord, error) {
	st, err := os.Stat(path)
	if err != nil {
		return FileRecord{}, err
	}
	if !st.IsDir() {
		h, err := fsutil.HashFile(path)
		return FileRecord{Path: path, SHA256: h, Bytes: st.Size()}, err
	}
	files, err := hashTree(path, path)
	if err != nil {
		return FileRecord{}, err
	}
	h := sha256.New()
	var total int64
	for _, f := range files {
		fmt.Fprintf(h, "%s %s\n", f.SHA256, f.Path)
		total += f.Bytes
	}
	return FileRecord{Path: path, SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: total}, nil
}

// hashTree hashes every regular file under root, naming each by its
// slash-separated path relative to base. Dot files (temp files) are skipped.
func hashTree(root, base string) ([]FileRecord, error) {
	var out []FileRecord
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := fsutil.HashFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(base, path)
		if err != nil {
			return err
		}
		out = append(out, FileRecord{Path: filepath.ToSlash(rel), SHA256: h, Bytes: info.Size()})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// PassDir is the directory of the pass at index with name in a run
// directory.
func PassDir(runDir string, index int, name string) string {
	return filepath.Join(runDir, "passes", fmt.Sprintf("%02d-%s", index, sanitize(name)))
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, name)
}

// collectRefs finds every recipe reference in a decoded pass config.
func collectRefs(config any) []recipe.Ref {
	var out []recipe.Ref
	var walk func(v reflect.Value)
	refType := reflect.TypeOf(recipe.Ref{})
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			if v.Type() == refType {
				out = append(out, v.Interface().(recipe.Ref))
				return
			}
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		}
	}
	walk(reflect.ValueOf(config))
	return out
}

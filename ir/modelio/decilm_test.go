package modelio_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/whittle-ml/whittle/ir/modelio"
)

// The decilm format writes a Llama whose layers differ as DeciLM's
// block_configs, which reads back to the same model; a model DeciLM
// cannot express is refused, naming why.
func TestSaveDeciLM(t *testing.T) {
	f, err := modelio.ParseFormat("decilm")
	if err != nil || f != modelio.DeciLM {
		t.Fatalf("ParseFormat(decilm) = %v, %v", f, err)
	}
	m, err := modelio.Load("../testdata/families/decilm", modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := filepath.Join(t.TempDir(), "out")
	if err := modelio.Save(m, dir, modelio.DeciLM, modelio.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "DeciLMForCausalLM") || !strings.Contains(string(cfg), "block_configs") {
		t.Errorf("config.json is not DeciLM's:\n%s", cfg)
	}
	back, err := modelio.Load(dir, modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if !reflect.DeepEqual(back.Config, m.Config) {
		t.Errorf("read back %+v, saved %+v", back.Config, m.Config)
	}
	qwen, err := modelio.Load("../testdata/families/qwen2", modelio.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer qwen.Close()
	if err := modelio.Save(qwen, filepath.Join(t.TempDir(), "q"), modelio.DeciLM, modelio.SaveOptions{}); err == nil {
		t.Errorf("a Qwen2 model was written as DeciLM")
	}
}

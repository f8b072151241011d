// Command whittle-plugin-gotch is whittle's libtorch backend as a plugin.
// whittle starts it (through go-plugin) for recipes with
//
//	backend "gpu" {
//	  plugin    = "gotch"
//	  device    = "cuda:0"  # or "cpu", "auto" (the default)
//	  precision = "bf16"    # or "fp32"
//	}
//
// Run by hand, `whittle-plugin-gotch info` prints what libtorch it found
// (version, CUDA devices, fused AdamW). Benchmarks run through whittle:
//
//	whittle bench --backend gotch --set device=cuda --shape llama-1B --workload train --peer
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/whittle-ml/whittle/plugins/gotch/backend"
	"github.com/whittle-ml/whittle/plugins/gotch/internal/torch"
	"github.com/whittle-ml/whittle/plugins/sdk"
)

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "info":
			err = info(os.Stdout)
		case "-h", "-help", "--help", "help":
			fmt.Fprintln(os.Stderr, "usage: whittle-plugin-gotch [info]; without arguments it serves whittle")
			return
		default:
			err = fmt.Errorf("unknown subcommand %q (want info)", os.Args[1])
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "whittle-plugin-gotch: %v\n", err)
			os.Exit(1)
		}
		return
	}
	sdk.Serve(sdk.Plugin{Name: "gotch", Version: backend.Version, Backend: open})
}

// config is a backend block's attributes.
type config struct {
	Device    string `json:"device"`
	Precision string `json:"precision"`
	Threads   int    `json:"threads"`
	LossChunk int    `json:"loss_chunk"`
}

// parseConfig decodes a backend block's attributes, rejecting unknown ones
// (a misspelt attribute must not be silently ignored).
func parseConfig(raw json.RawMessage) (config, error) {
	var c config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("gotch backend attributes: %w (known: device, precision, threads, loss_chunk)", err)
	}
	if dec.More() {
		return c, fmt.Errorf("gotch backend attributes: trailing data after the object")
	}
	if c.Threads < 0 || c.LossChunk < 0 {
		return c, fmt.Errorf("gotch backend attributes: threads %d and loss_chunk %d must not be negative", c.Threads, c.LossChunk)
	}
	return c, nil
}

func open(raw json.RawMessage) (sdk.Backend, error) {
	c, err := parseConfig(raw)
	if err != nil {
		return nil, err
	}
	return backend.New(backend.Options{Device: c.Device, Precision: c.Precision, Threads: c.Threads, LossChunk: c.LossChunk})
}

func info(w io.Writer) error {
	out := map[string]any{
		"libtorch":     torch.Version(),
		"cuda":         torch.CUDAAvailable(),
		"cuda_devices": torch.CUDADeviceCount(),
		"fused_adamw":  torch.HasFusedAdamW(),
		"threads":      torch.Threads(),
	}
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(out)
}

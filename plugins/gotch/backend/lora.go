package backend

import "github.com/whittle-ml/whittle/plugins/gotch/internal/torch"

// loraSet holds low-rank adapters being trained; LoRA is not implemented
// in this backend yet (Train returns ErrUnsupported for mode lora).
type loraSet struct{}

func (a *loraSet) apply(s *torch.Scope, l int, role string, in, y torch.Tensor, cdt torch.DType) torch.Tensor {
	return y
}

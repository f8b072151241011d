// whittle's additions to libtch (see whittle_ext.h).
#include "whittle_ext.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <torch/version.h>
#include <vector>

#if defined(WHITTLE_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

// build_libtch.sh retries with WHITTLE_NO_FUSED_ADAMW should a libtorch
// change the operator's signature.
#if !defined(WHITTLE_NO_FUSED_ADAMW) &&                                        \
    (TORCH_VERSION_MAJOR > 2 ||                                                \
     (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))
#define WHITTLE_FUSED_ADAMW 1
#endif

static thread_local char *last_error = nullptr;

#define GUARD(x)                                                               \
  try {                                                                        \
    x                                                                          \
  } catch (const std::exception &e) {                                          \
    free(last_error);                                                          \
    last_error = strdup(e.what());                                             \
  }

static std::vector<torch::Tensor> list(wht_tensor *ts, int n) {
  std::vector<torch::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(*ts[i]);
  return v;
}

extern "C" {

char *wht_last_error(void) {
  char *e = last_error;
  last_error = nullptr;
  return e;
}

const char *wht_torch_version(void) { return TORCH_VERSION; }

int wht_has_fused_adamw(void) {
#ifdef WHITTLE_FUSED_ADAMW
  return 1;
#else
  return 0;
#endif
}

void wht_adamw_step(wht_tensor *params, wht_tensor *grads, wht_tensor *exp_avg,
                    wht_tensor *exp_avg_sq, const double *wd, int n,
                    int64_t step, double lr, double beta1, double beta2,
                    double eps, double grad_scale, int fused) {
  GUARD(
      torch::NoGradGuard no_grad;
      if (n == 0) return;
      if (grad_scale != 1.0) {
        for (int i = 0; i < n; i++) grads[i]->mul_(grad_scale);
      }
      double bc1 = 1.0 - std::pow(beta1, (double)step);
      double bc2 = 1.0 - std::pow(beta2, (double)step);
#ifdef WHITTLE_FUSED_ADAMW
      if (fused && params[0]->is_cuda()) {
        // One launch per weight-decay group: the fused kernel takes a single
        // decay; step counts are float tensors on the device, as PyTorch
        // keeps them.
        std::vector<torch::Tensor> p[2], g[2], m[2], v[2], s[2];
        double group_wd[2] = {0, 0};
        for (int i = 0; i < n; i++) {
          int k = wd[i] != 0;
          group_wd[k] = wd[i];
          p[k].push_back(*params[i]);
          g[k].push_back(*grads[i]);
          m[k].push_back(*exp_avg[i]);
          v[k].push_back(*exp_avg_sq[i]);
          s[k].push_back(torch::full({}, (double)step,
                                     params[i]->options().dtype(torch::kFloat)));
        }
        for (int k = 0; k < 2; k++) {
          if (p[k].empty()) continue;
          at::_fused_adamw_(p[k], g[k], m[k], v[k], {}, s[k], lr, beta1, beta2,
                            group_wd[k], eps, false, false);
        }
        return;
      }
#endif
      double step_size = lr / bc1;
      double bc2_sqrt = std::sqrt(bc2);
      for (int i = 0; i < n; i++) {
        torch::Tensor &p = *params[i];
        torch::Tensor &g = *grads[i];
        if (wd[i] != 0) p.mul_(1.0 - lr * wd[i]);
        exp_avg[i]->lerp_(g, 1.0 - beta1);
        exp_avg_sq[i]->mul_(beta2).addcmul_(g, g, 1.0 - beta2);
        torch::Tensor denom = (exp_avg_sq[i]->sqrt() / bc2_sqrt).add_(eps);
        p.addcdiv_(*exp_avg[i], denom, -step_size);
      })
}

wht_tensor wht_global_norm(wht_tensor *ts, int n) {
  GUARD(
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> norms;
      for (int i = 0; i < n; i++) {
        if (ts[i] == nullptr || !ts[i]->defined()) continue;
        norms.push_back(ts[i]->detach().to(torch::kFloat).norm().reshape({1}));
      }
      if (norms.empty()) return new torch::Tensor(torch::zeros({}));
      return new torch::Tensor(torch::cat(norms).norm());)
  return nullptr;
}

void wht_grad_accumulate(wht_tensor param, wht_tensor src) {
  GUARD(
      torch::NoGradGuard no_grad;
      torch::Tensor &g = param->mutable_grad();
      if (!g.defined()) {
        g = src->detach().to(param->dtype()).clone();
      } else {
        g.add_(*src);
      })
}

wht_tensor wht_grad(wht_tensor t) {
  GUARD(return new torch::Tensor(t->grad());)
  return nullptr;
}

void wht_zero_grad(wht_tensor *ts, int n) {
  GUARD(for (int i = 0; i < n; i++) {
    if (ts[i]->grad().defined()) ts[i]->mutable_grad().reset();
  })
}

void wht_set_num_threads(int n) { GUARD(at::set_num_threads(n);) }

int wht_get_num_threads(void) { return at::get_num_threads(); }

int64_t wht_cuda_max_memory(int device) {
#if defined(WHITTLE_CUDA)
  GUARD(
      auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
      int64_t peak = stats.allocated_bytes[0].peak;
      c10::cuda::CUDACachingAllocator::resetPeakStats(device);
      return peak;)
  return -1;
#else
  (void)device;
  return 0;
#endif
}

} // extern "C"

// AdamW in the two flavours slimbert needs, with its state exposed and saveable:
//  - kTorch: torch.optim.AdamW (bias correction, decoupled decay before the update);
//  - kBert:  the BERT/UER AdamW WID uses (ALGORITHMS.md §A.6): no bias correction, decoupled
//            decay after the update, and a first moment that gradient surgery may edit.
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <vector>

#include "slimbert/io/tensor_io.h"

namespace slimbert {

enum class AdamVariant { kTorch, kBert };

struct ParamGroup {
  std::string name;
  std::vector<std::string> names;  // parameter names (for saving state)
  std::vector<at::Tensor> params;
  double lr = 1e-4;
  double weight_decay = 0.01;
};

struct AdamOptions {
  AdamVariant variant = AdamVariant::kTorch;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;  // BERT's AdamW uses 1e-6
};

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamOptions options);
  // One update; each group's learning rate is multiplied by `lr_scale` (the schedule).
  void step(double lr_scale = 1.0);
  void zero_grad();
  int64_t steps() const { return steps_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // First moment of a parameter (created on first use): WID's gradient surgery edits it.
  at::Tensor& exp_avg(size_t group, size_t index);

  TensorMap state() const;  // "exp_avg/<name>", "exp_avg_sq/<name>", "step"
  void load_state(const TensorMap& state, const std::string& source);

 private:
  struct Moments {
    at::Tensor exp_avg, exp_avg_sq;
  };
  std::vector<ParamGroup> groups_;
  AdamOptions options_;
  std::vector<std::vector<Moments>> moments_;
  int64_t steps_ = 0;
};

// HF get_linear_schedule_with_warmup: step / warmup, then linear decay to 0 at `total`.
double linear_schedule(int64_t step, int64_t warmup, int64_t total);

// Biases and LayerNorm parameters: BERT trains them without weight decay.
bool is_norm_or_bias(const std::string& name);

// Parameters grouped as BERT trains them: weight decay on weights, none on biases and LayerNorm.
std::vector<ParamGroup> bert_param_groups(
    const std::vector<std::pair<std::string, at::Tensor>>& named, double lr, double weight_decay);

}  // namespace slimbert

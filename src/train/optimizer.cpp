#include "slimbert/train/optimizer.h"

#include <ATen/ATen.h>

#include <cmath>

#include "slimbert/core/error.h"

namespace slimbert {

AdamW::AdamW(std::vector<ParamGroup> groups, AdamOptions options)
    : groups_(std::move(groups)), options_(options) {
  for (const auto& g : groups_) {
    if (g.names.size() != g.params.size())
      throw Error(cat("parameter group '", g.name, "': ", g.names.size(), " names for ",
                      g.params.size(), " parameters"));
    moments_.emplace_back(g.params.size());
  }
}

at::Tensor& AdamW::exp_avg(size_t group, size_t index) {
  Moments& m = moments_.at(group).at(index);
  if (!m.exp_avg.defined()) {
    m.exp_avg = at::zeros_like(groups_[group].params[index]);
    m.exp_avg_sq = at::zeros_like(groups_[group].params[index]);
  }
  return m.exp_avg;
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) p.mutable_grad().zero_();
}

void AdamW::step(double lr_scale) {
  at::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const bool torch_style = options_.variant == AdamVariant::kTorch;
  const double correction1 = torch_style ? 1.0 - std::pow(b1, static_cast<double>(steps_)) : 1.0;
  const double correction2 = torch_style ? 1.0 - std::pow(b2, static_cast<double>(steps_)) : 1.0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    const double lr = g.lr * lr_scale;
    for (size_t i = 0; i < g.params.size(); ++i) {
      at::Tensor p = g.params[i];
      if (!p.grad().defined()) continue;
      const at::Tensor& grad = p.grad();
      at::Tensor& m = exp_avg(gi, i);
      at::Tensor& v = moments_[gi][i].exp_avg_sq;
      if (torch_style && g.weight_decay != 0) p.mul_(1.0 - lr * g.weight_decay);
      m.mul_(b1).add_(grad, 1.0 - b1);
      v.mul_(b2).addcmul_(grad, grad, 1.0 - b2);
      // torch: p -= lr / c1 * m / (sqrt(v) / sqrt(c2) + eps); BERT: c1 = c2 = 1.
      at::Tensor denom = (v.sqrt() / std::sqrt(correction2)).add_(options_.eps);
      p.addcdiv_(m, denom, -lr / correction1);
      if (!torch_style && g.weight_decay != 0) p.add_(p, -lr * g.weight_decay);
    }
  }
}

TensorMap AdamW::state() const {
  TensorMap out;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const Moments& m = moments_[gi][i];
      if (!m.exp_avg.defined()) continue;
      out["exp_avg/" + groups_[gi].names[i]] = m.exp_avg;
      out["exp_avg_sq/" + groups_[gi].names[i]] = m.exp_avg_sq;
    }
  out["step"] = at::tensor({steps_}, at::kLong);
  return out;
}

void AdamW::load_state(const TensorMap& state, const std::string& source) {
  auto it = state.find("step");
  if (it == state.end()) fail(source, ": optimizer state has no 'step'");
  if (it->second.numel() != 1 || at::isFloatingType(it->second.scalar_type()) ||
      it->second.item<int64_t>() < 0)
    fail(source, ": optimizer 'step' must be one non-negative integer, got ",
         at::toString(it->second.scalar_type()), " ", it->second.sizes());
  steps_ = it->second.item<int64_t>();
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const std::string& name = groups_[gi].names[i];
      auto m = state.find("exp_avg/" + name), v = state.find("exp_avg_sq/" + name);
      if (m == state.end() || v == state.end()) {
        if (steps_ > 0 && groups_[gi].params[i].requires_grad())
          fail(source, ": optimizer state lacks the moments of '", name, "'");
        continue;
      }
      for (const at::Tensor& moment : {m->second, v->second}) {
        if (moment.sizes() != groups_[gi].params[i].sizes())
          fail(source, ": moments of '", name, "' have shape ", moment.sizes(), ", parameter has ",
               groups_[gi].params[i].sizes());
        if (!at::isFloatingType(moment.scalar_type()))
          fail(source, ": moments of '", name, "' must be floating-point, got ",
               at::toString(moment.scalar_type()));
      }
      // On the parameter's device and in its precision (a float64 run's moments stay float64).
      const at::TensorOptions like = groups_[gi].params[i].options();
      moments_[gi][i] = {m->second.to(like, /*non_blocking=*/false, /*copy=*/true),
                         v->second.to(like, /*non_blocking=*/false, /*copy=*/true)};
    }
}

double linear_schedule(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup)
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  return std::max(0.0, static_cast<double>(total - step) /
                           static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

bool is_norm_or_bias(const std::string& name) {
  return name.find("LayerNorm") != std::string::npos ||
         (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0);
}

std::vector<ParamGroup> bert_param_groups(
    const std::vector<std::pair<std::string, at::Tensor>>& named, double lr, double weight_decay) {
  ParamGroup decay{"decay", {}, {}, lr, weight_decay};
  ParamGroup no_decay{"no_decay", {}, {}, lr, 0.0};
  for (const auto& [name, p] : named) {
    ParamGroup& g = is_norm_or_bias(name) ? no_decay : decay;
    g.names.push_back(name);
    g.params.push_back(p);
  }
  return {decay, no_decay};
}

}  // namespace slimbert

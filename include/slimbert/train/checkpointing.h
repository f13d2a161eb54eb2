// Training checkpoints shared by every trainer: an HF checkpoint directory plus
// trainer_state/ (optimizer moments, the global RNG, and the trainer's cursor as JSON),
// written atomically; the newest `keep_last` are kept under OUT/checkpoints/step-NNNNNNN.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "slimbert/io/checkpoint.h"
#include "slimbert/train/optimizer.h"

namespace slimbert {

std::string checkpoint_dir(const std::string& out_dir, int64_t step);
// Newest complete checkpoint under OUT/checkpoints ("" if none).
std::string latest_checkpoint(const std::string& out_dir);

void save_training_checkpoint(const std::string& out_dir, int64_t step, const BertConfig& config,
                              const torch::nn::Module& model, const Tokenizer& tokenizer,
                              const AdamW& optimizer, const nlohmann::json& cursor,
                              int64_t keep_last);

// Restores the optimizer state and the global RNG from `dir`; returns the cursor JSON.
// The caller loads the model weights from `dir` (an ordinary HF checkpoint).
nlohmann::json load_training_state(const std::string& dir, AdamW& optimizer);

// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
double clip_grad_norm(torch::nn::Module& module, double max_norm);

std::vector<std::pair<std::string, at::Tensor>> named_parameters(torch::nn::Module& module);

// Fails unless `dir` can be created and written (before hours of training, not after).
void require_writable_dir(const std::string& dir);

}  // namespace slimbert

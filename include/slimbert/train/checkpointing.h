// Training checkpoints shared by every trainer: an HF checkpoint directory plus
// trainer_state/ (optimizer moments, the global RNG, and the trainer's cursor as JSON),
// written atomically; the newest `keep_last` are kept under OUT/checkpoints/step-NNNNNNN.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "slimbert/io/checkpoint.h"
#include "slimbert/train/optimizer.h"
#include "slimbert/train/state.h"

namespace slimbert {

std::string checkpoint_dir(const std::string& out_dir, int64_t step);
// Newest complete checkpoint under OUT/checkpoints ("" if none).
std::string latest_checkpoint(const std::string& out_dir);

// `extra`: the trainer's own fields of state.json (an object).
void save_training_checkpoint(const std::string& out_dir, const TrainerCursor& cursor,
                              const RunSignature& run, const nlohmann::json& extra,
                              const BertConfig& config, const torch::nn::Module& model,
                              const Tokenizer& tokenizer, const AdamW& optimizer,
                              int64_t keep_last);

struct ResumedState {
  TrainerCursor cursor;
  nlohmann::json state;  // the whole state.json, for the trainer's own fields
};

// Checks `dir`'s state.json for a resume of `run` within `limits` (read_trainer_state), then
// restores the optimizer state and the global RNG. Notes (changed adjustable options) go to
// stderr. The caller loads the model weights from `dir` (an ordinary HF checkpoint). Floating
// state is read as `float_type`, the training precision.
ResumedState load_training_state(const std::string& dir, const RunSignature& run,
                                 const StateLimits& limits, AdamW& optimizer,
                                 at::ScalarType float_type = at::kFloat);

// Removes what runs killed in the middle of a write left in OUT and OUT/checkpoints: staging
// directories and temporary files of processes that no longer exist. Says what it removed.
void remove_stale_checkpoint_staging(const std::string& out_dir);

// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
double clip_grad_norm(torch::nn::Module& module, double max_norm);

std::vector<std::pair<std::string, at::Tensor>> named_parameters(torch::nn::Module& module);
// The precision a model trains in: that of its floating-point parameters (float32 if none).
at::ScalarType parameter_dtype(const torch::nn::Module& module);

// Fails unless `dir` can be created and written (before hours of training, not after).
void require_writable_dir(const std::string& dir);

}  // namespace slimbert

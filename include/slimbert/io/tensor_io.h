// safetensors <-> at::Tensor, and the weight files of a checkpoint directory
// (model.safetensors, or shards listed in model.safetensors.index.json).
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <string>

#include "slimbert/io/safetensors.h"
#include "slimbert/model/family.h"

namespace slimbert {

using TensorMap = std::map<std::string, at::Tensor>;

// Loads every tensor; floating-point tensors (F16, BF16, F32, F64) become `float_type` (float32
// unless a float64 training run resumes), integers keep their type.
TensorMap load_safetensors(const std::string& path, at::ScalarType float_type = at::kFloat);
// A state dict written by torch.save (zip format; transformers' pytorch_model.bin), floats as
// float32, through libtorch's unpickler; errors name the file.
TensorMap load_torch_save(const std::string& path);
// Writes contiguous CPU copies, every floating-point tensor stored as `float_dtype` (F16 or BF16
// halve the file; a float64 model's final weights are stored as F32, its checkpoints as F64).
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      DType float_dtype = DType::F32,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The safetensors dtype of a libtorch scalar type; fails naming tensor `name` for types the
// format cannot hold.
DType from_scalar(at::ScalarType s, const std::string& name);

// Weights of a checkpoint directory, sharded or not, under slimbert's (BERT's) names whatever the
// family config.json names (model/family.h).
TensorMap load_weights(const std::string& dir, at::ScalarType float_type = at::kFloat);
// The same tensors under the names the family's HF classes use, and back.
TensorMap to_family_names(TensorMap tensors, Family family);
TensorMap from_family_names(TensorMap tensors, Family family);
// Writes DIR/model.safetensors, or shards of at most `max_shard_bytes` plus the index when the
// weights are larger (0 = never shard).
void save_weights(const std::string& dir, const TensorMap& tensors, DType float_dtype = DType::F32,
                  size_t max_shard_bytes = 0);

// The tensor stored under `name` in a base-model or a head-model file ("bert." + name); null
// when neither holds it.
const at::Tensor* find_weight(const TensorMap& weights, const std::string& name);

}  // namespace slimbert

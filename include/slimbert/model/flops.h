// Parameter counts and FLOPs: what `info`, `bench`, reports and MFU figures use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "slimbert/io/tensor_io.h"
#include "slimbert/model/bert.h"
#include "slimbert/model/config.h"

namespace slimbert {

struct ComponentCount {
  std::string component;  // embeddings, attention, ffn, pooler, mlm_head, classifier
  int64_t parameters = 0;
};

// Groups the tensors of a checkpoint by component (the tied decoder counts once, in embeddings).
std::vector<ComponentCount> count_parameters(const TensorMap& weights);

// Forward FLOPs (2 per multiply-add) of embeddings + encoder for one sequence of `seq` tokens.
double encoder_flops(const BertConfig& config, int64_t seq, const SubNet& subnet = {});
// The MLM head (transform + vocabulary projection) at `positions` positions.
double mlm_head_flops(const BertConfig& config, int64_t positions);

}  // namespace slimbert

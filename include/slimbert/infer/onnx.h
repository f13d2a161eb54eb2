// ONNX export: a BERT encoder (any layer shapes, pruned heads included) and its classifier as an
// ONNX graph that ONNX Runtime, Triton and TEI's ONNX backend run. Written with the ONNX protobuf
// schema (Debian's libonnx-dev); no Python.
#pragma once

#include <cstdint>
#include <string>

#include "slimbert/io/tensor_io.h"
#include "slimbert/model/config.h"

namespace slimbert {

struct OnnxOptions {
  int64_t opset = 14;  // 13 to 21; from 17 on, LayerNormalization is one operator
  // Every weight matrix as ONNX Runtime's com.microsoft.DynamicQuantizeMatMul: int8 weights with
  // one scale per output column, activations quantized at run time.
  bool int8 = false;
};

// Writes `weights` (HF names, base-model or head-model) as an ONNX model at `path` (atomically).
// Inputs input_ids, attention_mask, token_type_ids (int64, [batch, sequence]); outputs
// last_hidden_state [batch, sequence, hidden] and, with a classifier, logits [batch, labels].
void write_onnx(const BertConfig& config, const TensorMap& weights, const OnnxOptions& options,
                const std::string& path);

}  // namespace slimbert

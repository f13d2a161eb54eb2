// Structural re-parameterisation (ALGORITHMS.md §A.9): kept compactor rows/columns multiplied
// into the teacher's weights give a dense HF BERT.
#include <ATen/ATen.h>

#include <cmath>

#include "slimbert/core/error.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/model/history.h"
#include "slimbert/model/names.h"
#include "slimbert/wid/wid.h"

namespace slimbert {
namespace {

at::Tensor kept_index(const at::Tensor& kept) {
  return kept.nonzero().view(-1);
}

}  // namespace

std::pair<BertConfig, BertForMaskedLM> merge_student(const WidModelImpl& model,
                                                     const WidMasks& masks, WidStrategy strategy) {
  at::NoGradGuard no_grad;
  const BertConfig& t = model.config();
  if (!masks.active()) fail("WID merge: no masks yet (pruning has not started)");
  const at::Tensor ih = kept_index(masks.residual);
  const int64_t hidden = ih.size(0);
  BertConfig config = student_config(t, hidden, strategy);
  add_history(config, "wid student");
  const int64_t heads = config.num_attention_heads, head_size = config.attention_head_size();

  TensorMap w;
  // Embedding tables: E' = E C_E[I_h, :]^T.
  const at::Tensor ce = model.param("compactors.embeddings").index_select(0, ih);
  for (const char* table :
       {hf::kWordEmbeddings, hf::kPositionEmbeddings, hf::kTokenTypeEmbeddings}) {
    const std::string name = hf::encoder(hf::path({table, "weight"}));
    w[name] = model.param(name).mm(ce.t());
  }
  auto vector = [&](const std::string& name, const at::Tensor& idx) {
    w[name] = model.param(name).index_select(0, idx);
  };
  // W' = R[I_out, :] W L[:, I_in], b' = (R b)[I_out].
  auto linear = [&](const std::string& prefix, const at::Tensor& in, const at::Tensor& out,
                    double scale = 1.0) {
    const at::Tensor r = model.compactor_out(prefix).index_select(0, out);
    const at::Tensor l = model.compactor_in(prefix).index_select(1, in);
    w[prefix + ".weight"] = r.mm(model.param(prefix + ".weight")).mm(l).mul_(scale);
    w[prefix + ".bias"] = r.mv(model.param(prefix + ".bias")).mul_(scale);
  };
  auto norm = [&](const std::string& module, const at::Tensor& idx) {
    vector(module + ".weight", idx);
    vector(module + ".bias", idx);
  };
  norm(hf::encoder(hf::kEmbeddingNorm), ih);
  for (int64_t l = 0; l < t.num_hidden_layers; ++l) {
    auto in_layer = [&](const char* module) { return hf::encoder_layer(l, module); };
    const at::Tensor io = kept_index(masks.attention[static_cast<size_t>(l)]);
    const at::Tensor iff = kept_index(masks.ffn[static_cast<size_t>(l)]);
    if (io.size(0) != heads * head_size || iff.size(0) != config.intermediate_size)
      fail("WID merge: layer ", l, " keeps ", io.size(0), " attention and ", iff.size(0),
           " FFN dims, the student shape needs ", heads * head_size, " and ",
           config.intermediate_size, " (the schedule has not reached its target)");
    // Training scored with 1/sqrt(teacher head size); the student divides by sqrt(head_size).
    const double q_scale =
        std::sqrt(static_cast<double>(head_size) / static_cast<double>(t.attention_head_size()));
    linear(in_layer(hf::kQuery), ih, io, q_scale);
    linear(in_layer(hf::kKey), ih, io);
    linear(in_layer(hf::kValue), ih, io);
    linear(in_layer(hf::kAttentionOutput), io, ih);
    linear(in_layer(hf::kIntermediate), ih, iff);
    linear(in_layer(hf::kOutput), iff, ih);
    norm(in_layer(hf::kAttentionNorm), ih);
    norm(in_layer(hf::kOutputNorm), ih);
  }
  linear(hf::kMlmTransform, ih, ih);
  norm(hf::kMlmNorm, ih);
  w[hf::kMlmBias] = model.param(hf::kMlmBias).clone();

  BertForMaskedLM student(config);
  load_state(*student, w, "WID merge");
  student->eval();
  return {config, student};
}

void zero_removed(WidModelImpl& model, const WidMasks& masks) {
  at::NoGradGuard no_grad;
  for (auto& c : model.compactors) c.weight.masked_fill_(removed_entries(c, masks), 0.0);
}

}  // namespace slimbert

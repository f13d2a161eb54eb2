// Student shapes a WID run can reach, and resolving --target-hidden / --target-params / presets.
#include <cmath>
#include <limits>

#include "slimbert/core/error.h"
#include "slimbert/wid/wid.h"

namespace slimbert {

WidStrategy parse_wid_strategy(const std::string& name) {
  if (name == "dim") return WidStrategy::kDim;
  if (name == "head") return WidStrategy::kHead;
  fail("unknown WID strategy '", name, "' (expected dim or head)");
}

ResidualScore parse_residual_score(const std::string& name) {
  if (name == "reference") return ResidualScore::kReference;
  if (name == "all") return ResidualScore::kAll;
  fail("unknown residual scoring '", name, "' (expected reference or all)");
}

MaskScores parse_mask_scores(const std::string& name) {
  if (name == "compactors") return MaskScores::kCompactors;
  if (name == "weights") return MaskScores::kWeights;
  fail("unknown mask scores '", name, "' (expected compactors or weights)");
}

std::string to_string(WidStrategy s) {
  return s == WidStrategy::kDim ? "dim" : "head";
}
std::string to_string(ResidualScore s) {
  return s == ResidualScore::kReference ? "reference" : "all";
}
std::string to_string(MaskScores s) {
  return s == MaskScores::kCompactors ? "compactors" : "weights";
}

namespace {

// WID needs the standard BERT layout: every layer's heads tile the hidden size.
void require_standard_layout(const BertConfig& t) {
  if (!t.pruned_heads.empty())
    fail("WID needs a teacher without pruned heads (config.json has pruned_heads)");
  if (t.num_attention_heads * t.attention_head_size() != t.hidden_size)
    fail("WID needs heads x head size = hidden size; the teacher has ", t.num_attention_heads,
         " x ", t.attention_head_size(), " != ", t.hidden_size);
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s;
}

}  // namespace

std::vector<int64_t> valid_target_hiddens(const BertConfig& t, WidStrategy strategy) {
  require_standard_layout(t);
  const int64_t unit = strategy == WidStrategy::kDim ? t.num_attention_heads     // one dim per head
                                                     : t.attention_head_size();  // one head
  std::vector<int64_t> out;
  for (int64_t h = t.hidden_size - unit; h > 0; h -= unit) out.push_back(h);
  return out;
}

BertConfig student_config(const BertConfig& t, int64_t hidden, WidStrategy strategy) {
  require_standard_layout(t);
  BertConfig s = t;
  s.hidden_size = hidden;
  s.intermediate_size = t.intermediate_size * hidden / t.hidden_size;
  s.num_attention_heads =
      strategy == WidStrategy::kDim ? t.num_attention_heads : hidden / t.attention_head_size();
  s.attention_head_size_override.reset();  // head size = hidden / heads in both strategies
  return s;
}

int64_t encoder_parameters(const BertConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  int64_t n = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * H + 2 * H;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const int64_t A = c.heads_in_layer(l) * c.attention_head_size();
    n += 3 * (H * A + A) + (A * H + H) + 2 * H;  // Q, K, V, output, LayerNorm
    n += (H * I + I) + (I * H + H) + 2 * H;      // FFN, LayerNorm
  }
  return n;
}

int64_t resolve_target(const BertConfig& t, WidStrategy strategy, const WidTarget& target) {
  const std::vector<int64_t> valid = valid_target_hiddens(t, strategy);
  if (valid.empty())
    fail("the teacher (hidden ", t.hidden_size, ") cannot be narrowed with the ",
         to_string(strategy), " strategy");
  const int chosen = (target.hidden > 0) + (target.parameters > 0) + !target.preset.empty();
  if (chosen != 1) fail("give exactly one of --target-hidden, --target-params, --preset");
  const std::string valid_list =
      "valid hidden sizes for the " + to_string(strategy) + " strategy: " + join(valid);
  if (target.hidden > 0) {
    if (target.hidden >= t.hidden_size)
      fail("--target-hidden ", target.hidden, " is not smaller than the teacher's ", t.hidden_size,
           "; ", valid_list);
    for (int64_t v : valid)
      if (v == target.hidden) return v;
    fail("--target-hidden ", target.hidden, " is not reachable; ", valid_list);
  }
  if (target.parameters > 0) {
    const int64_t teacher = encoder_parameters(t);
    if (target.parameters >= teacher)
      fail("--target-params ", target.parameters, " is not smaller than the teacher's ", teacher,
           " encoder parameters");
    for (int64_t v : valid)  // descending: the first that fits is the largest
      if (encoder_parameters(student_config(t, v, strategy)) <= target.parameters) return v;
    fail("--target-params ", target.parameters, " is below the smallest student (hidden ",
         valid.back(), ": ", encoder_parameters(student_config(t, valid.back(), strategy)),
         " parameters); ", valid_list);
  }
  // Presets: BERT-base's WID55 (hidden 516 of 768) and WID11 (192 of 768), scaled to the teacher
  // and rounded to the nearest reachable size (ties to the larger).
  double fraction = 0;
  if (target.preset == "wid55")
    fraction = 516.0 / 768.0;
  else if (target.preset == "wid11")
    fraction = 192.0 / 768.0;
  else
    fail("unknown preset '", target.preset, "' (expected wid55 or wid11)");
  const double want = fraction * static_cast<double>(t.hidden_size);
  int64_t best = valid.front();
  for (int64_t v : valid)
    if (std::abs(static_cast<double>(v) - want) < std::abs(static_cast<double>(best) - want))
      best = v;
  return best;
}

}  // namespace slimbert

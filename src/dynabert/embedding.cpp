// Embedding models in DynaBERT: sentence vectors in place of logits, pairs in place of labels.
#include <ATen/ATen.h>

#include <optional>

#include "slimbert/core/error.h"
#include "slimbert/data/metrics.h"
#include "slimbert/dynabert/dynabert.h"
#include "slimbert/infer/sentence_transformers.h"
#include "slimbert/io/tensor_io.h"

namespace slimbert {

SentenceHead sentence_head_of(const std::string& model_dir) {
  const infer::SentenceTransformer st = infer::read_sentence_transformer(model_dir);
  return {st.pooling.value_or(infer::Pooling::kCls), st.normalize};
}

bool has_classifier_weights(const std::string& model_dir) {
  return load_weights(model_dir).count("classifier.weight") > 0;
}

at::Tensor sentence_vectors(const Encoded& encoded, const Batch& batch, const SentenceHead& head) {
  const at::Tensor v = infer::pool(encoded.last(), batch, head.pooling);
  return head.normalize ? infer::normalize(v) : v;
}

EncodedPairs encode_pairs(const Tokenizer& tokenizer, const TaskSpec& spec, const TaskData& data,
                          int64_t limit, bool need_labels) {
  EncodedPairs out;
  out.source = data.source;
  for (const Example& e : data.examples) {
    if (!e.text_b)
      fail(data.source, ":", e.line,
           ": an embedding model is scored on text pairs (two texts and a label per row)");
    if (need_labels) {
      if (e.label.empty()) fail(data.source, ":", e.line, ": unlabelled");
      // A label that states a number ranks by it (class indices order the label names as
      // strings: "10" before "9"); a class name by its index.
      if (const auto v = label_number(e.label))
        out.gold.push_back(*v);
      else if (spec.regression)
        fail(data.source, ":", e.line, ": label '", e.label, "' is not a number");
      else
        out.gold.push_back(static_cast<double>(spec.label_index(e, data.source)));
    }
    out.a.push_back(infer::encode_within(tokenizer, e.text_a, std::nullopt, limit, true).encoding);
    out.b.push_back(infer::encode_within(tokenizer, *e.text_b, std::nullopt, limit, true).encoding);
  }
  if (need_labels && out.gold.size() < 2)
    fail(data.source, ": fewer than 2 labelled pairs to rank");
  return out;
}

double pair_spearman(BertModel& model, const EncodedPairs& pairs, const SubNet& subnet,
                     const SentenceHead& head, int64_t pad_id, int64_t batch_size) {
  const bool was_training = model->is_training();
  model->eval();
  at::NoGradGuard no_grad;
  auto vectors = [&](const std::vector<Encoding>& texts) {
    return predict_logits(
        [&](const Batch& batch) {
          return sentence_vectors(model->forward(batch, subnet), batch, head);
        },
        texts, pad_id, batch_size);
  };
  const at::Tensor c =
      at::cosine_similarity(vectors(pairs.a), vectors(pairs.b), 1, 1e-12).to(at::kDouble);
  if (was_training) model->train();
  return spearman(std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel()),
                  pairs.gold);
}

}  // namespace slimbert

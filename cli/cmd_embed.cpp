#include <ATen/ATen.h>

#include <iostream>
#include <numeric>

#include "commands.h"
#include "common.h"
#include "slimbert/io/checkpoint.h"

namespace slimbert::cli {
namespace {

struct RunOpts {
  std::string dir, output = "-";
  InputOptions input;
  int64_t batch_size = 32, max_length = 0;
  bool no_truncate = false;
  double width = 1.0, depth = 1.0;
  RuntimeConfig runtime;
};

void add_run_options(CLI::App* cmd, RunOpts* o) {
  cmd->add_option("dir", o->dir, "checkpoint directory")->required();
  add_input_options(cmd, &o->input);
  cmd->add_option("--output,-o", o->output, "output JSONL file ('-' = standard output)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "sequences per forward pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-length", o->max_length,
                  "truncate inputs to this many tokens (0 = model limit)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_flag("--no-truncate", o->no_truncate,
                "fail on inputs longer than the limit instead of truncating");
  cmd->add_option("--width", o->width, "sub-network width multiplier (DynaBERT)")
      ->capture_default_str();
  cmd->add_option("--depth", o->depth, "sub-network depth multiplier (DynaBERT)")
      ->capture_default_str();
  add_runtime_options(cmd, &o->runtime);
}

std::vector<float> row(const at::Tensor& t) {
  at::Tensor c = t.cpu().contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Tokenizes the input and calls `emit(encodings, begin, end, batch)` per batch, in input order.
template <typename Emit>
void run_batches(const RunOpts& o, const BertConfig& config, const Tokenizer& tokenizer,
                 const std::vector<Record>& records, Emit emit) {
  const std::string source = o.input.path == "-" ? "<stdin>" : o.input.path;
  const auto encodings = encode_records(
      tokenizer, records, max_input_length(config, tokenizer, o.max_length), o.no_truncate, source);
  at::NoGradGuard no_grad;
  for (size_t b = 0; b < encodings.size(); b += static_cast<size_t>(o.batch_size)) {
    const size_t e = std::min(encodings.size(), b + static_cast<size_t>(o.batch_size));
    std::vector<size_t> rows(e - b);
    std::iota(rows.begin(), rows.end(), b);
    emit(b, e, collate(encodings, rows, tokenizer.pad_id()));
  }
}

}  // namespace

void add_embed_and_predict(CLI::App& app) {
  auto eo = std::make_shared<RunOpts>();
  auto pooling = std::make_shared<std::string>("both");
  auto* embed =
      app.add_subcommand("embed", "sentence embeddings (CLS and mean of the last layer) as JSONL");
  add_run_options(embed, eo.get());
  embed->add_option("--pooling", *pooling, "cls, mean or both")
      ->check(CLI::IsMember({"cls", "mean", "both"}))
      ->capture_default_str();
  embed->callback([eo, pooling] {
    configure_runtime(eo->runtime);
    const Tokenizer tokenizer = Tokenizer::from_dir(eo->dir);
    const auto records = read_records(eo->input);
    BertModel model = load_bert_model(eo->dir, /*with_pooler=*/false);
    Output out(eo->output);
    run_batches(
        *eo, model->config(), tokenizer, records, [&](size_t b, size_t e, const Batch& batch) {
          const at::Tensor h =
              model->forward(batch, SubNet{eo->width, eo->depth}).last();             // (B, T, H)
          const at::Tensor mask = batch.attention_mask.to(at::kFloat).unsqueeze(-1);  // (B, T, 1)
          const at::Tensor mean = (h * mask).sum(1) / mask.sum(1);                    // (B, H)
          for (size_t i = b; i < e; ++i) {
            const int64_t k = static_cast<int64_t>(i - b);
            nlohmann::json j;
            j["line"] = records[i].line;
            if (!records[i].id.is_null()) j["id"] = records[i].id;
            if (*pooling != "mean") j["cls"] = row(h[k][0]);
            if (*pooling != "cls") j["mean"] = row(mean[k]);
            out.stream() << j.dump() << "\n";
          }
        });
    out.commit();
  });

  auto po = std::make_shared<RunOpts>();
  auto* predict = app.add_subcommand(
      "predict", "label probabilities from a classification checkpoint as JSONL");
  add_run_options(predict, po.get());
  predict->callback([po] {
    configure_runtime(po->runtime);
    const Tokenizer tokenizer = Tokenizer::from_dir(po->dir);
    const auto records = read_records(po->input);
    BertForSequenceClassification model = load_classifier(po->dir);
    const BertConfig& config = model->bert->config();
    Output out(po->output);
    run_batches(*po, config, tokenizer, records, [&](size_t b, size_t e, const Batch& batch) {
      const at::Tensor logits =
          model->forward(batch, SubNet{po->width, po->depth}).cpu();  // (B, labels)
      const bool regression = config.is_regression();
      const bool multi = config.problem_type == "multi_label_classification";
      const at::Tensor probs = multi ? at::sigmoid(logits) : at::softmax(logits, -1);
      for (size_t i = b; i < e; ++i) {
        const int64_t k = static_cast<int64_t>(i - b);
        nlohmann::json j;
        j["line"] = records[i].line;
        if (!records[i].id.is_null()) j["id"] = records[i].id;
        if (regression) {
          j["score"] = logits[k][0].item<float>();
        } else {
          nlohmann::json p = nlohmann::json::object();
          for (int64_t c = 0; c < config.num_labels(); ++c)
            p[config.label_name(c)] = probs[k][c].item<float>();
          j["label"] = config.label_name(probs[k].argmax().item<int64_t>());
          j["probs"] = p;
        }
        out.stream() << j.dump() << "\n";
      }
    });
    out.commit();
  });
}

}  // namespace slimbert::cli

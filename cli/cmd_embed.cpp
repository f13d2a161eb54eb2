#include <ATen/ATen.h>

#include <algorithm>
#include <iostream>
#include <numeric>

#include "commands.h"
#include "common.h"
#include "slimbert/infer/run.h"
#include "slimbert/infer/sentence_transformers.h"
#include "slimbert/io/checkpoint.h"

namespace slimbert::cli {
namespace {

struct RunOpts {
  std::string dir, output = "-";
  InputOptions input;
  int64_t batch_size = 32, max_length = 0;
  bool no_truncate = false;
  double width = 1.0, depth = 1.0;
  std::string prompt;          // put before every text (a sentence-transformers prompt)
  bool include_prompt = true;  // false: pooling leaves the prompt's tokens out
  EngineOptions engine;
  RuntimeConfig runtime;
};

void add_run_options(CLI::App* cmd, RunOpts* o) {
  cmd->add_option("dir", o->dir, "checkpoint directory")->required();
  add_input_options(cmd, &o->input);
  cmd->add_option("--output,-o", o->output, "output JSONL file ('-' = standard output)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "sequences per forward pass")
      ->capture_default_str()
      ->check(positive_count());
  cmd->add_option("--max-length", o->max_length,
                  "truncate inputs to this many tokens (0 = model limit)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_flag("--no-truncate", o->no_truncate,
                "fail on inputs longer than the limit instead of truncating");
  cmd->add_option("--width", o->width, "sub-network width multiplier (DynaBERT)")
      ->capture_default_str();
  cmd->add_option("--depth", o->depth, "sub-network depth multiplier (DynaBERT)")
      ->capture_default_str();
  add_engine_options(cmd, &o->engine);
  add_runtime_options(cmd, &o->runtime);
}

std::vector<float> row(const at::Tensor& t) {
  at::Tensor c = t.cpu().contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Reads the input a chunk at a time, runs each chunk in batches of similar length and writes one
// JSON line per record, in input order, before reading on (a pipe gets answers as it goes):
// `fields(outputs, i, json)` adds the fields of the chunk's row i; `wants` are the outputs it reads
// beyond the logits.
template <typename Fields>
void run_records(const RunOpts& o, const infer::InferenceModel& model, const infer::RowWants& wants,
                 Fields fields) {
  const Tokenizer tokenizer = Tokenizer::from_dir(o.dir);
  check_tokenizer_fits(tokenizer, model.config(), o.dir);
  RecordReader reader(o.input);
  const int64_t max_length = infer::max_input_length(model.config(), tokenizer, o.max_length);
  const SubNet subnet{o.width, o.depth};
  Output output(o.output);
  // A few batches per chunk: sorting by length within it still saves most of the padding.
  const size_t chunk_size = static_cast<size_t>(o.batch_size) * 4;
  const int64_t pool_from = infer::prompt_pool_from(tokenizer, o.prompt, o.include_prompt);
  for (auto records = reader.next(chunk_size); !records.empty();
       records = reader.next(chunk_size)) {
    if (!o.prompt.empty())
      for (Record& r : records) r.text = o.prompt + r.text;
    auto encodings = encode_records(tokenizer, records, max_length, o.no_truncate, reader.source());
    for (Encoding& e : encodings) e.pool_from = pool_from;
    const infer::RowOutputs out =
        infer::run_rows(model, encodings, subnet, tokenizer.pad_id(), {o.batch_size, 0}, wants);
    for (size_t i = 0; i < records.size(); ++i) {
      nlohmann::json j;
      j["line"] = records[i].line;
      if (!records[i].id.is_null()) j["id"] = records[i].id;
      fields(out, static_cast<int64_t>(i), j);
      output.stream() << j.dump() << "\n";
    }
    output.flush();
  }
  output.commit();
}

}  // namespace

void add_embed_and_predict(CLI::App& app) {
  auto eo = std::make_shared<RunOpts>();
  auto pooling = std::make_shared<std::string>();
  auto normalize = std::make_shared<bool>(false);
  auto* embed = app.add_subcommand(
      "embed",
      "sentence embeddings as JSONL: a sentence-transformers model's own pooling, normalisation "
      "and length; otherwise CLS and mean of the last layer");
  add_run_options(embed, eo.get());
  embed
      ->add_option("--pooling", *pooling,
                   "cls, mean, max, lasttoken or both (cls and mean); default: the model's "
                   "sentence-transformers Pooling module, else both")
      ->check(CLI::IsMember({"cls", "mean", "max", "lasttoken", "both"}));
  embed->add_flag("--normalize", *normalize,
                  "unit-length vectors (on by default for a model with a Normalize module)");
  embed->callback([eo, pooling, normalize] {
    const infer::SentenceTransformer st = infer::read_sentence_transformer(eo->dir);
    std::vector<infer::Pooling> poolings;
    if (!pooling->empty() && *pooling != "both")
      poolings = {infer::parse_pooling(*pooling)};
    else if (pooling->empty() && st.pooling)
      poolings = {*st.pooling};
    else
      poolings = {infer::Pooling::kCls, infer::Pooling::kMean};
    const bool unit = *normalize || st.normalize;
    RunOpts o = *eo;
    if (o.max_length == 0 && st.max_seq_length) o.max_length = *st.max_seq_length;
    // As sentence-transformers' encode() does without a prompt of its own.
    if (st.default_prompt_name) o.prompt = st.prompts.at(*st.default_prompt_name);
    o.include_prompt = st.include_prompt;
    const auto model = load_inference_model(o.dir, o.runtime, o.engine, {o.width});
    infer::RowWants wants;
    wants.poolings = poolings;
    run_records(o, *model, wants, [&](const infer::RowOutputs& out, int64_t i, nlohmann::json& j) {
      for (infer::Pooling p : poolings) {
        const at::Tensor v = out.pooled(p)[i];
        j[infer::pooling_name(p)] = row(unit ? v / v.norm().clamp_min(1e-12) : v);
      }
    });
  });

  auto po = std::make_shared<RunOpts>();
  auto* predict = app.add_subcommand(
      "predict", "label probabilities from a classification checkpoint as JSONL");
  add_run_options(predict, po.get());
  predict->callback([po] {
    const auto model = load_inference_model(po->dir, po->runtime, po->engine, {po->width});
    if (!model->has_classifier())
      fail(po->dir, ": no classifier in this checkpoint (classifier.weight): fine-tune it first");
    const BertConfig& config = model->config();
    run_records(*po, *model, {}, [&](const infer::RowOutputs& out, int64_t i, nlohmann::json& j) {
      const at::Tensor logits = out.logits[i];
      if (config.is_sigmoid_cross_encoder()) {  // a reranker: relevance in (0, 1)
        j["score"] = infer::label_scores(config, logits, false)[0].item<float>();
        j["logit"] = logits[0].item<float>();
        return;
      }
      if (config.is_regression()) {
        j["score"] = logits[0].item<float>();
        return;
      }
      const at::Tensor probs = infer::label_scores(config, logits, false);
      nlohmann::json p = nlohmann::json::object();
      for (int64_t c = 0; c < config.num_labels(); ++c)
        p[config.label_name(c)] = probs[c].item<float>();
      j["label"] = config.label_name(probs.argmax().item<int64_t>());
      j["probs"] = p;
    });
  });
}

}  // namespace slimbert::cli

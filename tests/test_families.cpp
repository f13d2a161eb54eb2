// RoBERTa and XLM-RoBERTa: parity with an op-by-op reference of HF's modeling_roberta
// (tests/reference/modeling_roberta.py, run on the fixture models of tests/fixtures/families),
// the names and classes transformers expects in what slimbert saves, and every command end to
// end on tiny random models of both families with their tokenizer.json.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/infer/model.h"
#include "slimbert/infer/profile.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/io/safetensors.h"
#include "slimbert/io/tensor_io.h"
#include "slimbert/serve/server.h"
#include "test_util.h"

namespace slimbert {
namespace {

namespace fs = std::filesystem;
using test::max_diff;

constexpr double kTolerance = 1e-5;

class Family : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return test::fixture("families/" + GetParam()); }
  TensorMap golden() const { return load_safetensors(dir() + "/outputs.safetensors"); }
  Batch batch() const {
    const TensorMap g = golden();
    return Batch{g.at("input_ids"), g.at("token_type_ids"), g.at("attention_mask")};
  }
  // The tokenizer.json each family's fixture was made with.
  std::string tokenizer_json() const {
    return test::fixture(GetParam() == "roberta" ? "tokenizers/roberta-tiny.json"
                                                 : "tokenizers/xlmr-unigram.json");
  }
};

TEST_P(Family, HiddenStatesMlmAndClassifierLogitsMatchModelingRoberta) {
  const TensorMap g = golden();
  at::NoGradGuard no_grad;
  BertModel base = load_bert_model(dir());
  const Encoded enc = base->forward(batch());
  for (size_t i = 0; i < enc.hidden_states.size(); ++i)
    EXPECT_LE(max_diff(enc.hidden_states[i], g.at("hidden_states." + std::to_string(i))),
              kTolerance)
        << i;
  EXPECT_LE(max_diff(load_masked_lm(dir())->forward(batch()), g.at("mlm_logits")), kTolerance);
  EXPECT_LE(max_diff(load_classifier(dir())->forward(batch()), g.at("cls_logits")), kTolerance);
  // The inference runtime, fp32.
  const auto model = infer::InferenceModel::load(dir());
  const infer::Output out = model->forward(batch());
  EXPECT_LE(max_diff(out.last, g.at("last_hidden_state")), kTolerance);
  EXPECT_LE(max_diff(out.logits, g.at("cls_logits")), kTolerance);
}

TEST_P(Family, SavedFilesNameTheFamilysClassesAndParameters) {
  const auto config = read_json_file(dir() + "/config.json");
  EXPECT_EQ(config["model_type"], GetParam());
  const std::string prefix = GetParam() == "roberta" ? "Roberta" : "XLMRoberta";
  EXPECT_EQ(config["architectures"],
            nlohmann::json({prefix + "ForMaskedLM", prefix + "ForSequenceClassification"}));
  EXPECT_EQ(config["type_vocab_size"], 1);
  EXPECT_EQ(config["pad_token_id"], 1);
  EXPECT_EQ(config["max_position_embeddings"], 34);  // --max-positions 32, from padding_idx + 1
  std::set<std::string> names;
  for (const auto& [name, t] : load_safetensors(dir() + "/model.safetensors")) names.insert(name);
  for (const char* want : {"roberta.embeddings.word_embeddings.weight",
                           "roberta.embeddings.position_embeddings.weight",
                           "roberta.encoder.layer.1.output.LayerNorm.bias", "lm_head.dense.weight",
                           "lm_head.layer_norm.weight", "lm_head.bias", "classifier.dense.weight",
                           "classifier.out_proj.bias"})
    EXPECT_TRUE(names.count(want)) << want;
  for (const auto& n : names)
    EXPECT_TRUE(n.rfind("bert.", 0) != 0 && n.rfind("cls.", 0) != 0 && n.find("pooler") == n.npos)
        << n;
  EXPECT_TRUE(fs::exists(dir() + "/tokenizer.json"));
  EXPECT_FALSE(fs::exists(dir() + "/vocab.txt"));
}

TEST_P(Family, EveryCommandRunsEndToEnd) {
  test::TempDir tmp;
  auto ok = [](const std::string& args, const std::string& input = "") {
    test::CliResult r = test::run_cli(args, input);
    EXPECT_EQ(r.code, 0) << args << "\n" << r.err;
    return r;
  };
  const std::string model = tmp / "model";
  ok("init " + model + " --preset tiny --model-type " + GetParam() + " --tokenizer " +
     tokenizer_json() + " --labels 2 --max-positions 64 --seed 3");
  EXPECT_NE(ok("info " + model).out.find(GetParam()), std::string::npos);
  // tokenize: the tokenizer.json pipeline, with the family's special tokens.
  const std::string tokens = ok("tokenize " + model, "Hello world\n").out;
  EXPECT_NE(tokens.find("<s>"), std::string::npos) << tokens;
  EXPECT_NE(tokens.find("</s>"), std::string::npos) << tokens;

  // A small task: which of two words a sentence repeats.
  const std::string task = tmp / "task";
  fs::create_directories(task);
  for (const auto& [split, n] : {std::pair{"train", 96}, std::pair{"dev", 32}}) {
    std::string tsv = "sentence\tlabel\n";
    for (int i = 0; i < n; ++i)
      tsv += (i % 2 ? "red red red blue" : "blue blue blue red") + std::string("\t") +
             (i % 2 ? "red" : "blue") + "\n";
    write_file_atomic(task + "/" + split + ".tsv", tsv);
  }
  const std::string ft = tmp / "ft";
  ok("finetune --model " + model + " --task tsv --data " + task + " --out " + ft +
     " --epochs 1 --batch-size 16 --max-length 16 --lr 1e-3 --threads 1");
  const std::string teacher = ft + "/best";
  const auto config = read_json_file(teacher + "/config.json");
  EXPECT_EQ(config["model_type"], GetParam());
  ok("eval " + teacher + " --task tsv --data " + task + " --max-length 16 --threads 1");
  ok("predict " + teacher + " --threads 1", "red red red blue\n");
  ok("embed " + teacher + " --threads 1", "red red red blue\n");
  // Corpus shards, MLM pretraining and WID on the family's MLM head.
  std::string corpus;
  for (int d = 0; d < 20; ++d) {
    for (int i = 0; i < 30; ++i)
      corpus += (i % 3 ? "red " : "blue ") + std::to_string((i * d) % 11) + " ";
    corpus += "\n\n";
  }
  write_file_atomic(tmp / "corpus.txt", corpus);
  const std::string shards = tmp / "shards";
  ok("data shards " + (tmp / "corpus.txt") + " --tokenizer " + model + " --out " + shards +
     " --seq 16 --validation-fraction 0.25");
  ok("pretrain --init " + model + " --shards " + shards + " --out " + (tmp / "pt") +
     " --steps 2 --batch-size 4 --threads 1");
  ok("eval-mlm " + (tmp / "pt") + "/model --shards " + shards + " --batch-size 4 --threads 1");
  ok("wid --teacher " + model + " --corpus " + shards + " --out " + (tmp / "wid") +
     " --target-params 300000 --strategy head --steps 20 --w-step 1 --batch-size 4 --log-every 10"
     " --eval-every 20 --save-every 20 --threads 1");
  EXPECT_EQ(read_json_file((tmp / "wid") + "/student/config.json")["model_type"], GetParam());
  // compress: DynaBERT (DynaRoBERTa) end to end, exports of the family.
  const std::string out = tmp / "compressed";
  ok("compress --model " + teacher + " --task tsv --data " + task + " --out " + out +
     " --widths 1,0.5 --depths 1,0.5 --batch-size 16 --max-length 16 --lr 1e-3"
     " --rewire-examples 32 --latency-iters 2 --threads 1 --epochs 1");
  for (const auto& e : fs::directory_iterator(out + "/exports")) {
    const auto c = read_json_file(e.path().string() + "/config.json");
    EXPECT_EQ(c["model_type"], GetParam()) << e.path();
    EXPECT_TRUE(fs::exists(e.path() / "tokenizer.json")) << e.path();
  }
  ok("export-onnx " + teacher + " --out " + (tmp / "m.onnx"));

  // serve: the compressed model behind TEI's routes, its tokenizer.json behind /tokenize.
  const auto m = infer::InferenceModel::load(out + "/model");
  infer::ProfileOptions po;
  po.subnets = {{1.0, 1.0}, {0.5, 0.5}};
  po.fit = {{1, 8}, {1, 16}, {2, 8}, {2, 16}};
  po.held_out = {{1, 12}};
  po.iters = 2;
  serve::ServerOptions so;
  so.port = 0;
  so.quiet = true;
  serve::Server server(m, Tokenizer::from_dir(out + "/model"), infer::measure_profile(*m, po), so);
  const int port = server.bind();
  std::thread thread([&] { server.run(); });
  struct Stop {
    serve::Server& s;
    std::thread& t;
    ~Stop() {
      s.stop();
      t.join();
    }
  } stop{server, thread};
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(30, 0);
  auto post = [&](const char* path, const std::string& body) {
    auto r = c.Post(path, body, "application/json");
    EXPECT_TRUE(r) << path;
    EXPECT_EQ(r ? r->status : 0, 200) << path << ": " << (r ? r->body : "");
    return r ? nlohmann::json::parse(r->body) : nlohmann::json();
  };
  EXPECT_EQ(post("/embed", R"({"inputs": ["red red red blue", "blue"]})").size(), 2u);
  EXPECT_EQ(post("/predict", R"({"inputs": "red red red blue"})").size(), 2u);
  const auto toks = post("/tokenize", R"({"inputs": "red blue", "add_special_tokens": true})");
  ASSERT_EQ(toks.size(), 1u) << toks;
  EXPECT_EQ(toks[0].front()["text"], "<s>");
  EXPECT_EQ(toks[0].back()["text"], "</s>");
  std::vector<int64_t> ids;
  for (const auto& t : toks[0]) ids.push_back(t["id"].get<int64_t>());
  const auto text = post("/decode", nlohmann::json({{"ids", ids}}).dump());
  ASSERT_EQ(text.size(), 1u) << text;
  EXPECT_NE(text[0].get<std::string>().find("red blue"), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Families, Family, ::testing::Values("roberta", "xlm-roberta"),
                         [](const auto& info) {
                           return info.param == "roberta" ? std::string("Roberta")
                                                          : std::string("XlmRoberta");
                         });

}  // namespace
}  // namespace slimbert

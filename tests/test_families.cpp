// RoBERTa and XLM-RoBERTa: parity with an op-by-op reference of HF's modeling_roberta
// (tests/reference/modeling_roberta.py, run on the fixture models of tests/fixtures/families),
// the names and classes transformers expects in what slimbert saves, and every command end to
// end on tiny random models of both families with their tokenizer.json.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/data/batching.h"
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
  // TinyBERT's augmentation with the family's MLM head (one token type: no type 1 in the pair).
  ok("dynabert augment --mlm " + model + " --task tsv --data " + task + " --out " + (tmp / "aug") +
     " --per-example 2 --max-examples 4 --threads 1");
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

// A tiny random XLM-R with no classifier: an embedding model.
void init_embedding_model(const std::string& dir) {
  ASSERT_EQ(test::run_cli("init " + dir + " --preset tiny --model-type xlm-roberta --tokenizer " +
                          test::fixture("tokenizers/xlmr-unigram.json") + " --max-positions 64")
                .code,
            0);
}

// An embedding model (no classifier) on a labelled pair file: the grid ranks each pair's cosine
// against its label and says how close each sub-network's vectors are to the full model's; the
// latter equals what `embed` gives at the two sub-networks.
TEST(EmbeddingGrid, ScoresPairsAndTheCosineOfEachSubNetworkToTheFullModel) {
  test::TempDir tmp;
  const std::string model = tmp / "emb";
  init_embedding_model(model);
  const std::string task = tmp / "sts";
  fs::create_directories(task);
  const char* rows[] = {"a cat sat on the mat\ta cat is on the mat\t4.5",
                        "the weather is cold\tstocks fell sharply\t0.2",
                        "he plays the guitar\the is playing a guitar\t4.8",
                        "a dog runs in the park\tthe senate passed a bill\t0.1",
                        "she reads a book\ta woman is reading\t3.9",
                        "rain is expected today\tit will rain today\t4.2"};
  std::string tsv = "sentence1\tsentence2\tlabel\n";
  for (const char* r : rows) tsv += std::string(r) + "\n";
  write_file_atomic(task + "/train.tsv", tsv);
  write_file_atomic(task + "/dev.tsv", tsv);
  const test::CliResult grid = test::run_cli(
      "dynabert grid --model " + model + " --task tsv --data " + task + " --out " + (tmp / "grid") +
      " --widths 1,0.5 --depths 1,0.5 --max-length 16 --latency-iters 1"
      " --latency-seq 16 --threads 1");
  ASSERT_EQ(grid.code, 0) << grid.err;
  const auto j = nlohmann::json::parse(read_file((tmp / "grid") + "/grid.json"));
  const auto& points = j.at("series")[0].at("points");
  ASSERT_EQ(points.size(), 4u);
  EXPECT_NEAR(points[0]["metrics"]["dev_cosine_to_full"].get<double>(), 1.0, 1e-6);
  EXPECT_EQ(points[0]["scores"]["dev"], points[0]["metrics"]["dev_spearman"]);
  EXPECT_NE(read_file((tmp / "grid") + "/grid.md").find("cosine to full (dev)"), std::string::npos);
  // (0.5, 0.5) against the full model, through `embed` (CLS pooling, the grid's default).
  std::string texts;
  for (const char* r : rows) {
    const std::string row = r;
    const size_t t1 = row.find('\t'), t2 = row.find('\t', t1 + 1);
    texts += row.substr(0, t1) + "\n" + row.substr(t1 + 1, t2 - t1 - 1) + "\n";
  }
  auto vectors = [&](const std::string& args) {
    const test::CliResult r =
        test::run_cli("embed " + model + " --max-length 16 --threads 1 " + args, texts);
    EXPECT_EQ(r.code, 0) << r.err;
    std::vector<at::Tensor> out;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
      out.push_back(at::tensor(nlohmann::json::parse(line)["cls"].get<std::vector<double>>()));
    return out;
  };
  const auto full = vectors(""), half = vectors("--width 0.5 --depth 0.5");
  ASSERT_EQ(full.size(), 12u);
  double sum = 0;
  for (size_t i = 0; i < full.size(); ++i)
    sum += at::cosine_similarity(full[i], half[i], 0).item<double>();
  const auto& p = points[3];
  ASSERT_EQ(p["width"], 0.5);
  ASSERT_EQ(p["depth"], 0.5);
  EXPECT_NEAR(p["metrics"]["dev_cosine_to_full"].get<double>(), sum / 12, 1e-5);
  EXPECT_LT(p["metrics"]["dev_cosine_to_full"].get<double>(), 0.9999);
}

// Vectors `embed` prints for `texts` (one per line) under the key `pooling`.
std::vector<at::Tensor> embed_vectors(const std::string& args, const std::string& texts,
                                      const std::string& pooling) {
  const test::CliResult r = test::run_cli("embed " + args, texts);
  EXPECT_EQ(r.code, 0) << r.err;
  std::vector<at::Tensor> out;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);)
    out.push_back(at::tensor(nlohmann::json::parse(line)[pooling].get<std::vector<double>>()));
  return out;
}

double max_vector_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, max_diff(a[i], b[i]));
  return m;
}

// compress on a sentence-transformers model (mean pooling, normalised) and a pair file: rewiring
// keeps its vectors, the stages distil them, the grid ranks pairs and compares each sub-network's
// vectors with the full model's, and the exports are sentence-transformers models that embed as
// the slices they came from.
TEST(EmbeddingCompress, DistilsASentenceTransformerAndExportsSentenceTransformers) {
  test::TempDir tmp;
  const std::string model = tmp / "st";
  init_embedding_model(model);
  const int64_t hidden = load_config_dir(model).hidden_size;
  write_file_atomic(model + "/modules.json", R"([
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
  ])");
  fs::create_directories(model + "/1_Pooling");
  fs::create_directories(model + "/2_Normalize");
  write_file_atomic(model + "/1_Pooling/config.json",
                    nlohmann::json{{"word_embedding_dimension", hidden},
                                   {"pooling_mode_cls_token", false},
                                   {"pooling_mode_mean_tokens", true}}
                        .dump());
  write_file_atomic(model + "/sentence_bert_config.json", R"({"max_seq_length": 16})");
  const std::string task = tmp / "pairs";
  fs::create_directories(task);
  const char* subjects[] = {"a cat", "the dog", "my friend", "a child", "the teacher", "he"};
  const char* verbs[] = {"reads a book", "plays the guitar", "runs in the park", "sleeps"};
  std::string train = "sentence1\tsentence2\tlabel\n", dev = train, texts;
  for (int i = 0; i < 24; ++i) {
    // The label counts what the two texts share: 0, 2.5 or 5.
    const int sa = i % 6, sb = (i / 2) % 6, va = i % 4, vb = (i / 3) % 4;
    const std::string a = std::string(subjects[sa]) + " " + verbs[va];
    const std::string b = std::string(subjects[sb]) + " " + verbs[vb];
    const double label = 2.5 * ((sa == sb) + (va == vb));
    const std::string row = a + "\t" + b + "\t" + nlohmann::json(label).dump() + "\n";
    (i < 16 ? train : dev) += row;
    if (i >= 16) texts += a + "\n" + b + "\n";
  }
  write_file_atomic(task + "/train.tsv", train);
  write_file_atomic(task + "/dev.tsv", dev);
  const std::string out = tmp / "c";
  const std::string common = " --task tsv --data " + task + " --threads 1";
  const test::CliResult c = test::run_cli(
      "compress --model " + model + common + " --out " + out +
      " --widths 1,0.5 --depths 1,0.5 --batch-size 8 --max-length 16 --lr 1e-3 --epochs 2"
      " --latency-iters 2 --keep-stages");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_NE(c.err.find("stage 3, which trains a classifier on the labels, is skipped"),
            std::string::npos)
      << c.err;
  EXPECT_NE(c.out.find("spearman"), std::string::npos) << c.out;
  // Rewiring: scored with the pair loss, the vectors unchanged.
  EXPECT_EQ(read_json_file(out + "/rewired/importance.json")["loss"], "cosine_similarity");
  const std::string flags = " --max-length 16 --threads 1";
  const auto teacher = embed_vectors(model + flags, texts, "mean");
  ASSERT_EQ(teacher.size(), 16u);
  EXPECT_NEAR(teacher[0].norm().item<double>(), 1.0, 1e-5);  // normalised, as modules.json says
  EXPECT_LE(max_vector_diff(embed_vectors(out + "/rewired" + flags, texts, "mean"), teacher), 1e-5);
  // The stages keep the model a sentence-transformers model, and distillation moved it.
  for (const char* dir : {"/rewired", "/model"})
    EXPECT_TRUE(fs::exists(out + dir + "/1_Pooling/config.json")) << dir;
  EXPECT_GT(max_vector_diff(embed_vectors(out + "/model" + flags, texts, "mean"), teacher), 1e-4);
  // The grid: Spearman on dev and the cosine to the full model, for the student and the teacher.
  const auto grid = read_json_file(out + "/grid/grid.json");
  std::set<std::string> names;
  for (const auto& series : grid.at("series")) {
    names.insert(series.at("name").get<std::string>());
    for (const auto& p : series.at("points")) {
      EXPECT_EQ(p["scores"]["dev"], p["metrics"]["dev_spearman"]);
      EXPECT_TRUE(p["metrics"].contains("dev_cosine_to_full")) << p.dump();
    }
  }
  EXPECT_TRUE(names.count("DynaBERT") && names.count("teacher"));
  // Each export: a sentence-transformers model giving the vectors of its slice of model/.
  const auto exports = read_json_file(out + "/compress.json")["stages"]["export"]["models"];
  ASSERT_FALSE(exports.empty());
  for (const auto& m : exports) {
    const std::string dir = m["dir"].get<std::string>();
    EXPECT_TRUE(fs::exists(dir + "/modules.json")) << dir;
    EXPECT_TRUE(fs::exists(dir + "/2_Normalize")) << dir;
    const std::string slice = " --width " + nlohmann::json(m["width"]).dump() + " --depth " +
                              nlohmann::json(m["depth"]).dump();
    EXPECT_LE(max_vector_diff(embed_vectors(dir + flags, texts, "mean"),
                              embed_vectors(out + "/model" + flags + slice, texts, "mean")),
              1e-5)
        << dir;
  }
  // WID trains a classifier student: an embedding model is refused with what to use instead.
  const test::CliResult wid =
      test::run_cli("compress --method wid --model " + model + common + " --out " + (tmp / "w") +
                    " --corpus x --mlm-teacher x");
  EXPECT_NE(wid.code, 0);
  EXPECT_NE(wid.err.find("--method dynabert"), std::string::npos) << wid.err;
}

// A sentence-transformers CrossEncoder: one label and a sigmoid named in config.json make
// predict's score the sigmoid of the logit, as the reranker reads it.
TEST(CrossEncoder, ASigmoidOneLabelClassifierScoresThroughTheSigmoid) {
  test::TempDir tmp;
  const std::string model = tmp / "ce";
  ASSERT_EQ(test::run_cli("init " + model + " --preset tiny --model-type roberta --tokenizer " +
                          test::fixture("tokenizers/roberta-tiny.json") +
                          " --labels 1 --max-positions 64")
                .code,
            0);
  auto config = read_json_file(model + "/config.json");
  config["sentence_transformers"] = {{"activation_fn", "torch.nn.modules.activation.Sigmoid"}};
  write_file_atomic(model + "/config.json", config.dump(2));
  EXPECT_TRUE(load_config_dir(model).is_sigmoid_cross_encoder());
  const std::string row = R"({"text": "a query", "text_pair": "a passage"})";
  const test::CliResult r = test::run_cli("predict " + model + " --threads 1", row + "\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const double logit = j.at("logit").get<double>();
  EXPECT_NEAR(j.at("score").get<double>(), 1 / (1 + std::exp(-logit)), 1e-6);
  // The logit is the model's: what `forward` gives on the same pair.
  const Tokenizer tok = Tokenizer::from_dir(model);
  const Encoding e = tok.encode("a query", std::string("a passage"));
  const auto m = infer::InferenceModel::load(model);
  EXPECT_NEAR(m->forward(collate({e}, {0}, tok.pad_id())).logits[0][0].item<double>(), logit, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Families, Family, ::testing::Values("roberta", "xlm-roberta"),
                         [](const auto& info) {
                           return info.param == "roberta" ? std::string("Roberta")
                                                          : std::string("XlmRoberta");
                         });

}  // namespace
}  // namespace slimbert

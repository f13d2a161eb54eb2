#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "slimbert/core/fs.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/io/tensor_io.h"
#include "test_util.h"

namespace slimbert {
namespace fs = std::filesystem;
namespace {

using test::TempDir;

const Tokenizer& small_tokenizer() {
  static const Tokenizer t = [] {
    std::vector<std::string> tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 5; i < 1000; ++i) tokens.push_back("tok" + std::to_string(i));
    return Tokenizer(Vocab::from_tokens(tokens), TokenizerOptions{});
  }();
  return t;
}

BertConfig fixture_config() {
  return load_config_dir(test::fixture("hf/model"));
}

TEST(Checkpoint, SaveThenLoadGivesTheSameWeightsAndHfFiles) {
  TempDir dir;
  BertForSequenceClassification model = load_classifier(test::fixture("hf/model"));
  save_checkpoint(dir / "ckpt", fixture_config(), *model, small_tokenizer());
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                        "special_tokens_map.json"})
    EXPECT_TRUE(fs::exists(fs::path(dir / "ckpt") / f)) << f;
  BertForSequenceClassification back = load_classifier(dir / "ckpt");
  test::expect_same_weights(state_dict(*model), state_dict(*back));
  // HF names; no stray temporary or staging files.
  auto file = SafetensorsFile::open(dir / "ckpt/model.safetensors");
  EXPECT_NE(file->find("bert.encoder.layer.1.attention.self.query.weight"), nullptr);
  EXPECT_NE(file->find("classifier.weight"), nullptr);
  for (const auto& e : fs::directory_iterator(dir.path())) EXPECT_EQ(e.path().filename(), "ckpt");
}

TEST(Checkpoint, MaskedLmFileOmitsTheTiedDecoderLikeHf) {
  TempDir dir;
  BertForMaskedLM model = load_masked_lm(test::fixture("hf/model"));
  save_checkpoint(dir / "mlm", fixture_config(), *model, small_tokenizer());
  auto file = SafetensorsFile::open(dir / "mlm/model.safetensors");
  EXPECT_EQ(file->find("cls.predictions.decoder.weight"), nullptr);
  EXPECT_EQ(file->find("cls.predictions.decoder.bias"), nullptr);
  EXPECT_NE(file->find("cls.predictions.bias"), nullptr);
  EXPECT_EQ(file->find("bert.pooler.dense.weight"), nullptr);  // HF's MLM model has no pooler
  // Exactly the fixture's MLM tensor names.
  std::set<std::string> expected;
  auto reference = SafetensorsFile::open(test::fixture("hf/model/model.safetensors"));
  for (const auto& t : reference->tensors())
    if (t.name.rfind("bert.pooler", 0) != 0 && t.name.rfind("classifier", 0) != 0)
      expected.insert(t.name);
  std::set<std::string> got;
  for (const auto& t : file->tensors()) got.insert(t.name);
  EXPECT_EQ(got, expected);
}

TEST(Checkpoint, HalfPrecisionAndShardedCheckpointsReload) {
  TempDir dir;
  BertForMaskedLM model = load_masked_lm(test::fixture("hf/model"));
  save_checkpoint(dir / "f16", fixture_config(), *model, small_tokenizer(),
                  SaveOptions{DType::F16, 0, {}});
  save_checkpoint(dir / "sharded", fixture_config(), *model, small_tokenizer(),
                  SaveOptions{DType::F32, 200000, {}});
  EXPECT_TRUE(fs::exists(dir / "sharded/model.safetensors.index.json"));
  BertForMaskedLM f16 = load_masked_lm(dir / "f16");
  BertForMaskedLM sharded = load_masked_lm(dir / "sharded");
  auto ref = state_dict(*model);
  for (const auto& [name, t] : state_dict(*sharded))
    EXPECT_TRUE(at::equal(t, ref.at(name))) << name;
  for (const auto& [name, t] : state_dict(*f16))
    EXPECT_TRUE(at::equal(t, ref.at(name).to(at::kHalf).to(at::kFloat))) << name;
}

TEST(Checkpoint, BaseModelFilesWithoutPrefixLoadIntoHeadModelsAndBack) {
  TempDir dir;
  BertModel base = load_bert_model(test::fixture("hf/model"), true);
  save_checkpoint(dir / "base", fixture_config(), *base, small_tokenizer());
  EXPECT_NE(SafetensorsFile::open(dir / "base/model.safetensors")
                ->find("embeddings.word_embeddings.weight"),
            nullptr);
  // A head model from a base checkpoint needs its head initialised, and says so.
  EXPECT_ERROR_CONTAINS(load_classifier(dir / "base"), "missing tensors", "classifier.weight");
  LoadOptions init;
  init.init_missing_heads = true;
  BertForSequenceClassification clf = load_classifier(dir / "base", init);
  EXPECT_TRUE(at::equal(state_dict(*clf).at("bert.encoder.layer.1.output.dense.weight"),
                        state_dict(*base).at("encoder.layer.1.output.dense.weight")));
}

TEST(CheckpointErrors, MissingTensorsAreListed) {
  TensorMap w = load_weights(test::fixture("hf/model"));
  w.erase("bert.encoder.layer.1.output.dense.bias");
  w.erase("cls.predictions.bias");
  BertForMaskedLM model(fixture_config());
  EXPECT_ERROR_CONTAINS(load_state(*model, w, "w.safetensors"), "w.safetensors", "missing tensors",
                        "bert.encoder.layer.1.output.dense.bias", "cls.predictions.bias");
}

TEST(CheckpointErrors, UnexpectedTensorsAreListed) {
  TensorMap w = load_weights(test::fixture("hf/model"));
  w["bert.encoder.layer.7.output.dense.weight"] = at::zeros({2});
  w["cls.predictions.extra"] = at::zeros({2});
  BertForMaskedLM model(fixture_config());
  EXPECT_ERROR_CONTAINS(load_state(*model, w, "w.safetensors"), "unexpected tensors",
                        "bert.encoder.layer.7.output.dense.weight", "cls.predictions.extra");
}

TEST(CheckpointErrors, ShapeMismatchNamesTheTensorAndBothShapes) {
  TensorMap w = load_weights(test::fixture("hf/model"));
  w["bert.encoder.layer.0.intermediate.dense.weight"] = at::zeros({128, 64});
  BertForMaskedLM model(fixture_config());
  EXPECT_ERROR_CONTAINS(load_state(*model, w, "w.safetensors"),
                        "bert.encoder.layer.0.intermediate.dense.weight", "expected [256, 64]",
                        "file has [128, 64]");
}

TEST(CheckpointErrors, MissingDirectoryAndWeights) {
  TempDir dir;
  EXPECT_ERROR_CONTAINS(load_masked_lm(dir / "nope"), "nope", "not found");
  fs::create_directories(dir / "empty");
  fixture_config().save(dir / "empty/config.json");
  EXPECT_ERROR_CONTAINS(load_masked_lm(dir / "empty"), "no model.safetensors");
}

TEST(AtomicWrites, FailedDirectoryWriteLeavesThePreviousCheckpointIntact) {
  TempDir dir;
  BertForMaskedLM model = load_masked_lm(test::fixture("hf/model"));
  save_checkpoint(dir / "ckpt", fixture_config(), *model, small_tokenizer());
  const std::string before = read_file(dir / "ckpt/model.safetensors");
  EXPECT_THROW(write_dir_atomic(dir / "ckpt",
                                [&](const std::string& staging) {
                                  write_file_atomic(staging + "/model.safetensors",
                                                    std::string("partial"));
                                  throw Error("disk full");
                                }),
               Error);
  EXPECT_EQ(read_file(dir / "ckpt/model.safetensors"), before);
  for (const auto& e : fs::directory_iterator(dir.path())) EXPECT_EQ(e.path().filename(), "ckpt");
}

TEST(AtomicWrites, UnwritableDirectoryIsAClearError) {
  EXPECT_ERROR_CONTAINS(write_file_atomic("/proc/slimbert-test/x.json", std::string("{}")),
                        "/proc/slimbert-test/x.json", "cannot write");
}

TEST(Checkpoint, VocabularySizeMustMatchTheConfig) {
  TempDir dir;
  BertConfig c = fixture_config();
  c.vocab_size = 999;
  BertForMaskedLM model(c);
  EXPECT_ERROR_CONTAINS(save_checkpoint(dir / "x", c, *model, small_tokenizer()), "1000 tokens",
                        "vocab_size is 999");
}

// torch.save's zip format, as transformers writes pytorch_model.bin (fixture written by Debian's
// python3-torch: scripts/make-torch-save-fixture.py).
TEST(Checkpoint, TorchSaveStateDictsLoadAsTheirSafetensorsTwins) {
  const TensorMap w = load_torch_save(test::fixture("torch-save/pytorch_model.bin"));
  ASSERT_EQ(w.size(), 5u);
  const at::Tensor word = at::arange(240, at::kFloat).view({30, 8}) / 100;
  EXPECT_TRUE(at::equal(w.at("bert.embeddings.word_embeddings.weight"), word));
  EXPECT_TRUE(at::equal(w.at("cls.predictions.decoder.weight"), word));  // tied in the file
  EXPECT_TRUE(at::equal(w.at("bert.embeddings.LayerNorm.weight"), at::ones({8})));  // was f16
  EXPECT_TRUE(at::equal(w.at("bert.encoder.layer.0.attention.self.query.weight"),
                        at::arange(64, at::kFloat).view({8, 8}).t().contiguous()));
  EXPECT_TRUE(at::equal(w.at("cls.predictions.bias"), at::full({30}, -0.5)));

  // The HF fixture model saved as pytorch_model.bin loads as its safetensors file does.
  const std::string bin_dir = test::fixture("torch-save/hf-model");
  const TensorMap a = load_weights(bin_dir), b = load_weights(test::fixture("hf/model"));
  for (const auto& [name, t] : b) {
    ASSERT_TRUE(a.count(name)) << name;
    EXPECT_TRUE(at::equal(a.at(name), t)) << name;
  }
  EXPECT_EQ(weights_path(bin_dir), bin_dir + "/pytorch_model.bin");
  BertForMaskedLM model = load_masked_lm(bin_dir);
  at::NoGradGuard no_grad;
  EXPECT_LE(test::max_diff(model->forward(test::golden_batch()), test::golden().at("mlm_logits")),
            1e-5);
}

TEST(Checkpoint, DamagedOrHostileTorchSaveFilesAreNamedErrors) {
  TempDir dir;
  const std::string bytes = read_file(test::fixture("torch-save/pytorch_model.bin"));
  for (size_t cut : {bytes.size() / 2, bytes.size() - 30, size_t{100}}) {
    write_file_atomic(dir / "truncated.bin", bytes.substr(0, cut));
    EXPECT_ERROR_CONTAINS(load_torch_save(dir / "truncated.bin"), "truncated.bin");
  }
  write_file_atomic(dir / "legacy.bin", std::string("\x80\x02}q\x00.", 6));
  EXPECT_ERROR_CONTAINS(load_torch_save(dir / "legacy.bin"), "legacy.bin",
                        "not a torch.save zip archive");
  EXPECT_ERROR_CONTAINS(load_torch_save(test::fixture("torch-save/evil.bin")), "evil.bin",
                        "calls posix.system, which is not allowed");
  // A record whose headers claim about 4 GB in a file of 3 KB: refused before any allocation.
  std::string claims = bytes;
  auto u16 = [&](size_t at) {
    return static_cast<size_t>(static_cast<uint8_t>(claims[at])) |
           static_cast<size_t>(static_cast<uint8_t>(claims[at + 1])) << 8;
  };
  bool patched = false;
  for (size_t at = claims.find("PK\x01\x02"); at != std::string::npos;
       at = claims.find("PK\x01\x02", at + 4)) {
    if (claims.compare(at + 46, u16(at + 28), "pytorch_model/data/0") != 0) continue;
    const size_t local = static_cast<size_t>(static_cast<uint8_t>(claims[at + 42])) |
                         u16(at + 43) << 8;  // < 64 KiB here
    for (size_t header : {at + 20, local + 18})
      claims.replace(header, 8, std::string("\xf0\xff\xff\xff\xf0\xff\xff\xff", 8));
    patched = true;
  }
  ASSERT_TRUE(patched);
  write_file_atomic(dir / "claims.bin", claims);
  EXPECT_ERROR_CONTAINS(load_torch_save(dir / "claims.bin"), "claims.bin",
                        "not a torch.save zip archive");
}

}  // namespace
}  // namespace slimbert

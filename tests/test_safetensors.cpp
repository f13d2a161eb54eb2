#include <ATen/ATen.h>

#include <cstring>
#include <fstream>

#include "slimbert/core/fs.h"
#include "slimbert/io/safetensors.h"
#include "slimbert/io/tensor_io.h"
#include "test_util.h"

namespace slimbert {
namespace {

using test::TempDir;

// Writes a file with the given JSON header and `data_bytes` zero bytes of data.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header_len_override ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripKeepsValuesDtypesAndShapes) {
  TempDir dir;
  TensorMap t;
  t["a.weight"] = at::randn({3, 5});
  t["b.ids"] = at::arange(12, at::kLong).view({3, 4});
  t["c.mask"] = at::tensor({1, 0, 1}, at::kByte).to(at::kBool);
  t["d.empty"] = at::zeros({0, 7});
  save_safetensors(dir / "x.safetensors", t);
  auto file = SafetensorsFile::open(dir / "x.safetensors");
  ASSERT_EQ(file->tensors().size(), 4u);
  EXPECT_EQ(file->find("b.ids")->dtype, DType::I64);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  // The header is padded so that the data section starts 8-byte aligned.
  const std::string raw = read_file(dir / "x.safetensors");
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  TensorMap back = load_safetensors(dir / "x.safetensors");
  for (const auto& [name, tensor] : t) {
    ASSERT_TRUE(back.count(name)) << name;
    EXPECT_EQ(back[name].sizes(), tensor.sizes()) << name;
    EXPECT_TRUE(at::equal(back[name], tensor)) << name;
  }
}

TEST(Safetensors, HalfPrecisionFilesLoadAsFloat32) {
  TempDir dir;
  at::Tensor x = at::randn({4, 6});
  save_safetensors(dir / "h.safetensors", {{"x", x}}, DType::F16);
  save_safetensors(dir / "b.safetensors", {{"x", x}}, DType::BF16);
  EXPECT_EQ(SafetensorsFile::open(dir / "h.safetensors")->find("x")->dtype, DType::F16);
  at::Tensor h = load_safetensors(dir / "h.safetensors")["x"];
  at::Tensor b = load_safetensors(dir / "b.safetensors")["x"];
  EXPECT_EQ(h.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(h, x.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(at::equal(b, x.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_LT((h - x).abs().max().item<float>(), 5e-3);
}

// A float64 training run: its checkpoints keep F64 and load back bit for bit as float64; its
// final model is stored as F32 like every other; float32 files widen exactly.
TEST(Safetensors, Float64IsKeptWhenAskedAndNarrowedByDefault) {
  TempDir dir;
  const at::Tensor x = at::randn({4, 6}, at::kDouble);
  save_safetensors(dir / "d.safetensors", {{"x", x}}, DType::F64);
  save_safetensors(dir / "f.safetensors", {{"x", x}});
  EXPECT_EQ(SafetensorsFile::open(dir / "d.safetensors")->find("x")->dtype, DType::F64);
  EXPECT_EQ(SafetensorsFile::open(dir / "f.safetensors")->find("x")->dtype, DType::F32);
  const at::Tensor d = load_safetensors(dir / "d.safetensors", at::kDouble)["x"];
  EXPECT_EQ(d.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(d, x));
  EXPECT_TRUE(at::equal(load_safetensors(dir / "d.safetensors")["x"], x.to(at::kFloat)));
  const at::Tensor f = load_safetensors(dir / "f.safetensors", at::kDouble)["x"];
  EXPECT_TRUE(at::equal(f, x.to(at::kFloat).to(at::kDouble)));
}

TEST(Safetensors, ReadsTheGoldenFixture) {
  auto file = SafetensorsFile::open(test::fixture("hf/model/model.safetensors"));
  EXPECT_EQ(file->tensors().size(), 46u);
  const TensorInfo* w = file->find("bert.embeddings.word_embeddings.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{1000, 64}));
}

TEST(Safetensors, ShardedWeightsRoundTrip) {
  TempDir dir;
  TensorMap t;
  for (int i = 0; i < 5; ++i) t["layer." + std::to_string(i) + ".weight"] = at::randn({16, 16});
  save_weights(dir.path(), t, DType::F32, /*max_shard_bytes=*/2 * 16 * 16 * 4);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(dir / "model-00003-of-00003.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  TensorMap back = load_weights(dir.path());
  ASSERT_EQ(back.size(), t.size());
  for (const auto& [name, tensor] : t) EXPECT_TRUE(at::equal(back[name], tensor)) << name;
}

TEST(Safetensors, ShardIndexNamingAMissingTensorIsAnError) {
  TempDir dir;
  save_safetensors(dir / "a.safetensors", {{"x", at::zeros({2})}});
  write_file_atomic(dir / "model.safetensors.index.json",
                    R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors"}})");
  EXPECT_ERROR_CONTAINS(load_weights(dir.path()), "a.safetensors", "'y'", "not in this shard");
}

// ---- Corrupt files: every header field is checked, with a message naming the problem ----

TEST(SafetensorsCorrupt, TooShortForAHeaderLength) {
  TempDir dir;
  write_file_atomic(dir / "t.safetensors", std::string("abc"));
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "t.safetensors", "truncated",
                        "3 bytes");
}

TEST(SafetensorsCorrupt, HeaderLengthPastEndOfFile) {
  TempDir dir;
  write_raw(dir / "t.safetensors", "{}", 0, /*header_len_override=*/1000);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "header length 1000",
                        "past the end of the file");
}

TEST(SafetensorsCorrupt, NonJsonHeader) {
  TempDir dir;
  write_raw(dir / "t.safetensors", "{not json", 0);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "not valid JSON");
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  TempDir dir;
  write_raw(dir / "t.safetensors", "[1, 2]", 0);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "must be a JSON object");
}

TEST(SafetensorsCorrupt, UnknownDtype) {
  TempDir dir;
  write_raw(dir / "t.safetensors",
            R"({"w": {"dtype": "F8", "shape": [2], "data_offsets": [0, 2]}})", 2);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "tensor 'w'",
                        "unknown dtype 'F8'");
}

TEST(SafetensorsCorrupt, ShapeTimesDtypeDiffersFromByteCount) {
  TempDir dir;
  write_raw(dir / "t.safetensors",
            R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 20);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "tensor 'w'", "[2, 3]",
                        "needs 24 bytes", "span 20");
}

TEST(SafetensorsCorrupt, OffsetsOutOfRange) {
  TempDir dir;
  write_raw(dir / "t.safetensors",
            R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "tensor 'w'", "out of range",
                        "holds 8 bytes");
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  TempDir dir;
  write_raw(dir / "t.safetensors",
            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
            R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
            12);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "'a'", "'b'", "overlap");
}

TEST(SafetensorsCorrupt, BeginAfterEnd) {
  TempDir dir;
  write_raw(dir / "t.safetensors",
            R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}})", 8);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "begin > end");
}

TEST(SafetensorsCorrupt, NegativeShape) {
  TempDir dir;
  write_raw(dir / "t.safetensors",
            R"({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}})", 0);
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "non-negative integers");
}

TEST(SafetensorsCorrupt, TruncatedRealCheckpoint) {
  TempDir dir;
  std::string data = read_file(test::fixture("hf/model/model.safetensors"));
  write_file_atomic(dir / "t.safetensors", std::string_view(data).substr(0, data.size() / 2));
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open(dir / "t.safetensors"), "out of range",
                        "file truncated?");
}

TEST(SafetensorsCorrupt, MissingFile) {
  EXPECT_ERROR_CONTAINS(SafetensorsFile::open("/nonexistent/x.safetensors"),
                        "/nonexistent/x.safetensors", "not found");
}

}  // namespace
}  // namespace slimbert

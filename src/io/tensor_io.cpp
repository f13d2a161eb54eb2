#include "slimbert/io/tensor_io.h"

#include <ATen/ATen.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

at::ScalarType to_scalar(DType d) {
  switch (d) {
    case DType::F64:
      return at::kDouble;
    case DType::F32:
      return at::kFloat;
    case DType::F16:
      return at::kHalf;
    case DType::BF16:
      return at::kBFloat16;
    case DType::I64:
      return at::kLong;
    case DType::I32:
      return at::kInt;
    case DType::I16:
      return at::kShort;
    case DType::I8:
      return at::kChar;
    case DType::U8:
      return at::kByte;
    case DType::BOOL:
      return at::kBool;
  }
  return at::kFloat;
}

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kTorchFile = "pytorch_model.bin";

}  // namespace

namespace {

// The whole pages of a read-only file mapping in [p, p + n), which were copied out: dropped, so
// that loading a model peaks at about its size instead of twice it (the mapping's pages count as
// resident until unmapped). Reading them again would fetch them from the file.
void drop_mapped_pages(const uint8_t* p, size_t n) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

DType from_scalar(at::ScalarType s, const std::string& name) {
  switch (s) {
    case at::kDouble:
      return DType::F64;
    case at::kFloat:
      return DType::F32;
    case at::kHalf:
      return DType::F16;
    case at::kBFloat16:
      return DType::BF16;
    case at::kLong:
      return DType::I64;
    case at::kInt:
      return DType::I32;
    case at::kShort:
      return DType::I16;
    case at::kChar:
      return DType::I8;
    case at::kByte:
      return DType::U8;
    case at::kBool:
      return DType::BOOL;
    default:
      throw Error(cat("tensor '", name, "': dtype ", at::toString(s), " cannot be saved"));
  }
}

TensorMap load_safetensors(const std::string& path, at::ScalarType float_type) {
  auto file = SafetensorsFile::open(path);
  TensorMap out;
  for (const auto& info : file->tensors()) {
    auto view = at::from_blob(const_cast<uint8_t*>(file->data(info)), info.shape,
                              at::TensorOptions().dtype(to_scalar(info.dtype)));
    const bool is_float = info.dtype == DType::F16 || info.dtype == DType::BF16 ||
                          info.dtype == DType::F64 || info.dtype == DType::F32;
    // Own the data: the mapping goes away with `file`.
    out[info.name] =
        is_float ? view.to(float_type, /*non_blocking=*/false, /*copy=*/true) : view.clone();
    drop_mapped_pages(file->data(info), info.end - info.begin);
  }
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors, DType float_dtype,
                      const std::map<std::string, std::string>& metadata) {
  std::map<std::string, at::Tensor> owned;
  std::map<std::string, TensorBytes> bytes;
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) throw Error(cat(path, ": tensor '", name, "' is undefined"));
    at::Tensor c = t.detach().to(at::kCPU);
    if (c.is_floating_point() && c.scalar_type() != to_scalar(float_dtype))
      c = c.to(to_scalar(float_dtype));
    c = c.contiguous();
    owned[name] = c;
    bytes[name] = TensorBytes{from_scalar(c.scalar_type(), name), c.sizes().vec(), c.data_ptr(),
                              static_cast<size_t>(c.nbytes())};
  }
  write_safetensors(path, bytes, metadata);
}

const at::Tensor* find_weight(const TensorMap& weights, const std::string& name) {
  for (const char* prefix : {"", "bert."}) {
    auto it = weights.find(std::string(prefix) + name);
    if (it != weights.end()) return &it->second;
  }
  return nullptr;
}

namespace {

bool has_classifier(const TensorMap& tensors) {
  for (const auto& [name, t] : tensors)
    if (name.rfind("classifier.", 0) == 0) return true;
  return false;
}

TensorMap load_weights_as_stored(const std::string& dir, at::ScalarType float_type);

}  // namespace

TensorMap to_family_names(TensorMap tensors, Family family) {
  if (family == Family::kBert) return tensors;
  const bool classifier = has_classifier(tensors);
  TensorMap out;
  for (auto& [name, t] : tensors) out[to_family_name(name, family, classifier)] = std::move(t);
  return out;
}

TensorMap from_family_names(TensorMap tensors, Family family) {
  if (family == Family::kBert) return tensors;
  const bool classifier = has_classifier(tensors);
  TensorMap out;
  for (auto& [name, t] : tensors)
    if (auto internal = from_family_name(name, family, classifier)) out[*internal] = std::move(t);
  return out;
}

TensorMap load_weights(const std::string& dir, at::ScalarType float_type) {
  TensorMap tensors = load_weights_as_stored(dir, float_type);
  const fs::path config = fs::path(dir) / "config.json";
  if (!fs::exists(config)) return tensors;
  const nlohmann::json j = read_json_file(config.string());
  if (!j.is_object() || !j.contains("model_type") || !j["model_type"].is_string())
    return tensors;  // config.json's own reader names what is wrong with it
  return from_family_names(std::move(tensors),
                           family_of(j["model_type"].get<std::string>(), config.string()));
}

namespace {

TensorMap load_weights_as_stored(const std::string& dir, at::ScalarType float_type) {
  const fs::path single = fs::path(dir) / kSingleFile;
  const fs::path index = fs::path(dir) / kIndexFile;
  if (fs::exists(single)) return load_safetensors(single.string(), float_type);
  if (!fs::exists(index)) {
    if (!fs::is_directory(dir)) fail(dir, ": checkpoint directory not found");
    const fs::path bin = fs::path(dir) / kTorchFile;
    if (fs::exists(bin)) {
      TensorMap weights = load_torch_save(bin.string());
      if (float_type != at::kFloat)
        for (auto& [name, t] : weights)
          if (t.is_floating_point()) t = t.to(float_type);
      return weights;
    }
    std::string hint;
    if (fs::exists(fs::path(dir) / "pytorch_model.bin.index.json"))
      hint =
          " (sharded pytorch_model-*.bin files are not supported: re-save with "
          "safe_serialization=True)";
    fail(dir, ": no ", kSingleFile, ", ", kIndexFile, " or ", kTorchFile, hint);
  }
  const nlohmann::json j = read_json_file(index.string());
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail(index.string(), ": expected an object with 'weight_map' {tensor: file}");
  std::map<std::string, std::vector<std::string>> by_file;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      fail(index.string(), ": weight_map['", it.key(), "'] must be a file name");
    const std::string file = it.value().get<std::string>();
    if (file.find('/') != std::string::npos || file == ".." || file.empty())
      fail(index.string(), ": weight_map['", it.key(), "'] = '", file, "' is not a file name in ",
           dir);
    by_file[file].push_back(it.key());
  }
  TensorMap out;
  for (const auto& [file, names] : by_file) {
    TensorMap shard = load_safetensors((fs::path(dir) / file).string(), float_type);
    for (const auto& name : names) {
      auto it = shard.find(name);
      if (it == shard.end())
        fail((fs::path(dir) / file).string(), ": tensor '", name, "' listed in ", kIndexFile,
             " is not in this shard");
      out[name] = it->second;
    }
  }
  return out;
}

}  // namespace

void save_weights(const std::string& dir, const TensorMap& tensors, DType float_dtype,
                  size_t max_shard_bytes) {
  size_t total = 0;
  const size_t float_size = dtype_size(float_dtype);
  auto stored_bytes = [&](const at::Tensor& t) {
    return t.is_floating_point() ? static_cast<size_t>(t.numel()) * float_size
                                 : static_cast<size_t>(t.nbytes());
  };
  for (const auto& [name, t] : tensors) total += stored_bytes(t);
  if (max_shard_bytes == 0 || total <= max_shard_bytes) {
    save_safetensors((fs::path(dir) / kSingleFile).string(), tensors, float_dtype);
    return;
  }
  std::vector<TensorMap> shards(1);
  size_t current = 0;
  for (const auto& [name, t] : tensors) {
    size_t b = stored_bytes(t);
    if (current > 0 && current + b > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back()[name] = t;
    current += b;
  }
  nlohmann::json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::json::object();
  char buf[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    save_safetensors((fs::path(dir) / buf).string(), shards[i], float_dtype);
    for (const auto& [name, t] : shards[i]) index["weight_map"][name] = buf;
  }
  write_file_atomic((fs::path(dir) / kIndexFile).string(), index.dump(2) + "\n");
}

}  // namespace slimbert

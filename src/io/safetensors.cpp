#include "slimbert/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"

namespace slimbert {
namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

// A header larger than this is not a model checkpoint but a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

}  // namespace

const char* dtype_name(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.name;
  return "?";
}

size_t dtype_size(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.size;
  return 0;
}

bool parse_dtype(const std::string& name, DType* out) {
  for (const auto& e : kDTypes)
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    if (errno == ENOENT) fail(path, ": file not found");
    fail(path, ": cannot open: ", std::strerror(errno));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(path, ": truncated safetensors file: ", size,
         " bytes, expected at least 8 (header length)");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(path, ": mmap failed: ", std::strerror(errno));
  file->map_ = map;
  file->map_size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8)
    fail(path, ": corrupt safetensors header: header length ", header_len,
         " runs past the end of the file (", size, " bytes)");
  if (header_len > kMaxHeaderBytes)
    fail(path, ": corrupt safetensors header: header length ", header_len, " exceeds ",
         kMaxHeaderBytes, " bytes");
  const std::string header_text(reinterpret_cast<const char*>(bytes + 8), header_len);
  file->data_ = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  const nlohmann::json header = parse_json(header_text, path + ": safetensors header");
  if (!header.is_object()) fail(path, ": safetensors header must be a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, ": __metadata__ must be an object of strings");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) fail(path, ": __metadata__.", m.key(), " must be a string");
        file->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!entry.is_object()) fail(where, ": header entry must be an object");
    if (!entry.contains("dtype") || !entry["dtype"].is_string())
      fail(where, ": missing string field 'dtype'");
    if (!entry.contains("shape") || !entry["shape"].is_array())
      fail(where, ": missing array field 'shape'");
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      fail(where, ": 'data_offsets' must be an array [begin, end]");

    TensorInfo info;
    info.name = name;
    const std::string dtype = entry["dtype"].get<std::string>();
    if (!parse_dtype(dtype, &info.dtype))
      fail(where, ": unknown dtype '", dtype,
           "' (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        fail(where, ": shape entries must be non-negative integers, got ", json_text(d));
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) fail(where, ": shape overflows");
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : entry["data_offsets"])
      if (!o.is_number_unsigned()) fail(where, ": data_offsets must be non-negative integers");
    info.begin = entry["data_offsets"][0].get<uint64_t>();
    info.end = entry["data_offsets"][1].get<uint64_t>();
    if (info.begin > info.end)
      fail(where, ": data_offsets [", info.begin, ", ", info.end, "] has begin > end");
    if (info.end > data_size)
      fail(where, ": data_offsets [", info.begin, ", ", info.end,
           "] out of range: the data section holds ", data_size, " bytes (file truncated?)");
    // Checked: a shape whose byte count wraps around 2^64 must not pass as a small tensor.
    uint64_t expected = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &expected))
      fail(where, ": shape ", shape_str(info.shape), " x ", dtype,
           " needs more than 2^64 bytes; the data section holds ", data_size);
    if (info.end - info.begin != expected)
      fail(where, ": shape ", shape_str(info.shape), " x ", dtype, " needs ", expected,
           " bytes, but data_offsets span ", info.end - info.begin);
    file->tensors_.push_back(std::move(info));
  }

  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : file->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (b.begin < a.end && b.end > b.begin && a.end > a.begin)
      fail(path, ": tensors '", a.name, "' [", a.begin, ", ", a.end, ") and '", b.name, "' [",
           b.begin, ", ", b.end, ") overlap");
  }
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->index_[file->tensors_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void write_safetensors(const std::string& path, const std::map<std::string, TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    if (numel * dtype_size(t.dtype) != t.nbytes)
      throw Error(cat(path, ": tensor '", name, "' has ", t.nbytes, " bytes, shape ",
                      shape_str(t.shape), " x ", dtype_name(t.dtype), " needs ",
                      numel * dtype_size(t.dtype)));
    header[name] = {{"dtype", dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  write_file_atomic(path, [&](std::FILE* f) {
    uint8_t len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, n, f) == n;
    for (const auto& [name, t] : tensors)
      ok = ok && (t.nbytes == 0 || std::fwrite(t.data, 1, t.nbytes, f) == t.nbytes);
    if (!ok) fail(path, ": write failed: ", std::strerror(errno));
  });
}

}  // namespace slimbert

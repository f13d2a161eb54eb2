// safetensors: 8-byte little-endian header length N, N bytes of JSON, then raw tensor data.
// This layer is torch-free: it validates and maps files, and writes tensors given as bytes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace slimbert {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType dtype);  // "F32", ...
size_t dtype_size(DType dtype);       // bytes per element
bool parse_dtype(const std::string& name, DType* out);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
  int64_t numel() const;
};

std::string shape_str(const std::vector<int64_t>& shape);  // "[3, 16]"

// A read-only memory-mapped safetensors file. Every header field is checked on open: header
// length within the file, valid JSON, known dtypes, non-negative shapes, offsets within the
// data section, byte counts equal to shape x dtype, no overlapping tensors.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  const TensorInfo* find(const std::string& name) const;
  const uint8_t* data(const TensorInfo& info) const { return data_ + info.begin; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to be written: the bytes must hold numel x dtype_size bytes, little-endian.
struct TensorBytes {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes tensors (sorted by name, back to back) atomically.
void write_safetensors(const std::string& path, const std::map<std::string, TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace slimbert

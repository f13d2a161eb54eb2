// safetensors files from bytes: open validates the header; every tensor it accepts must lie
// inside the mapping (each byte of every accepted tensor is read).
#include "fuzz_util.h"
#include "slimbert/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slimbert;
  const std::string path = fuzz::scratch_dir() + "/x.safetensors";
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::expect_clean([&] {
    const auto file = SafetensorsFile::open(path);
    volatile unsigned sum = 0;
    for (const TensorInfo& t : file->tensors()) {
      const uint8_t* p = file->data(t);
      for (uint64_t i = 0; i < t.end - t.begin; ++i) sum = sum + p[i];
      if (file->find(t.name) != &t) std::abort();
    }
  });
  return 0;
}

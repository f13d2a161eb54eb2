// Task files of every layout: GLUE's ten, TSV, CSV and JSONL. The first byte picks the layout
// and the split; the rest is the file. Every example a loader accepts gets its label looked up.
#include "fuzz_util.h"
#include "slimbert/data/tasks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slimbert;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint8_t pick = fuzz::take_byte(in);
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n = TaskSpec::glue_names();
    for (const char* g : {"tsv", "csv", "jsonl"}) n.push_back(g);
    return n;
  }();
  const std::string& name = names[pick % names.size()];
  static const char* kSplits[] = {"train", "dev", "test"};
  const std::string split = kSplits[(pick / names.size()) % 3];
  const std::string dir = fuzz::scratch_dir() + "/task";
  std::filesystem::create_directories(dir);
  fuzz::expect_clean([&] {
    const bool generic = name == "tsv" || name == "csv" || name == "jsonl";
    if (generic) {
      // Generic layouts read their label set from train: the input is the training file.
      TaskSpec probe;
      probe.name = name;
      probe.dir = dir;
      write_file_atomic(probe.path("train"), in);
      const TaskSpec spec = TaskSpec::make(name, dir);
      const TaskData train = spec.load("train");
      for (const Example& e : train.examples) (void)spec.label_index(e, train.source);
      return;
    }
    const TaskSpec spec = TaskSpec::make(name, dir, /*skip_bad_rows=*/pick & 0x80);
    write_file_atomic(spec.path(split), in);
    const TaskData d = spec.load(split);
    for (const Example& e : d.examples)
      if (split != "test") (void)spec.label_index(e, d.source);
  });
  return 0;
}

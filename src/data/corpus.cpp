#include "slimbert/data/corpus.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

// Shard file: magic, version, seq_len, rows; then rows x uint16 lengths; then rows x seq_len
// uint16 ids (the vocabulary must fit 16 bits).
constexpr char kMagic[8] = {'S', 'L', 'B', 'S', 'H', 'R', 'D', '1'};
constexpr uint32_t kVersion = 1;

struct Packer {
  int64_t seq_len;
  int64_t cls, sep;
  std::vector<uint16_t> current;  // without [CLS]
  std::vector<std::vector<uint16_t>> done;

  void add_document(const std::vector<int64_t>& ids) {
    size_t pos = 0;
    const size_t room = static_cast<size_t>(seq_len - 2);  // [CLS] first, a [SEP] last
    while (pos < ids.size()) {
      const size_t take = std::min(ids.size() - pos, room - current.size());
      for (size_t i = 0; i < take; ++i) current.push_back(static_cast<uint16_t>(ids[pos + i]));
      pos += take;
      if (current.size() == room) flush();
    }
    // Document boundary (a sequence that just ended gets its [SEP] in flush()).
    if (!current.empty()) current.push_back(static_cast<uint16_t>(sep));
    if (current.size() >= room) flush();
  }
  void flush() {
    if (current.empty()) return;
    std::vector<uint16_t> seq;
    seq.reserve(static_cast<size_t>(seq_len));
    seq.push_back(static_cast<uint16_t>(cls));
    seq.insert(seq.end(), current.begin(), current.end());
    if (seq.back() != sep) seq.push_back(static_cast<uint16_t>(sep));
    done.push_back(std::move(seq));
    current.clear();
  }
};

class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, const ShardOptions& o)
      : dir_(std::move(dir)), split_(std::move(split)), o_(o) {}
  void add(std::vector<std::vector<uint16_t>>& seqs) {
    for (auto& s : seqs) {
      rows_.push_back(std::move(s));
      ++total_;
      if (static_cast<int64_t>(rows_.size()) == o_.sequences_per_shard) write();
    }
    seqs.clear();
  }
  void finish() {
    if (!rows_.empty()) write();
  }
  int64_t total() const { return total_; }
  const std::vector<std::string>& files() const { return files_; }

 private:
  void write() {
    char name[64];
    std::snprintf(name, sizeof(name), "%s-%05zu.bin", split_.c_str(), files_.size());
    const uint64_t rows = rows_.size(), seq_len = static_cast<uint64_t>(o_.seq_len);
    write_file_atomic((fs::path(dir_) / name).string(), [&](std::FILE* f) {
      bool ok = std::fwrite(kMagic, 1, 8, f) == 8;
      ok = ok && std::fwrite(&kVersion, 4, 1, f) == 1;
      ok = ok && std::fwrite(&seq_len, 8, 1, f) == 1 && std::fwrite(&rows, 8, 1, f) == 1;
      for (const auto& r : rows_) {
        const uint16_t n = static_cast<uint16_t>(r.size());
        ok = ok && std::fwrite(&n, 2, 1, f) == 1;
      }
      std::vector<uint16_t> padded(seq_len);
      for (const auto& r : rows_) {
        std::fill(padded.begin(), padded.end(), 0);
        std::copy(r.begin(), r.end(), padded.begin());
        ok = ok && std::fwrite(padded.data(), 2, seq_len, f) == seq_len;
      }
      if (!ok) fail((fs::path(dir_) / name).string(), ": write failed (disk full?)");
    });
    files_.push_back(name);
    rows_.clear();
  }
  std::string dir_, split_;
  ShardOptions o_;
  std::vector<std::vector<uint16_t>> rows_;
  std::vector<std::string> files_;
  int64_t total_ = 0;
};

// FNV-1a: a stable hash for the split decision (std::hash may differ between builds).
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Reads documents (blank-line separated) from a stream, a block at a time.
class DocumentReader {
 public:
  explicit DocumentReader(const std::string& path) : in_(path), path_(path) {
    if (!in_) fail(path, ": cannot open corpus file");
  }
  // Up to `max_docs` documents; false at end of file.
  bool next_block(std::vector<std::string>& docs, size_t max_docs) {
    docs.clear();
    std::string line, doc;
    while (docs.size() < max_docs && std::getline(in_, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) {
        if (!doc.empty()) docs.push_back(std::move(doc));
        doc.clear();
      } else {
        if (!doc.empty()) doc += ' ';
        doc += line;
      }
    }
    if (!doc.empty()) docs.push_back(std::move(doc));
    return !docs.empty();
  }

 private:
  std::ifstream in_;
  std::string path_;
};

}  // namespace

ShardStats build_shards(const std::vector<std::string>& inputs, const Tokenizer& tokenizer,
                        const std::string& out_dir, const ShardOptions& o) {
  if (o.seq_len < 8) fail("seq_len must be at least 8, got ", o.seq_len);
  if (tokenizer.vocab().size() > 65536)
    fail("vocabulary of ", tokenizer.vocab().size(), " tokens does not fit 16-bit shards");
  if (inputs.empty()) fail("no corpus files given");
  ShardStats stats;
  write_dir_atomic(out_dir, [&](const std::string& staging) {
    ShardWriter train(staging, "train", o), val(staging, "validation", o);
    Packer train_pack{o.seq_len, tokenizer.cls_id(), tokenizer.sep_id(), {}, {}};
    Packer val_pack = train_pack;
    const int threads = std::max(1, o.threads);
    std::vector<std::string> docs;
    for (const auto& path : inputs) {
      DocumentReader reader(path);
      while (reader.next_block(docs, 4096)) {
        // Tokenize the block in parallel; pack in document order (deterministic).
        std::vector<std::vector<int64_t>> ids(docs.size());
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            for (size_t i = static_cast<size_t>(t); i < docs.size();
                 i += static_cast<size_t>(threads))
              ids[i] = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(docs[i]));
          });
        for (auto& th : pool) th.join();
        for (size_t i = 0; i < docs.size(); ++i) {
          if (ids[i].empty()) continue;
          ++stats.documents;
          stats.tokens += static_cast<int64_t>(ids[i].size());
          const bool is_val =
              static_cast<double>(fnv1a(docs[i]) % 1000000) / 1e6 < o.validation_fraction;
          (is_val ? val_pack : train_pack).add_document(ids[i]);
        }
        train.add(train_pack.done);
        val.add(val_pack.done);
      }
    }
    train_pack.flush();
    val_pack.flush();
    train.add(train_pack.done);
    val.add(val_pack.done);
    train.finish();
    val.finish();
    if (train.total() == 0) fail("corpus is empty: no tokens in ", inputs.size(), " file(s)");
    stats.train_sequences = train.total();
    stats.validation_sequences = val.total();
    nlohmann::json j = {{kSchemaVersionKey, kShardsVersion},
                        {"seq_len", o.seq_len},
                        {"vocab_size", tokenizer.vocab().size()},
                        {"documents", stats.documents},
                        {"tokens", stats.tokens},
                        {"train", {{"sequences", train.total()}, {"files", train.files()}}},
                        {"validation", {{"sequences", val.total()}, {"files", val.files()}}},
                        {"inputs", inputs}};
    write_file_atomic((fs::path(staging) / "shards.json").string(), j.dump(2) + "\n");
  });
  return stats;
}

struct ShardSet::File {
  void* map = nullptr;
  size_t size = 0;
  const uint16_t* lengths = nullptr;
  const uint16_t* ids = nullptr;
  uint64_t rows = 0, seq_len = 0;
  ~File() {
    if (map) munmap(map, size);
  }
};

ShardSet ShardSet::open(const std::string& dir, const std::string& split) {
  const std::string meta_path = (fs::path(dir) / "shards.json").string();
  const nlohmann::json meta = read_json_file(meta_path);
  check_schema_version(meta, meta_path, kShardsVersion);
  const JsonFields fields(meta, meta_path);
  if (!fields.has(split.c_str())) fail(meta_path, ": no split '", split, "'");
  ShardSet set;
  set.seq_len_ = fields.integer("seq_len", 1, 65535);
  // Ids are stored in 16 bits.
  if (fields.has("vocab_size")) set.vocab_size_ = fields.integer("vocab_size", 1, 65536);
  const JsonFields split_fields(fields.at(split.c_str()), meta_path + ": split '" + split + "'");
  const nlohmann::json& files = split_fields.at("files");
  if (!files.is_array()) split_fields.bad("files", "a list of shard file names");
  for (const auto& name : files) {
    if (!name.is_string() || name.get<std::string>().find('/') != std::string::npos)
      split_fields.bad("files", "a list of shard file names in the same directory");
    const std::string path = (fs::path(dir) / name.get<std::string>()).string();
    auto file = std::make_shared<File>();
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail(path, ": cannot open shard");
    struct stat st {};
    fstat(fd, &st);
    file->size = static_cast<size_t>(st.st_size);
    if (file->size < 28) {
      ::close(fd);
      fail(path, ": truncated shard (", file->size, " bytes)");
    }
    file->map = mmap(nullptr, file->size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (file->map == MAP_FAILED) {
      file->map = nullptr;
      fail(path, ": mmap failed");
    }
    const auto* bytes = static_cast<const uint8_t*>(file->map);
    if (std::memcmp(bytes, kMagic, 8) != 0) fail(path, ": not a slimbert shard (bad magic)");
    uint32_t version = 0;
    std::memcpy(&version, bytes + 8, 4);
    if (version != kVersion) fail(path, ": shard version ", version, ", expected ", kVersion);
    std::memcpy(&file->seq_len, bytes + 12, 8);
    std::memcpy(&file->rows, bytes + 20, 8);
    if (static_cast<int64_t>(file->seq_len) != set.seq_len_)
      fail(path, ": seq_len ", file->seq_len, " differs from shards.json (", set.seq_len_, ")");
    // Row count and length come from the file: bounded by its size before any product.
    if (file->rows > file->size / 2)
      fail(path, ": corrupt shard: ", file->rows, " rows cannot fit in ", file->size, " bytes");
    const uint64_t need = 28 + file->rows * 2 + file->rows * file->seq_len * 2;
    if (need != file->size)
      fail(path, ": truncated or corrupt shard: ", file->size, " bytes, expected ", need);
    file->lengths = reinterpret_cast<const uint16_t*>(bytes + 28);
    file->ids = file->lengths + file->rows;
    for (uint64_t r = 0; r < file->rows; ++r)
      set.index_.emplace_back(static_cast<uint32_t>(set.files_.size()), static_cast<uint32_t>(r));
    set.files_.push_back(file);
  }
  return set;
}

int64_t ShardSet::read(int64_t i, int64_t* out) const {
  const auto [f, r] = index_.at(static_cast<size_t>(i));
  const File& file = *files_[f];
  const uint16_t* row = file.ids + static_cast<uint64_t>(r) * file.seq_len;
  const int64_t n = file.lengths[r];
  if (n > seq_len_)
    fail("shard row ", r, ": length ", n, " exceeds the sequence length ", seq_len_);
  for (int64_t t = 0; t < seq_len_; ++t) out[t] = t < n ? row[t] : 0;
  return n;
}

}  // namespace slimbert

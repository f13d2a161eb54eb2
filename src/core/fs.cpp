#include "slimbert/core/fs.h"

#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "slimbert/core/error.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

std::string unique_suffix() {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(getpid()));
  return cat(".tmp-", getpid(), "-", std::hex, rng() & 0xffffffu);
}

}  // namespace

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, ": file not found");
  if (fs::is_directory(path, ec)) fail(path, ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open for reading: ", std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, ": read error");
  return data;
}

std::vector<std::string> split_lines(std::string_view text, bool strip_cr) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    std::string line(text.substr(start, nl - start));
    if (strip_cr && !line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = nl + 1;
  }
  return lines;
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer) {
  const std::string tmp = path + unique_suffix();
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, ": cannot write: ", std::strerror(errno));
  try {
    writer(f);
    if (std::fflush(f) != 0 || std::ferror(f)) fail(path, ": write failed: ", std::strerror(errno));
    if (fsync(fileno(f)) != 0) fail(path, ": fsync failed: ", std::strerror(errno));
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    fail(path, ": close failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    fail(path, ": cannot rename temporary file into place: ", std::strerror(err));
  }
}

void write_file_atomic(const std::string& path, std::string_view content) {
  write_file_atomic(path, [&](std::FILE* f) {
    if (!content.empty() && std::fwrite(content.data(), 1, content.size(), f) != content.size())
      fail(path, ": write failed: ", std::strerror(errno));
  });
}

bool remove_tree(const std::string& path) {
  // nftw, not std::filesystem::remove_all: a pip PyTorch's libtorch.so exports its own copy of
  // remove_all, which the dynamic linker may bind instead of libstdc++'s, and that copy crashes
  // (seen with torch 2.11 on Ubuntu 24.04).
  auto remove_entry = [](const char* entry, const struct stat*, int, struct FTW*) {
    return std::remove(entry) == 0 || errno == ENOENT ? 0 : -1;
  };
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return errno == ENOENT;
  return nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

std::vector<std::string> remove_stale_staging(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const size_t at = name.rfind(".tmp-");
    if (at == std::string::npos) continue;
    // ".tmp-<pid>-<hex>", as unique_suffix writes it.
    const std::string rest = name.substr(at + 5);
    const size_t dash = rest.find('-');
    if (dash == std::string::npos || dash == 0 || dash > 10) continue;
    const std::string pid_text = rest.substr(0, dash);
    if (pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(pid_text);
    if (pid == getpid() || (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    if (remove_tree(e.path().string())) removed.push_back(e.path().string());
  }
  return removed;
}

void write_dir_atomic(const std::string& dir, const std::function<void(const std::string&)>& fill) {
  fs::path target = fs::path(dir).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail(parent.string(), ": cannot create directory: ", ec.message());
  if (fs::exists(target) && !fs::is_directory(target))
    fail(target.string(), ": exists and is not a directory");

  const fs::path staging = parent / (target.filename().string() + unique_suffix());
  fs::create_directory(staging, ec);
  if (ec)
    fail(target.string(), ": cannot create staging directory ", staging.string(), ": ",
         ec.message());
  try {
    fill(staging.string());
  } catch (...) {
    remove_tree(staging.string());
    throw;
  }
  // Swap: the old directory survives until the new one is in place.
  fs::path old;
  if (fs::exists(target)) {
    old = parent / (target.filename().string() + ".old" + unique_suffix());
    fs::rename(target, old, ec);
    if (ec) {
      remove_tree(staging.string());
      fail(target.string(), ": cannot move the previous directory aside: ", ec.message());
    }
  }
  fs::rename(staging, target, ec);
  if (ec) {
    std::error_code ignore;
    if (!old.empty()) fs::rename(old, target, ignore);
    remove_tree(staging.string());
    fail(target.string(), ": cannot move the new directory into place: ", ec.message());
  }
  if (!old.empty()) remove_tree(old.string());
}

}  // namespace slimbert

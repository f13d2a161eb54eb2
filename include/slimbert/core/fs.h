// File helpers shared by every writer: nothing is ever half-written.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace slimbert {

// Reads a whole file; throws InputError naming the path when it cannot.
std::string read_file(const std::string& path);

// The lines of a text (without the '\n'; a last line without one counts). With `strip_cr`, a
// trailing '\r' is removed too (files written on Windows).
std::vector<std::string> split_lines(std::string_view text, bool strip_cr);

// Writes `path` atomically: the content goes to a temporary file in the same directory,
// is flushed to disk, and is renamed over `path` only when complete.
void write_file_atomic(const std::string& path, std::string_view content);

// Streams into a temporary file via `writer(fd-backed FILE*)`, then renames. On any error the
// temporary is removed and `path` is untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer);

// Removes a file or a directory tree (symlinks themselves, not their targets); true when gone.
bool remove_tree(const std::string& path);

// Removes the entries of `dir` that an atomic write of a process that no longer exists left
// behind (staging directories and temporary files, named "<name>.tmp-<pid>-<hex>"); returns
// their paths. Entries of live processes are kept: they may be writing now.
std::vector<std::string> remove_stale_staging(const std::string& dir);

// Builds a directory atomically: `fill(staging_dir)` writes into a fresh sibling directory,
// which then replaces `dir` (an existing `dir` is swapped out and removed only afterwards).
void write_dir_atomic(const std::string& dir, const std::function<void(const std::string&)>& fill);

}  // namespace slimbert

// Files that are replaced whole: a crash, a kill or a full disk at any point leaves the old
// version or the complete new one, never a truncated file where a reader expects one.
#pragma once
#include <cstdio>
#include <string>

namespace owlore {

// Writes `path` so that a crash at any point leaves either the old file or the complete new one:
// bytes go to a temporary file beside it; commit() flushes, fsyncs, renames over `path` and
// fsyncs the directory. Destroyed without commit() (an exception mid-write), the temporary file
// is removed and `path` is untouched.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  // Flush + fsync the temporary file, but do not rename yet (lets several files be made durable
  // before any of them replaces its old version).
  void sync();
  void commit();  // sync (if not yet) + rename + directory fsync
  // fsync of a directory, so that renames in it survive a power loss (best effort).
  static void sync_directory(const std::string& dir);
  const std::string& path() const { return path_; }

 private:
  std::string path_, temp_path_;
  std::FILE* file_ = nullptr;
  bool synced_ = false, committed_ = false;
};

// Replaces `path` with `text` through an AtomicFile.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace owlore

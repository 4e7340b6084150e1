// How every reader in owlore opens an input file. A FIFO, socket or device where a model,
// config, tokenizer or data file is expected would block open() or read() forever (a FIFO with
// no writer) or read as something it is not (a directory reads as empty, /dev/zero never ends),
// so a reader accepts only a regular file and says what it found instead. Directories are
// checked by the callers that expect one (a checkpoint directory), never opened here.
#pragma once
#include <cstdint>
#include <string>

namespace owlore {

// A regular file opened read-only. The type is checked twice: stat() before opening, so a
// device is never opened (opening one can have effects), and fstat() of the opened descriptor,
// so a file swapped for a FIFO between the two is still refused; the open itself is
// non-blocking, so even then it returns. Throws owlore::Error naming the path and `what`
// ("data file", "config.json", ...). Owns the descriptor and closes it in its destructor.
class RegularFile {
 public:
  RegularFile(const std::string& path, const std::string& what);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }  // as fstat() saw it when the file was opened
  const std::string& path() const { return path_; }
  // Reads up to n bytes at offset into dst; returns how many (fewer only at the end of the file).
  size_t read_at(uint64_t offset, void* dst, size_t n) const;
  // The first n bytes (fewer when the file is shorter); the whole file.
  std::string read_prefix(size_t n) const;
  std::string read_all() const;

 private:
  std::string path_, what_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Whether `path` names a regular file (symbolic links followed); never opens it.
bool is_regular_file(const std::string& path);
// Throws, as RegularFile does, unless `path` is a regular file (symbolic links followed).
void require_regular_file(const std::string& path, const std::string& what);
// The whole file as bytes.
std::string read_regular_file(const std::string& path, const std::string& what);

}  // namespace owlore

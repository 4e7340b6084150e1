#include "base/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace owlore {

AtomicFile::AtomicFile(const std::string& path)
    : path_(path), temp_path_(path + ".tmp." + std::to_string(::getpid())) {
  file_ = std::fopen(temp_path_.c_str(), "wb");
  if (!file_) fail(path, ": cannot create temporary file ", temp_path_, ": ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) std::remove(temp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  OWLORE_REQUIRE(file_ && !synced_, path_, ": write after sync/commit");
  if (n && std::fwrite(data, 1, n, file_) != n) fail(path_, ": write failed: ", std::strerror(errno));
}

void AtomicFile::sync() {
  if (synced_) return;
  OWLORE_REQUIRE(file_, path_, ": sync of a closed file");
  if (std::fflush(file_) != 0) fail(path_, ": flush failed: ", std::strerror(errno));
  if (::fsync(::fileno(file_)) != 0) fail(path_, ": fsync failed: ", std::strerror(errno));
  const int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) fail(path_, ": close failed: ", std::strerror(errno));
  synced_ = true;
}

void AtomicFile::commit() {
  sync();
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail(path_, ": cannot rename ", temp_path_, " over it: ", std::strerror(errno));
  committed_ = true;
  // The rename itself lives in the directory: fsync it so the new name survives a power loss.
  const size_t slash = path_.find_last_of('/');
  sync_directory(slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash)));
}

void AtomicFile::sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_file_atomically(const std::string& path, const std::string& text) {
  AtomicFile file(path);
  file.write(text.data(), text.size());
  file.commit();
}

}  // namespace owlore

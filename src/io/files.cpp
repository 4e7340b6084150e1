#include "io/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace owlore {

namespace {
const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

void require_regular(const std::string& path, const std::string& what, mode_t mode) {
  if (!S_ISREG(mode)) fail(path, ": ", what, " is ", file_kind(mode), ", expected a regular file");
}

void stat_regular(const std::string& path, const std::string& what) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(path, ": cannot open ", what, ": ", std::strerror(errno));
  require_regular(path, what, st.st_mode);
}
}  // namespace

RegularFile::RegularFile(const std::string& path, const std::string& what) : path_(path), what_(what) {
  stat_regular(path, what);
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) fail(path, ": cannot open ", what, ": ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    fail(path, ": cannot stat ", what, ": ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    require_regular(path, what, st.st_mode);
  }
  // O_NONBLOCK only mattered for the open; reads of a regular file ignore it, clear it anyway.
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
  size_ = (uint64_t)st.st_size;
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

size_t RegularFile::read_at(uint64_t offset, void* dst, size_t n) const {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd_, static_cast<char*>(dst) + got, n - got, (off_t)(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(path_, ": cannot read ", what_, ": ", std::strerror(errno));
    if (r == 0) break;
    got += (size_t)r;
  }
  return got;
}

std::string RegularFile::read_prefix(size_t n) const {
  std::string out(n, '\0');
  out.resize(read_at(0, out.data(), n));
  return out;
}

std::string RegularFile::read_all() const {
  // Reads to the end rather than trusting size(): the file may have grown since the fstat.
  std::string out((size_t)size_ + 1, '\0');
  size_t got = 0;
  for (;;) {
    if (got == out.size()) out.resize(out.size() * 2);
    const size_t r = read_at(got, out.data() + got, out.size() - got);
    if (r == 0) break;
    got += r;
  }
  out.resize(got);
  return out;
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void require_regular_file(const std::string& path, const std::string& what) { stat_regular(path, what); }

std::string read_regular_file(const std::string& path, const std::string& what) {
  return RegularFile(path, what).read_all();
}

}  // namespace owlore

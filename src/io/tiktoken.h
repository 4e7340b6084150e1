// Meta's LLaMA-3 tokenizer.model: tiktoken's format, one "base64(token bytes) rank" line per
// mergeable token, ranks dense from 0. tiktoken encodes with rank-BPE: the adjacent pair whose
// concatenation has the lowest rank merges first, and a piece that is itself a token is that
// token. owlore has one byte-level BPE (io/tokenizer.h), so the file becomes a BpeVocab:
//   - tokens: each token's bytes as GPT-2 byte-level symbols, id = rank;
//   - merges: for each multi-byte token, in rank order, the two parts rank-BPE splits its own
//     bytes into when only lower ranks may merge (a token that rank-BPE never reaches has none);
//     a pair merges inside any text exactly when it merges inside its own token, so these
//     merges with ignore_merges reproduce tiktoken;
//   - the 256 special tokens Meta's llama_models/llama3/tokenizer.py appends after the ranks
//     (<|begin_of_text|> = 128000 ...), as control tokens; bos <|begin_of_text|>, eos
//     <|end_of_text|>, pad <|finetune_right_pad_id|> as that file sets them;
//   - pre "llama-bpe" (its split regex), ignore_merges.
#pragma once
#include <string>

#include "io/tokenizer.h"

namespace owlore {

// Whether file content starting with `prefix` is a tiktoken ranks file (its first line is
// "base64 rank"), as opposed to a SentencePiece protobuf, which shares the name tokenizer.model.
bool looks_like_tiktoken(const std::string& prefix);

// Errors name `path` and the line.
BpeVocab parse_tiktoken_model(const std::string& text, const std::string& path);
BpeVocab load_tiktoken_model(const std::string& path);

}  // namespace owlore

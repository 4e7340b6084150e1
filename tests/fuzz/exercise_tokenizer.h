// What the tokenizer fuzz targets do with a Tokenizer they managed to build: encode a fixed text
// that touches every path of encode (specials, isolated digits, whitespace runs, multi-byte and
// invalid UTF-8, bytes a vocabulary may lack), with and without special parsing, and decode the
// ids. A built tokenizer must do this without any error: every id encode returns is in its
// vocabulary, so decode cannot fail.
#pragma once
#include <string>

#include "io/tokenizer.h"

inline void exercise_tokenizer(const owlore::Tokenizer& tokenizer) {
  static const std::string text =
      "<|im_start|>user\nHello, world! It's 2024: 3.14159 x\t\ty  \n\n z<|im_end|>\n"
      "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\xa6\x89 \xff\xc0 bad\x80utf8 \x04\x7f ok";
  for (bool parse_special : {true, false}) {
    const std::string back = tokenizer.decode(tokenizer.encode(text, parse_special));
    if (back.size() > text.size() * 64) __builtin_trap();  // a token stands for a bounded text
  }
  for (int id = 0; id < tokenizer.size(); id += 1 + tokenizer.size() / 64) {
    (void)tokenizer.token_bytes(id);
    (void)tokenizer.is_special(id);
  }
}

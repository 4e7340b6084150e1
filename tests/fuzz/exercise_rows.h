// What the data fuzz targets do with a TokenStream a reader returned: pack it into rows the way
// the trainer does (io/dataset.h) at a few sequence lengths, then draw every training row once
// through next_batch and every validation row through fixed_batch, checking that each target is
// the next input token or masked, and that every token is one the stream holds. pack_dataset may
// refuse a stream too short for the rows (an owlore::Error); anything else is a bug.
#pragma once
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "base/tokens.h"
#include "io/dataset.h"
#include "io/token_data.h"

inline void exercise_rows(const owlore::TokenStream& stream) {
  if (stream.tokens.empty()) __builtin_trap();  // readers promise tokens or an error
  if (!stream.loss_mask.empty() && stream.loss_mask.size() != stream.tokens.size()) __builtin_trap();
  int32_t max_token = -1;
  for (int32_t t : stream.tokens) {
    if (t < 0) __builtin_trap();
    max_token = t > max_token ? t : max_token;
  }
  for (int seq_len : {5, 64}) {
    owlore::Dataset data;
    try {
      data = owlore::pack_dataset(stream.tokens, stream.loss_mask, seq_len, 0.1);
    } catch (const owlore::Error&) {
      continue;
    }
    if (data.max_token != max_token || data.train.count() < 1 || data.val.count() < 1) __builtin_trap();
    if (data.train.count() + data.val.count() != (int64_t)stream.tokens.size() / (seq_len + 1)) __builtin_trap();
    const int B = 3;
    std::vector<int32_t> inputs(B * seq_len), targets(B * seq_len);
    auto check = [&] {
      for (int b = 0; b < B; b++)
        for (int t = 0; t < seq_len; t++) {
          const int32_t in = inputs[b * seq_len + t], target = targets[b * seq_len + t];
          if (in < 0 || in > max_token) __builtin_trap();
          if (target != owlore::kIgnoreIndex && (target < 0 || target > max_token)) __builtin_trap();
          if (t + 1 < seq_len && target != owlore::kIgnoreIndex && target != inputs[b * seq_len + t + 1])
            __builtin_trap();
        }
    };
    owlore::BatchCursor cursor;
    cursor.seed = 7;
    for (int64_t drawn = 0; drawn < data.train.count(); drawn += B) {
      owlore::next_batch(data.train, cursor, B, inputs.data(), targets.data());
      check();
    }
    for (int64_t first = 0; first < data.val.count(); first += B) {
      owlore::fixed_batch(data.val, first, B, inputs.data(), targets.data());
      check();
    }
  }
}

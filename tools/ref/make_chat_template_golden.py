#!/usr/bin/env python3
"""Renders conversations with each family's published chat template (chat_templates.py) the way
transformers' apply_chat_template does (jinja2 sandbox, trim_blocks, lstrip_blocks,
raise_exception, bos_token/eos_token) and writes tests/data/chat_template_golden.json.

  /work/venv-ref/bin/python tools/ref/make_chat_template_golden.py
"""
import json
import os
import sys

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, os.path.dirname(__file__))
from chat_templates import SPECIAL_TOKENS, TEMPLATES  # noqa: E402


def raise_exception(message):
    raise TemplateError(message)


def render(name, messages, add_generation_prompt):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(TEMPLATES[name]).render(
        messages=messages, add_generation_prompt=add_generation_prompt, **SPECIAL_TOKENS[name])


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "2+3 = 5"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}],
    [{"role": "user", "content": "Name a bird."}, {"role": "assistant", "content": "An owl."},
     {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "A heron, \u00e9l\u00e9gant."}],
    [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hello\nthere"},
     {"role": "assistant", "content": "Bonjour"}, {"role": "user", "content": "Thanks"},
     {"role": "assistant", "content": "De rien !"}],
    # Whitespace at the edges: llama2 strips it, llama3 trims it, the others keep it.
    [{"role": "user", "content": "  padded question \n"}, {"role": "assistant", "content": " padded answer\n"}],
]
PROMPTS = [  # add_generation_prompt=True, as owlore generate renders them
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Name a bird."}, {"role": "assistant", "content": "An owl."},
     {"role": "user", "content": "Another?"}],
]


def main():
    out = {"templates": TEMPLATES, "cases": []}
    for name in TEMPLATES:
        for messages in CONVERSATIONS:
            out["cases"].append({"template": name, "messages": messages, "add_generation_prompt": False,
                                 "text": render(name, messages, False)})
        for messages in PROMPTS:
            out["cases"].append({"template": name, "messages": messages, "add_generation_prompt": True,
                                 "text": render(name, messages, True)})
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "chat_template_golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)}: {len(out['cases'])} cases")


if __name__ == "__main__":
    main()

"""Plain-language questions: structural ones become index queries; the rest retrieve the definitions they
name, and a local Hugging Face chat model (when one is given) answers from them.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ..engine.engine import on_model_thread
from ..index import store
from ..index.query import IDENTIFIER_RE, Hit, definition_hit

STRUCTURAL = [        # (pattern, query word): the first group is the name asked about
    (r"where (?:is|are) `?(\w+)`? (?:defined|declared)|(?:definition|declaration) of `?(\w+)", "def"),
    (r"who calls `?(\w+)|callers? of `?(\w+)|where (?:is|are) `?(\w+)`? (?:used|called|referenced)"
     r"|(?:references?|uses|usages?) (?:to|of) `?(\w+)", "refs"),
    (r"what implements `?(\w+)|(?:implementations?|impls?) of `?(\w+)|which types implement `?(\w+)"
     r"|who implements `?(\w+)", "impls"),
    (r"(?:outline|structure) of `?([\w./-]+\.rs)|what(?: is|'s) in `?([\w./-]+\.rs)", "outline"),
]
MODULE_TREE = re.compile(r"\bmodule (?:tree|structure|layout)\b|\bwhat modules\b", re.I)
CODE_REQUEST = re.compile(r"^\s*(?:please\s+)?(?:write|implement|generate|create|add|make)\b"
                          r"|\b(?:a|an) (?:function|method|fn|test) (?:that|which|to)\b", re.I)
CONTEXT_DEFINITIONS = 6
STOPWORDS = set("the and how does did what where which who why when this that these with from into work works "
                "are was were can could should would about there here its for use used using code show tell "
                "explain please function method type".split())


def structural(question: str) -> str | None:
    """The index query a structural question asks ("who calls parse?" → "refs parse"), or None."""
    if MODULE_TREE.search(question):
        return "tree"
    for pattern, word in STRUCTURAL:
        match = re.search(pattern, question, re.I)
        if match:
            return f"{word} {next(g for g in match.groups() if g)}"
    return None


def asks_for_code(text: str) -> bool:
    return bool(CODE_REQUEST.search(text))


def retrieve(db: store.Connection, question: str) -> list[Hit]:
    """The definitions a question names (exact names first), then full-text matches of its other words
    (stemmed: "parsing" finds parse, parser, parse_command)."""
    words = [w for w in dict.fromkeys(IDENTIFIER_RE.findall(question)) if len(w) > 2 and w.lower() not in STOPWORDS]
    found = [s for word in words for s in store.find(db, word, limit=3)]
    found += [s for word in words for s in store.search(db, _stem(word), 4)]
    hits = [definition_hit(s) for s in found]
    unique = list({h.location: h for h in hits}.values())
    return unique[:CONTEXT_DEFINITIONS]


def related_names(db: store.Connection, text: str, limit: int = 3) -> list[str]:
    """Functions, types and macros whose names or docs match `text`'s words, best first (a code request's doc
    comment links them, so the model sees the repository's own names where it writes)."""
    names: list[str] = []
    for word in dict.fromkeys(IDENTIFIER_RE.findall(text)):
        if len(word) > 2 and word.lower() not in STOPWORDS:
            names += [s.name for s in store.search(db, _stem(word), 4)
                      if s.kind in ("fn", "struct", "enum", "trait", "macro", "const") and s.scope != "tests"]
    return list(dict.fromkeys(names))[:limit]


def _stem(word: str) -> str:
    """A crude English stem, for prefix search: "parsing" → "pars", "formatted" → "format"."""
    if len(word) <= 5:
        return word
    stem = re.sub(r"(?:ing|ed|es|er|s)$", "", word)
    return stem[:-1] if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "aeiou" else stem


def context_of(root: Path, hits: list[Hit], lines: int = 30) -> str:
    """The source of each retrieved definition (its first `lines` lines), with its location."""
    parts = []
    for hit in hits:
        text = (root / hit.path).read_text(encoding="utf-8", errors="replace").splitlines()
        code = "\n".join(text[hit.line - 1:hit.line - 1 + lines])
        parts.append(f"{hit.location} ({hit.kind} {hit.name}):\n```rust\n{code}\n```")
    return "\n\n".join(parts)


class ChatModel:
    """A local Hugging Face chat model, loaded offline with transformers (nothing is ever downloaded)."""

    def __init__(self, folder: Path) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} is not a Hugging Face model folder (no config.json)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = on_model_thread(      # its load too: one OpenMP team per process
                lambda: AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval())
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"cannot load the chat model in {folder}: {err}") from err
        if not self.tokenizer.chat_template:
            raise ValueError(f"{folder} has no chat template: pass a chat (instruction-tuned) model")
        self.name = folder.name

    def answer(self, question: str, context: str, on_text: Callable[[str], None], stopped: threading.Event,
               max_new_tokens: int = 512) -> str:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return stopped.is_set()

        messages = [{"role": "system", "content": "You answer questions about a Rust repository from the "
                     "definitions shown, citing them as path:line."},
                    {"role": "user", "content": f"{context}\n\nQuestion: {question}"}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generate = partial(self.model.generate, **ids, streamer=streamer, max_new_tokens=max_new_tokens,
                           do_sample=False, stopping_criteria=StoppingCriteriaList([Stop()]),
                           pad_token_id=self.tokenizer.eos_token_id)
        # on the model thread, as the completion engine's forwards are
        worker = threading.Thread(target=on_model_thread, args=(generate,), daemon=True)
        worker.start()
        text = ""
        for piece in streamer:
            text += piece
            on_text(text)
        worker.join()
        return text

"""Code requests answered by the completion engine with the whole repository in context.

The request becomes a doc comment (linking the repository items its words find) above an item head at a
sensible place: inside a new `impl` block of a
type the request names (in that type's file), else at the end of the file that defines most of the names it
mentions. Our model then writes the signature (a line completion after `pub fn `) and the body (a block
completion on the empty line of the braces), so generated code uses the repository's own names.
"""
from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engine.engine import Engine, Request
from ..index import store
from ..index.query import IDENTIFIER_RE
from .questions import related_names

TYPE_KINDS = ("struct", "enum", "union")
SIGNATURE_LINES = 8
REQUEST_HEAD = re.compile(r"^(?:please\s+)?(?:write|implement|generate|create|add|make)\s+(?:me\s+)?"
                          r"(?:a|an)\s+(?:function|method|fn)\s+(?:that|which|to)\s+", re.I)


@dataclass(frozen=True)
class Placement:
    path: str            # the file the item goes into (only the buffer changes; nothing is written to disk)
    saved: str           # the file as it is
    head: str            # the buffer up to the cursor after `pub fn `
    shown: str           # what the user sees before the generated signature
    indent: str          # the item's indentation
    closing: str         # what closes the item (and its impl block)


def place(db: store.Connection, root: Path, what: str) -> Placement:
    """Where the item for `what` goes, from the names it mentions that the index defines."""
    words = [w for w in IDENTIFIER_RE.findall(what) if len(w) > 2]
    related = related_names(db, what)
    doc = _doc(what) + (" See " + ", ".join(f"[`{name}`]" for name in related) + "." if related else "")
    for word in words:
        types = (store.find(db, word, kinds=TYPE_KINDS, limit=1)   # "the store" names `Store` too
                 or store.find(db, word[:1].upper() + word[1:], kinds=TYPE_KINDS, limit=1))
        if types:
            name = types[0].name
            path, saved = types[0].path, _read(root, types[0].path)
            shown = f"impl {name} {{\n    /// {doc}\n    pub fn "
            return Placement(path, saved, saved.rstrip() + "\n\n" + shown, shown, "    ", "\n    }\n}")
    defining = Counter(s.path for w in words for s in store.find(db, w, limit=5))
    files = store.file_paths(db)
    if not files:
        raise ValueError("the workspace has no indexed Rust files to write code into")
    path = (defining.most_common(1)[0][0] if defining else
            next((f for f in ("src/lib.rs", "src/main.rs") if f in files), files[0]))
    saved = _read(root, path)
    shown = f"/// {doc}\npub fn "
    return Placement(path, saved, saved.rstrip() + "\n\n" + shown, shown, "", "\n}")


def generate(engine: Engine, root: Path, placement: Placement, on_text: Callable[[str], None],
             stopped: threading.Event) -> str:
    """Signature, then body, each streamed into `on_text` as the whole item so far; the item's final text."""
    p = placement
    if not engine.prepare(root, p.path, stopped):
        return ""
    signature = _signature(engine, root, p, on_text, stopped)
    shown = p.shown + signature + "\n"
    if stopped.is_set():
        return shown.rstrip()
    before = p.head + signature + "\n" + p.indent + "    "
    body_buffer = before + "\n" + p.indent + "}"
    body = engine.complete_sync(Request(root, p.path, body_buffer, len(before), {p.path: p.saved}),
                                lambda t: on_text(shown + p.indent + "    " + t), stopped).text
    return shown + p.indent + "    " + body.strip() + p.closing


def _signature(engine: Engine, root: Path, p: Placement, on_text: Callable[[str], None],
               stopped: threading.Event) -> str:
    """The signature after `pub fn `, a line completion at a time (rustfmt breaks long parameter lists over
    lines), up to and including its `{`."""
    signature = ""
    for _ in range(SIGNATURE_LINES):
        buffer = p.head + signature
        line = engine.complete_sync(Request(root, p.path, buffer, len(buffer), {p.path: p.saved}),
                                    lambda t: on_text(p.shown + signature + t), stopped).text
        if "{" in line:
            return signature + line[:line.index("{")].rstrip() + " {"
        if not line.strip() or stopped.is_set():
            break
        signature += line.rstrip() + "\n"
    return signature.rstrip() + " {"


def _doc(what: str) -> str:
    """The request as a doc comment's sentence: "write a function that counts keys" → "Counts keys"."""
    text = REQUEST_HEAD.sub("", " ".join(what.split())).rstrip(".")
    return text[:1].upper() + text[1:] + "."


def _read(root: Path, path: str) -> str:
    return (root / path).read_text(encoding="utf-8", errors="replace")

"""The shape of a suggestion: one line or a block, where it stops, and how it is tidied before it is shown.

- multi-line only on an empty line of an empty block body (`fn f() {⏎ | ⏎}`), as tree-sitter reads the buffer;
- a block stops at an unmatched closing bracket or at a line indented less than the cursor's line;
- a loop stops: a block line that repeats the line before it, or a piece with a name in it written a fourth
  time in a row within a line (`TcpStream, TcpStream, …`); the repeats are dropped. A small greedy model
  falls into such loops and would otherwise decode them to the token limit;
- whatever the suggestion would repeat of the text after the cursor is cut; inside a line, brackets it
  opened and left open are closed (the text after the cursor closes the line's own); indentation follows
  the file (tabs or spaces).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..index.parse import parser

OPEN, CLOSE = "([{", ")]}"
PAIR = dict(zip(CLOSE, OPEN))
BLOCK_NODES = ("block", "declaration_list", "field_declaration_list", "enum_variant_list", "match_block")
NAME = re.compile(r"\b[A-Za-z_]\w{2}")   # a name of three characters or more (not a number such as 0xFF)


@dataclass(frozen=True)
class Shape:
    multiline: bool
    indent: str          # indentation of the cursor's line
    line_prefix: str     # text before the cursor on its line
    line_suffix: str     # text after the cursor on its line
    tab_indent: bool     # the file indents with tabs


def _indent_of(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))]


def shape_at(text: str, offset: int) -> Shape:
    """How to complete at character `offset` of `text`."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end < 0 else line_end
    before, after = text[line_start:offset], text[offset:line_end]
    tab_indent = "\n\t" in text and text.count("\n\t") >= text.count("\n    ")
    multiline = False
    if not before.strip() and not after.strip():
        source = text.encode()
        byte = len(text[:offset].encode())
        node = parser().parse(source).root_node.descendant_for_byte_range(byte, byte)
        while node is not None and node.type not in BLOCK_NODES:
            node = node.parent
        multiline = node is not None and node.named_child_count == sum(
            1 for c in node.named_children if c.type in ("line_comment", "block_comment"))
    return Shape(multiline, _indent_of(text[line_start:line_end]), before, after, tab_indent)


def cut(text: str, shape: Shape) -> tuple[str, bool]:
    """The part of generated `text` to keep, and whether generation should stop (a stop rule fired)."""
    if not shape.multiline:
        newline = text.find("\n")
        line = text if newline < 0 else text[:newline]
        loop = _inline_loop(line)
        if loop:
            return line[:-loop], True
        return (text, False) if newline < 0 else (line, True)
    depth = 0
    lines = text.split("\n")
    kept: list[str] = []
    for n, line in enumerate(lines):
        complete = n < len(lines) - 1
        if n > 0 and line.strip() and len(_indent_of(line)) < len(shape.indent) and (complete or line.strip()):
            return "\n".join(kept), True          # a dedent: the block is over
        if complete and kept and line.strip() == kept[-1].strip() and any(c.isalnum() for c in line):
            return "\n".join(kept), True          # a loop: the line again
        for i, ch in enumerate(line):
            if ch in OPEN:
                depth += 1
            elif ch in CLOSE:
                depth -= 1
                if depth < 0:                     # closes the block we are in
                    kept.append(line[:i].rstrip())
                    return "\n".join(kept).rstrip(), True
        kept.append(line)
    return text, False


def _inline_loop(line: str) -> int:
    """How many characters of `line`'s end repeat a piece holding a name and more than a word: the last three of
    four copies in a row of a 2-40 character piece (0 when there is no such loop)."""
    for size in range(2, min(40, len(line) // 4) + 1):
        piece = line[-size:]
        if line.endswith(piece * 4) and NAME.search(piece * 2) and not (piece * 2).isidentifier():  # `aaaa`: a word
            return 3 * size
    return 0


def tidy(text: str, shape: Shape, following: str = "") -> str:
    """Final clean-up of a suggestion; `following` is the document text after the cursor."""
    text = text.rstrip() if shape.multiline else text.rstrip("\n")
    if shape.multiline:
        text = "\n".join(line.rstrip() for line in text.split("\n"))
        if shape.tab_indent:
            text = "\n".join(_tabs(line) for line in text.split("\n"))
        lines = text.split("\n")
        rest = [line.rstrip() for line in following.lstrip("\n").split("\n")]
        while lines and len(lines) > 1 and lines[-1].strip() and lines[-1].rstrip() in rest[:3]:
            lines.pop()                           # the block's tail is already in the document
        return "\n".join(lines)
    text = _drop_overlap(text, shape.line_suffix)
    if not shape.line_suffix.strip():  # at the end of a line an open bracket may go on to the next line
        return text
    return text + _closers(text, shape.line_prefix, shape.line_suffix)


def _tabs(line: str) -> str:
    indent = _indent_of(line)
    return "\t" * (len(indent.replace("\t", "    ")) // 4) + line[len(indent):]


def _drop_overlap(text: str, suffix: str) -> str:
    """Cut the longest tail of `text` that the text after the cursor starts with: `foo(x)` before `)` → `foo(x`."""
    suffix = suffix.rstrip()
    for n in range(min(len(text), len(suffix)), 0, -1):
        if text.endswith(suffix[:n]):
            return text[:-n]
    return text


def _unclosed(text: str) -> list[str]:
    stack: list[str] = []
    for ch in text:
        if ch in OPEN:
            stack.append(ch)
        elif ch in CLOSE and stack and stack[-1] == PAIR[ch]:
            stack.pop()
    return stack


def _closers(text: str, before: str, after: str) -> str:
    """Closing brackets for those `text` opened and left open. The closers right after the cursor close the
    line's earlier openers first; only the spare ones close the suggestion's outermost openers."""
    needed = "".join(CLOSE[OPEN.index(ch)] for ch in reversed(_unclosed(text)))
    leading = len(after.lstrip()) - len(after.lstrip().lstrip(CLOSE))
    spare = max(0, leading - len(_unclosed(before)))
    return needed[:len(needed) - spare]

"""Index-guided decoding (issue 19): where the text before the next token ends at a name position, the names the
workspace index knows there steer that token. Most wrong suggestions are wrong names; the index knows every
definition, so the model is nudged toward names that exist (monitor-guided decoding, Agrawal et al. 2023).

Name positions and their candidates:
- `value.` + partial: the members of value's type when the prefix says which it is (`value: Type`, `let value =
  Type::…`, `self` in an impl): the items of its impl blocks, its fields (the index's own queries);
- `Path::` + partial (or inside `Path::{A, `): a workspace type's members and variants, or a workspace module's
  items;
- a bare identifier (with `bare`, off by default: it cost the dev set a task): every name the workspace
  defines, the identifiers of the buffer, Rust's keywords and common std names.
Elsewhere (a receiver of unknown type, an external crate's path) nothing is steered: the index does not know
those names, and a boost toward the workspace's would push the right ones (`iter`, `unwrap`) away.

Steering is a boost, never a mask: the tokens that spell on toward a candidate (a prefix of its rest, or all
of it followed by punctuation) get `boost` nats more, so the model still chooses among them and may leave the
set where no candidate fits (a new name). Token healing and the copy model work after it unchanged.
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..index import store
from .context import KEYWORDS, receiver_type

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME_END = re.compile(r"(?:([A-Za-z_]\w*)\s*(\.|::)\s*)?([A-Za-z_]\w*)?$")
USE_LIST = re.compile(r"([A-Za-z_]\w*)::\{(?:[\w\s,]*,\s*)?([A-Za-z_]\w*)?$")   # `use a::b::{C, D` : b's items
NAME_CHARS = 120    # a qualifier, its separator and a partial name fit in this many characters
TOKEN_HEAD = re.compile(rb" ?[A-Za-z0-9_]+")
RUST_WORDS = KEYWORDS | set("""Self self crate super loop println format vec assert assert_eq panic unreachable
todo write writeln matches dbg Default Clone Debug Copy PartialEq Eq Hash Iterator From Into AsRef""".split())


@dataclass(frozen=True)
class GuideConfig:
    enabled: bool = True
    boost: float = 3.0            # nats added to the logits of tokens that continue a known name
    bare: bool = False            # steer bare identifiers too (every workspace name), not only after `.` / `::`:
                                  # off by default, it cost the dev set a task (BENCHMARKS.md, issue 19)
    max_candidates: int = 8192    # more names than this at a position: nothing steered (too little to say)


class Spellings:
    """The vocabulary as spellings: a token by its exact bytes, and the tokens that spell a whole identifier (with
    an optional leading space) then go on with punctuation (`len()`), by that identifier."""

    def __init__(self, token_bytes: list[bytes]) -> None:
        self.exact: dict[bytes, int] = {}
        self.then_punct: dict[bytes, list[int]] = {}
        for i, piece in enumerate(token_bytes):
            self.exact.setdefault(piece, i)
            head = TOKEN_HEAD.match(piece)
            if head and head.end() < len(piece):
                self.then_punct.setdefault(head.group(), []).append(i)

    def continuing(self, rest: str, spaced: bool) -> list[int]:
        """Tokens that spell on along `rest` (the part of a name still to write): a prefix of it, or all of it
        followed by punctuation; `spaced`: with a space before it too (a name that starts after `=`, `(`, …)."""
        rest_bytes = rest.encode()
        out: list[int] = []
        for lead in (b"", b" ") if spaced else (b"",):
            for k in range(1, len(rest_bytes) + 1):
                token = self.exact.get(lead + rest_bytes[:k])
                if token is not None:
                    out.append(token)
            out += self.then_punct.get(lead + rest_bytes, [])
        return out


class Names:
    """A workspace's candidate names by position kind, and the tokens that spell them, read from its index and
    cached until the index changes (a request then pays a dictionary lookup, not a pass over every name)."""

    def __init__(self, reading: Callable, version: Callable[[], object]) -> None:
        self.reading, self.version = reading, version
        self._names: dict[tuple, list[str]] = {}
        self._ids: dict[tuple, frozenset[int]] = {}
        self._seen: object = None

    def _fresh(self) -> None:
        if self.version() != self._seen:
            self._names.clear()
            self._ids.clear()
            self._seen = self.version()

    def _cached(self, key: tuple, read: Callable[[store.Connection], list[str]]) -> list[str]:
        self._fresh()
        if key not in self._names:
            with self.reading() as db:
                self._names[key] = sorted(set(read(db)))
        return self._names[key]

    def members(self, type_name: str) -> list[str]:
        return self._cached(("members", type_name), lambda db: store.type_member_names(db, type_name))

    def path(self, qualifier: str) -> list[str]:
        """After `qualifier::`: a workspace type's members, else a workspace module's items (none: not steered)."""
        return self._cached(("path", qualifier), lambda db: store.type_member_names(db, qualifier)
                            or store.module_item_names(db, qualifier))

    def everything(self) -> list[str]:
        return self._cached(("all",), store.item_names)

    def token_ids(self, key: tuple, names: list[str], partial: str, spaced: bool,
                  spellings: Spellings) -> frozenset[int]:
        """`spelling_ids` of `names` (the `key` list's names that start with `partial`), remembered."""
        self._fresh()
        if (key, partial, spaced) not in self._ids:
            self._ids[key, partial, spaced] = spelling_ids(spellings, names, partial, spaced)
        return self._ids[key, partial, spaced]


def spelling_ids(spellings: Spellings, names: list[str], partial: str, spaced: bool) -> frozenset[int]:
    """The tokens that write on from `partial` toward one of `names` (each starts with it)."""
    ids: set[int] = set()
    for name in names:
        if name != partial:
            ids.update(spellings.continuing(name[len(partial):], spaced))
    return frozenset(ids)


def starting(names: list[str], partial: str) -> list[str]:
    """The names of a sorted list that start with `partial`."""
    return names[bisect.bisect_left(names, partial):bisect.bisect_left(names, partial + "\U0010ffff")]


class Guide:
    """One request's steering: the buffer before the cursor (for receiver types and local names) and the
    workspace's names; calling it boosts the logits before the next token."""

    def __init__(self, config: GuideConfig, spellings: Spellings, names: Names, prefix: str) -> None:
        self.config, self.spellings, self.names = config, spellings, names
        self.prefix, self.tail = prefix, prefix[-200:].encode()
        self._local: list[str] | None = None
        self._types: dict[str, str | None] = {}
        self._local_ids: dict[tuple[str, bool], frozenset[int]] = {}

    def position(self, before: str) -> tuple[tuple, list[str], str]:
        """At the end of `before`: (what kind of name goes there, the workspace's names for it, the part of the
        name already written); kind ("none",) where nothing is steered."""
        listed = USE_LIST.search(before)
        found = NAME_END.search(before[-NAME_CHARS:])   # it tries every start: ~55 µs a token on 200 characters
        qualifier, sep, partial = found.group(1), found.group(2), found.group(3) or ""
        if listed:
            qualifier, sep, partial = listed.group(1), "::", listed.group(2) or ""
        if sep == ".":
            if qualifier not in self._types:        # declarations come from the buffer, not the suggestion
                self._types[qualifier] = receiver_type(self.prefix, qualifier)
            type_name = self._types[qualifier]
            return ("members", type_name), self.names.members(type_name) if type_name else [], partial
        if sep == "::" and qualifier not in ("self", "super"):
            if qualifier == "Self":
                if "Self" not in self._types:
                    self._types["Self"] = receiver_type(self.prefix, "self")
                qualifier = self._types["Self"] or "Self"
            return ("path", qualifier), self.names.path(qualifier), partial
        if sep is None and self.config.bare and (partial or not before or not before[-1].isalnum()):
            return ("bare",), self.names.everything(), partial
        return ("none",), [], partial

    def _local_names(self) -> list[str]:
        """A bare name's candidates beyond the workspace's definitions: the buffer's identifiers, Rust's words."""
        if self._local is None:
            local = set(IDENTIFIER.findall(self.prefix[-20000:]))
            if self.prefix[-1:].isalnum() or self.prefix[-1:] == "_":   # not the name being typed at the cursor
                local.discard(IDENTIFIER.findall(self.prefix[-200:])[-1])
            self._local = sorted((local | RUST_WORDS) - set(self.names.everything()))
        return self._local

    def candidates(self, before: str) -> tuple[tuple, list[str], str]:
        """(kind, every name that may be written at the end of `before`, the part of it already written)."""
        kind, shared, partial = self.position(before)
        local = self._local_names() if kind == ("bare",) else []
        return kind, sorted(starting(shared, partial) + starting(local, partial)), partial

    def token_ids(self, before: str) -> list[int]:
        """The tokens that continue a candidate name at the end of `before` (none: not a name position)."""
        kind, shared, partial = self.position(before)
        shared = starting(shared, partial)
        local = starting(self._local_names(), partial) if kind == ("bare",) else []
        if not (shared or local) or len(shared) + len(local) > self.config.max_candidates:
            return []
        spaced = kind == ("bare",) and not partial and not before[-1:].isspace()
        ids = self.names.token_ids(kind, shared, partial, spaced, self.spellings)
        if local:
            if (partial, spaced) not in self._local_ids:
                self._local_ids[partial, spaced] = spelling_ids(self.spellings, local, partial, spaced)
            ids = ids | self._local_ids[partial, spaced]
        return list(ids)

    def __call__(self, logits: torch.Tensor, generated: str, pending: bytes) -> torch.Tensor:
        """`logits` with the continuing tokens boosted; the next token writes `pending` (healed bytes, the end of the
        buffer's prefix) and then goes on after `generated` (the suggestion's text so far)."""
        before = self.tail[:len(self.tail) - len(pending)].decode(errors="ignore") + generated
        ids = self.token_ids(before)
        if not ids:
            return logits
        boosted = logits.float().clone()
        boosted[ids] += self.config.boost
        return boosted

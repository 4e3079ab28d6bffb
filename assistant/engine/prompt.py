"""The prompt: token ids in the training layout (tokenizer/layout.py), with the segment boundaries the
state cache snapshots at; `assemble` gathers a request's context from its workspace and builds it.

    [<|repo_name|>name⏎ (<|file_sep|>path⏎ file)…]   repository part ("repo") or ranked snippets ("index")
    [<|file_sep|>path⏎ head tail]                     the buffer outside the window (spm; local, index, repo)
    [<|file_sep|>path⏎ window]…                       code like the lines above the cursor (spm, repo: similar.py)
    <|file_sep|>path⏎ then the buffer, in one of three layouts:
      spm     <|fim_prefix|><|fim_suffix|> suffix <|fim_middle|> prefix   (prefix in line chunks, healed)
      psm     <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>  (prefix in line chunks)
      prefix  prefix                                                      (the suffix reaches the copy model only)

SPM puts the suffix first: typing re-runs one line, but a new cursor re-runs suffix and prefix, so both are short by
default (128 tokens each: the model copies little from further back, and the dev set scores best with them). The
rest of the buffer still counts: the lines before the prefix window (its last `head_tokens`) and after the suffix
window (its first `tail_tokens`) go before it as a file of their own, where the names the cursor wants are most
often written (dev set, repository context: exact match 0.309 -> 0.326, and with the copy model off 0.230 -> 0.270,
xfile tasks 0.172 -> 0.259; BENCHMARKS.md). After it, in repo context, the windows of the workspace most like the
lines above the cursor (similar.py). They end the repository part, which the background prefills (until then a new
cursor is served with the last part ready, whole: background.py). PSM and prefix keep the prefix's line snapshots
across cursors of a file: a new cursor runs the lines from the nearest snapshot, its own line and (PSM) the suffix.
Context "none" is the prefix alone (no suffix, no other file); "local" adds the suffix and the rest of the buffer.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import chain

from ..index.store import file_paths
from .context import repository_files, snippets
from .healing import back_up
from .request import Request
from .shape import Shape, shape_at
from .similar import SimilarConfig, Window, near_cursor, query_names, select, shown_text, window_names
from .tokens import Vocab
from .workspace import Workspace

CONTEXTS = ("none", "local", "index", "repo")
LAYOUTS = ("spm", "psm", "prefix")
SIMILAR = SimilarConfig()   # the windows' shape; PromptConfig.similar_tokens sets their budget
REPO_PIECE = 2048  # a long repository file is fed in pieces: the background prefill holds the lock for one at a time


@dataclass(frozen=True)
class PromptConfig:
    context: str = "repo"
    layout: str = "spm"          # this model reads the suffix and a few lines before the cursor best: +10 points
    prefix_tokens: int = 128     # of exact match on the dev set against the whole file without the suffix
    suffix_tokens: int = 128     # (BENCHMARKS.md: layouts; layout prefix: the suffix is for the copy model only)
    window_lines: int = 8        # the prefix starts on a multiple of this many lines, so it stays put while typing
    anchor_lines: int = 8        # and has a snapshot every this many lines, where other cursors resume
    head_tokens: int = 4096      # spm: the buffer before the prefix window…
    tail_tokens: int = 2048      # …and after the suffix window, as a file before the window (0 and 0: none)
    similar_tokens: int = 1024   # repo, spm: the code most like the lines above the cursor (similar.py; 0: none)
    healing: bool = True

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"unknown context '{self.context}': use one of {CONTEXTS}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout '{self.layout}': use one of {LAYOUTS}")


@dataclass
class Prompt:
    ids: list[int]
    boundaries: list[int]        # segment ends, strictly inside the prompt
    healed: bytes                # bytes removed from the end that generation must reproduce first
    shape: Shape
    local_start: int             # where the buffer's own tokens begin
    outside_start: int           # where the file of the buffer outside the window begins (local_start: none)
    copy_ids: list[int]          # what the copy model indexes per request: header, suffix, then the prefix, so that
                                 # its end is the text the suggestion continues (in every layout)
    anchors: list[int]           # the local part's snapshot points that every cursor further down shares: the
                                 # end of the buffer's header, then every anchor line of the prefix


def with_repository(prompt: Prompt, ids: list[int], boundaries: list[int],
                    outside_start: int | None = None) -> Prompt:
    """`prompt` with another repository part (`ids`, its file ends `boundaries`): one that is ready, or none; its
    buffer outside the window (another cursor's) from `outside_start` on, if it has one."""
    local = prompt.ids[prompt.local_start:]
    cuts = {*boundaries, len(ids), *(b - prompt.local_start + len(ids) for b in prompt.boundaries
                                     if b > prompt.local_start)}
    shift = len(ids) - prompt.local_start
    return Prompt(ids + local, sorted(b for b in cuts if 0 < b < len(ids) + len(local)), prompt.healed,
                  prompt.shape, len(ids), len(ids) if outside_start is None else outside_start, prompt.copy_ids,
                  [a + shift for a in prompt.anchors])


def _prefix_window(chunks: list[tuple[int, ...]], budget: int, anchor: int) -> int:
    """Index of the first prefix chunk kept: as many whole lines as fit, rounded down to an anchor line."""
    used, start = 0, len(chunks)
    while start > 0 and used + len(chunks[start - 1]) <= budget:
        start -= 1
        used += len(chunks[start])
    if start == len(chunks) and chunks:
        start -= 1  # the cursor's own line always goes in
    return start - start % anchor


def _suffix_window(chunks: Iterator[tuple[int, ...]], budget: int) -> tuple[list[int], tuple[int, ...]]:
    """The suffix's ids (as many whole line chunks as fit), and the first chunk that did not fit (or none)."""
    ids: list[int] = []
    for chunk in chunks:
        if len(ids) + len(chunk) > budget:
            return ids, chunk
        ids += chunk
    return ids, ()


def _outside(head: list[tuple[int, ...]], tail: Iterator[tuple[int, ...]], config: PromptConfig) -> list[int]:
    """The buffer outside the window: the last `head_tokens` of the chunks before the prefix window, then the
    first `tail_tokens` of those after the suffix window (whole lines)."""
    start, used = len(head), 0
    while start > 0 and used + len(head[start - 1]) <= config.head_tokens:
        start -= 1
        used += len(head[start])
    kept = [token for chunk in head[start:] for token in chunk]
    after: list[int] = []
    for chunk in tail:
        if len(after) + len(chunk) > config.tail_tokens:
            break
        after += chunk
    return kept + after


def _add_file(ids: list[int], boundaries: list[int], tokens: list[int]) -> None:
    """Append a file to the repository part: a snapshot at its end and every REPO_PIECE tokens inside it."""
    begin = len(ids)
    ids += tokens
    boundaries += [*range(begin + REPO_PIECE, len(ids), REPO_PIECE), len(ids)]


def build_prompt(vocab: Vocab, config: PromptConfig, path: str, text: str, offset: int, shape: Shape,
                 context: list[tuple[str, list[int]]], repo_name: str,
                 similar: list[tuple[str, list[int]]] = ()) -> Prompt:
    """`context`: (path, tokens) pseudo-files (snippets) or whole files (repository), already in order; `similar`:
    windows like the lines above the cursor (similar.py), the end of the repository part, after the buffer outside
    the window: like it, they change with the cursor's line, and the background prefills them."""
    layout = config.layout if config.context != "none" else "prefix"
    chunks = vocab.encode_chunks(text[:offset])
    start = _prefix_window(chunks, config.prefix_tokens, config.window_lines)
    suffix: list[int] = []
    outside: list[int] = []
    files = list(context) if config.context in ("index", "repo") else []
    if config.context != "none":
        after = vocab.iter_chunks(text[offset:])
        suffix, first_out = _suffix_window(after, config.suffix_tokens)
        outside = _outside(chunks[:start], chain([first_out], after), config) if layout == "spm" else []
    ids: list[int] = vocab.repo_header(repo_name) if files or outside or similar else []
    boundaries: list[int] = []
    for file_path, tokens in files:
        _add_file(ids, boundaries, vocab.file_header(file_path) + tokens)
    outside_start = len(ids)
    if outside:
        _add_file(ids, boundaries, vocab.file_header(path) + outside)
    for window_path, tokens in similar:
        ids += vocab.file_header(window_path) + tokens
    if similar:
        boundaries.append(len(ids))
    local_start = len(ids)
    header = vocab.file_header(path)
    ids += header
    if layout == "spm":
        ids += vocab.spm([], suffix)  # the prefix follows line by line
    elif layout == "psm":
        ids.append(vocab.fim_prefix)
    boundaries.append(len(ids))
    anchors = [len(ids)]
    prefix_at = len(ids)
    # snapshots before the last lines (a keystroke re-runs its line, Enter resumes there too, a line join one up)
    # and, where the prefix outlives a cursor (psm, prefix), on anchor lines, where other cursors resume; a
    # prompt is fed in a handful of forward passes instead of one per line. In spm the suffix comes first and no
    # other cursor shares what follows it: one snapshot, before the cursor's line (a new cursor: 3 passes, not 5)
    anchored, last_lines = (False, 1) if layout == "spm" else (True, 2)
    for line, chunk in enumerate(chunks[start:], start=start + 1):
        ids += chunk
        if anchored and line % config.anchor_lines == 0 and line < len(chunks):
            anchors.append(len(ids))
        if (anchored and line % config.anchor_lines == 0) or line >= len(chunks) - last_lines:
            boundaries.append(len(ids))
    healed = b""
    if layout != "psm" and config.healing and len(ids) > local_start + 1:
        ids, healed = back_up(ids, vocab.token_bytes)
    prefix, prefix_end = ids[prefix_at:], len(ids)
    if layout == "psm":  # the cursor's line and the suffix are one segment: no snapshot that only this cursor uses
        ids += [vocab.fim_suffix, *suffix, vocab.fim_middle]
        boundaries = [b for b in boundaries if b != prefix_end]
    boundaries = sorted({b for b in boundaries if 0 < b < len(ids)})
    copy_ids = ids[local_start:] if layout == "spm" else header + suffix + prefix
    return Prompt(ids, boundaries, healed, shape, local_start, outside_start, copy_ids,
                  [a for a in anchors if a in boundaries])


def alone(vocab: Vocab, request: Request, config: PromptConfig) -> Prompt:
    """The prompt for a buffer outside every workspace: its own prefix and suffix ("local" context at most)."""
    local = replace(config, context="local") if config.context in ("index", "repo") else config
    return build_prompt(vocab, local, request.path, request.text, request.offset,
                        shape_at(request.text, request.offset), [], "")


def assemble(workspace: Workspace, request: Request, config: PromptConfig, repo_tokens: int,
             snippet_tokens: int) -> tuple[Prompt, list[str]]:
    """The prompt for `request`, and the repository files it holds (what the copy model's table is built from)."""
    shape = shape_at(request.text, request.offset)
    context: list[tuple[str, list[int]]] = []
    with workspace.reading() as db:
        read = {p: workspace.file(p, request.overrides) for p in file_paths(db) if p != request.path}
        files = repository_files(read, request.path, repo_tokens, db)
        if config.context == "repo":
            context = [(p, read[p][1]) for p in files]
        elif config.context == "index":
            used = 0
            for snip in snippets(db, request.path, request.text[:request.offset], workspace.recent):
                tokens = workspace.vocab.encode(snip.text)
                if used + len(tokens) > snippet_tokens:
                    break
                context.append((snip.path, tokens))
                used += len(tokens)
    similar = _similar(workspace, request, read, config) if config.context == "repo" and config.layout == "spm" else []
    prompt = build_prompt(workspace.vocab, config, request.path, request.text, request.offset, shape, context,
                          workspace.root.name, similar)
    return prompt, files


def _similar(workspace: Workspace, request: Request, read: dict[str, tuple[int, list[int]]],
             config: PromptConfig) -> list[tuple[str, list[int]]]:
    """The windows like the lines above the cursor, as (path, tokens) pseudo-files within `similar_tokens`, the
    likest last (nearest the buffer); the same while only the cursor's line changes."""
    if config.similar_tokens <= 0:
        return []
    text, offset = request.text, request.offset
    line_start, line_end = text.rfind("\n", 0, offset) + 1, text.find("\n", offset)
    key = (request.path, text[:line_start], "" if line_end < 0 else text[line_end:], tuple(read),
           config.similar_tokens)
    return workspace.windows.remembered(key, [tokens for _, tokens in read.values()],
                                        lambda: _rank_windows(workspace, request, read, config.similar_tokens))


def _rank_windows(workspace: Workspace, request: Request, read: dict[str, tuple[int, list[int]]],
                  budget: int) -> list[tuple[str, list[int]]]:
    settings = SIMILAR
    before = request.text[:request.offset]
    cursor = before.count("\n")
    buffer_lines = request.text.split("\n")
    lines = {request.path: buffer_lines}
    candidates = {request.path: window_names(buffer_lines, settings.lines)}
    for path, (_, tokens) in read.items():
        lines[path], candidates[path] = workspace.windows.of(path, tokens, settings.lines)
    skip = near_cursor(request.path, cursor, settings)
    shown = {}

    def cost(window: Window) -> int:
        shown[window] = workspace.vocab.encode(shown_text(lines[window.path], window, settings))
        return len(workspace.vocab.file_header(window.path)) + len(shown[window])

    chosen = select(query_names(before, settings.lines), candidates, settings, budget, cost, skip)
    return [(w.path, shown[w]) for w in reversed(chosen)]

"""Decoding as small functions (gpt-fast's generate.py): choose a token, one step, a speculative step, and the
two loops built from them: `generate` (plain sampling, for the evaluations) and `suggest` (the engine's
greedy suggestion with token healing, copy-model drafts and stop rules, streamed as it grows).
"""
from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from model.model import RustleLM

from .copy import CopyModel
from .guide import Guide
from .healing import Healer, consume
from .prompt import Prompt
from .shape import cut, tidy
from .state import StateCache
from .tokens import Vocab

HISTORY = 64  # tokens of context the copy model matches against


def sample(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> int:
    """Greedy at temperature 0; otherwise temperature, then nucleus (top-p) sampling."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def choose(logits: torch.Tensor, history: list[int], pending: bytes, healer: Healer,
           copy: CopyModel | None = None, guide: Guide | None = None, generated: str = "",
           indentation: bool = False) -> int:
    """Greedy choice over the model's logits, steered toward the index's names at a name position (`guide`, after
    the suggestion's text so far, `generated`), the copy distribution mixed in (so the healing mask holds for
    copied tokens too), then masked to tokens that agree with the `pending` healed bytes (written whole where they
    are the end of the line's `indentation`)."""
    if guide is not None:
        logits = guide(logits, generated, pending)
    if copy is not None:   # probabilities from here on: the argmax and the healing mask need no log of them
        logits = copy.mix(torch.softmax(logits.float(), -1), history)
    if pending:
        logits = healer.mask(logits, pending, whole=indentation)
    return int(logits.argmax())


def step(state: StateCache, tokens: list[int]) -> torch.Tensor:
    """Feed `tokens` (those left unfed by a rejected draft, then the new one); the logits after the last."""
    return state.feed(tokens)[-1]


def speculative_step(state: StateCache, unfed: list[int], token: int, draft: list[int],
                     choose_at: Callable[[int, torch.Tensor], int]) -> tuple[list[int], torch.Tensor, list[int]]:
    """Feed `unfed`, `token` and a drafted continuation in one forward pass. Draft tokens are kept while the model
    would have chosen them itself (`choose_at(i, logits before draft[i])`). When one is not, the state is rewound
    to before this pass and what it should hold is left unfed: the next pass feeds it with its own tokens, so a
    rejected draft costs no second forward. Returns (the kept draft tokens, the logits after the last of them,
    the tokens still to feed)."""
    mark = state.mark()
    fed = unfed + [token]
    out = state.feed(fed + draft)
    kept: list[int] = []
    for i, proposal in enumerate(draft):
        if choose_at(i, out[len(fed) - 1 + i]) != proposal:
            break
        kept.append(proposal)
    if len(kept) < len(draft):
        state.rewind(mark)
        return kept, out[len(fed) - 1 + len(kept)], fed + kept
    state.cache.forget(mark)
    return kept, out[-1], []


@torch.inference_mode()
def generate(model: RustleLM, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, stop: Callable[[list[int]], bool] | None = None,
             generator: torch.Generator | None = None) -> Iterator[int]:
    """Stream new token ids: prefill once, then one forward per token (HumanEval, recall)."""
    cache = model.new_cache()
    device = model.embed.weight.device
    logits = model(torch.tensor([prompt], device=device), cache, last=1)[0, -1]
    produced: list[int] = []
    for _ in range(max_new_tokens):
        token = sample(logits, temperature, top_p, generator)
        produced.append(token)
        yield token
        if stop is not None and stop(produced):
            return
        logits = model(torch.tensor([[token]], device=device), cache)[0, -1]


@dataclass
class Suggestion:
    text: str                 # tidied final text
    stopped: str              # "rule" | "eos" | "tokens" | "deadline" | "cancelled"
    generated_tokens: int
    forward_steps: int
    reused_tokens: int


class _Text:
    """The suggestion's text as tokens arrive: healed bytes dropped, cut by the shape's stop rules."""

    def __init__(self, vocab: Vocab, prompt: Prompt, on_text: Callable[[str], None]) -> None:
        self.vocab, self.shape, self.on_text = vocab, prompt.shape, on_text
        self.special = set(vocab.special.values())
        self.pending, self.history = prompt.healed, prompt.copy_ids[-HISTORY:]
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text, self.kept, self.generated, self.stopped = "", "", 0, "tokens"

    def accept(self, token: int) -> bool:
        """Add a token; True when generation must stop."""
        if token in self.special:
            self.stopped = "eos"
            return True
        self.generated += 1
        self.history = self.history[-(HISTORY - 1):] + [token]
        piece = self.vocab.token_bytes[token]
        healing = len(self.pending)
        self.pending = consume(self.pending, piece)
        self.text += self.decoder.decode(piece[min(len(piece), healing):] if healing else piece)
        self.kept, stop = cut(self.text, self.shape)
        if stop:
            self.stopped = "rule"
        self.on_text(self.kept)
        return stop


@torch.inference_mode()
def suggest(state: StateCache, vocab: Vocab, healer: Healer, prompt: Prompt, limit: int, deadline_s: float,
            copy: CopyModel | None, draft: bool, mix: bool, following: str, cancelled: threading.Event,
            on_text: Callable[[str], None], guide: Guide | None = None) -> Suggestion:
    """Greedy decoding of one suggestion after `prompt`: the healed bytes first, copy-model drafts verified
    in one forward pass each, steered by the index's names (`guide`), until a stop rule, the token limit, the
    deadline or a cancellation."""
    logits, stats = state.prefill(prompt.ids, prompt.boundaries)
    deadline = time.perf_counter() + deadline_s  # for decoding: a cold prefill still answers
    mixed = copy if mix else None
    out = _Text(vocab, prompt, on_text)
    indentation = not prompt.shape.line_prefix.strip()    # the healed bytes end the cursor line's indentation
    steps, unfed = 1, []
    while out.generated < limit:
        if cancelled.is_set() or time.perf_counter() > deadline:
            out.stopped = "cancelled" if cancelled.is_set() else "deadline"
            break
        token = choose(logits, out.history, out.pending, healer, mixed, guide, out.text, indentation)
        if out.accept(token):
            break
        proposal = copy.draft(out.history) if copy is not None and draft and not out.pending else []
        proposal = proposal[:max(0, limit - out.generated)]
        steps += 1
        if not proposal:
            logits, unfed = step(state, unfed + [token]), []
            continue
        history, text = out.history, out.text

        def choose_at(i: int, at: torch.Tensor) -> int:   # the draft's text is decoded for the guide only
            drafted = text + vocab.decode_bytes(proposal[:i]).decode(errors="replace") if guide is not None else text
            return choose(at, (history + proposal[:i])[-HISTORY:], b"", healer, mixed, guide, drafted)

        kept, logits, unfed = speculative_step(state, unfed, token, proposal, choose_at)
        if any(out.accept(t) for t in kept):
            break
    return Suggestion(tidy(out.kept, prompt.shape, following), out.stopped, out.generated, steps, stats.reused)

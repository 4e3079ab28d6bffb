"""The engine's pieces that need no model, with the shipped tokenizer: line chunks, healing, the copy model, the
stop rules and tidying of a suggestion, and the prompt layouts."""
from dataclasses import replace

import pytest
import torch

from assistant.engine.copy import CopyConfig, CopyModel
from assistant.engine.healing import Healer, back_up
from assistant.engine.prompt import PromptConfig, build_prompt
from assistant.engine.shape import cut, shape_at, tidy
from assistant.engine.tokens import Vocab, line_chunks
from tokenizer import load_tokenizer

from conftest import ROOT

KVSTORE = ROOT / "data" / "workspace"


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(load_tokenizer())


# ----- tokens, healing, copy model --------------------------------------------------------------------------------
def test_line_chunks_encode_like_the_whole_text(vocab):
    for path in sorted(KVSTORE.rglob("*.rs")):
        text = path.read_text()
        assert "".join(line_chunks(text)) == text
        assert [i for chunk in vocab.encode_chunks(text) for i in chunk] == vocab.encode(text)
        assert vocab.decode_bytes(vocab.encode(text)) == text.encode()


def test_healing_allows_exactly_the_tokens_that_agree_with_the_removed_bytes(vocab):
    healer = Healer(vocab.token_bytes)
    prompt, healed = back_up(vocab.encode("    let x = fo"), vocab.token_bytes)
    assert healed and vocab.decode_bytes(prompt) + healed == b"    let x = fo"
    for pending in (healed, b" fo"):
        allowed = healer.allowed(pending)
        everything = [i for i, b in enumerate(vocab.token_bytes)
                      if b and (b.startswith(pending) or pending.startswith(b))]
        assert allowed and sorted(allowed) == sorted(everything)


def test_healing_after_an_indentation_writes_it_whole(vocab):
    healer = Healer(vocab.token_bytes)
    prompt, healed = back_up(vocab.encode("fn f() {\n    "), vocab.token_bytes)
    assert healed == b"\n    "
    allowed = {vocab.token_bytes[i] for i in healer.allowed(healed, whole=True)}
    assert {healed, b"\n    }", b"\n        "} <= allowed                  # the indent, a merge, a deeper indent
    assert b"\n" not in allowed and b"\n  " not in allowed                  # never a shallower run, then spaces
    assert all(b.startswith(healed) for b in allowed)
    deep = vocab.encode("fn f() {\n" + " " * 36)                             # a newline run, then 12 spaces
    prompt, healed = back_up(deep, vocab.token_bytes)
    assert healed == b" " * 12 and vocab.token_bytes[prompt[-1]].startswith(b"\n")
    allowed = {vocab.token_bytes[i] for i in healer.allowed(healed, whole=True)}
    assert {healed, healed + b"}"} <= allowed and b" " * 11 not in allowed
    prompt, healed = back_up(vocab.encode("    Foo      "), vocab.token_bytes)    # alignment inside a line…
    assert healed == b"      " and vocab.token_bytes[vocab.encode("    Foo      = 1")[-3]] == b"     "
    assert vocab.encode("     ")[0] in healer.allowed(healed)                     # …goes on as `     ` + ` =`


def test_greedy_choice_at_an_indentation_cannot_take_a_shallower_run(vocab):
    from assistant.engine.decode import choose

    healer, token = Healer(vocab.token_bytes), {b: i for i, b in enumerate(vocab.token_bytes)}
    logits = torch.zeros(len(vocab.token_bytes))
    logits[token[b"\n  "]], logits[token[b"\n    "]] = 5.0, 1.0       # the model would rather indent less
    assert choose(logits, [], b"\n    ", healer) == token[b"\n  "]
    assert choose(logits, [], b"\n    ", healer, indentation=True) == token[b"\n    "]


def test_copy_model_drafts_what_followed_and_forgets_on_truncate():
    copy = CopyModel(CopyConfig(n_min=3, draft_tokens=4))
    copy.extend([1, 2, 3, 4, 5, 6, 7, 8])
    assert copy.draft([9, 2, 3, 4]) == [5, 6, 7, 8]
    before = {k: list(v) for k, v in copy.table.items()}
    copy.extend([2, 3, 4, 99])
    assert copy.draft([2, 3, 4]) == [99]          # the most recent longest match wins
    copy.truncate(8)
    assert copy.table == before and copy.draft([2, 3, 4]) == [5, 6, 7, 8]
    probs = torch.full((100,), 0.01)
    mixed = copy.mix(probs, [1, 2, 3, 4])
    assert int(mixed.argmax()) == 5 and abs(float(mixed.sum()) - 1.0) < 1e-5


# ----- shape: stop rules and post-processing ----------------------------------------------------------------------
def test_multiline_only_in_an_empty_block_body():
    text = "fn f() {\n    \n}\n\nfn g() {\n    let a = 1;\n    \n}\n"
    assert shape_at(text, text.index("\n    \n") + 5).multiline
    assert not shape_at(text, text.rindex("    \n}\n") + 4).multiline         # g's body is not empty
    assert not shape_at(text, text.index("let a") + 4).multiline


def test_block_stops_at_an_unmatched_bracket_or_a_dedent():
    block = shape_at("fn f() {\n    \n}\n", 13)
    assert cut("let x = 1;\n    x + 1\n}\nfn other() {}", block) == ("let x = 1;\n    x + 1", True)
    assert cut("let x = vec![1,\n        2];\n    x\n", block)[1] is False
    assert cut("a();\nfn top_level() {}\n", block) == ("a();", True)
    line = shape_at("let x = \n", 8)
    assert cut("foo();\nbar();", line) == ("foo();", True)


def test_a_loop_stops_and_its_repeats_are_dropped():
    block = shape_at("fn f() {\n    \n}\n", 13)
    assert cut("let a = 1;\n    let s = [0; N];\n    let s = [0; N];\n    let", block) == \
        ("let a = 1;\n    let s = [0; N];", True)
    assert cut("a();\n    }\n    }\n", block)[0] == "a();"                # brackets close, no loop
    line = shape_at("use net::{\n", 9)
    assert cut("Incoming, TcpStream, TcpStream, TcpStream, TcpStream, TcpStream", line) == \
        ("Incoming, TcpStream, TcpStream", True)
    assert cut("f(name, name, name, name, name,", line) == ("f(name, name,", True)
    for table in ("[0, 0, 0, 0, 0, 0, 0, 0", "0xFF, 0xFF, 0xFF, 0xFF, 0xFF", 'b"aaaaaaaaaaaa', "a.b.c.d.e.f.g.h"):
        assert cut(table, line) == (table, False)                     # numbers and words repeat in real code


def test_tidy_drops_what_follows_the_cursor_and_closes_brackets():
    shape = shape_at("    call(a, )\n", 12)
    assert shape.line_suffix == ")"
    assert tidy("b)", shape) == "b"
    assert tidy("foo(b", shape) == "foo(b)"                   # its own bracket closed; the line's ) stays
    tabbed = "fn f() {\n\t\n}\nfn g() {\n\tx();\n}\n"
    block = shape_at(tabbed, tabbed.index("\t\n") + 1)
    assert block.tab_indent and tidy("a();\n    b();\n", block) == "a();\n\tb();"
    spaced = "fn f() {\n    \n}\n"
    assert tidy("x();\n}", shape_at(spaced, 13), "\n}\n") == "x();"


def test_an_open_bracket_at_the_end_of_a_line_is_left_open():
    assert tidy("let v = foo(", shape_at("    \n", 4)) == "let v = foo("


# ----- prompt -----------------------------------------------------------------------------------------------------
def test_prompt_layout_is_spm_after_the_repository(vocab):
    text = "fn main() {\n    let x = 1;\n    pri\n}\n"
    offset = text.index("pri") + 3
    context = [("src/a.rs", vocab.encode("pub fn a() {}\n")), ("src/b.rs", vocab.encode("pub fn b() {}\n"))]
    p = build_prompt(vocab, PromptConfig(context="repo", layout="spm"), "src/main.rs", text, offset,
                     shape_at(text, offset), context, "demo")
    decoded = vocab.tok.decode(p.ids, skip_special_tokens=False)
    assert decoded.startswith("<|repo_name|>demo\n<|file_sep|>src/a.rs\npub fn a() {}\n<|file_sep|>src/b.rs\n")
    local = decoded[decoded.index("<|file_sep|>src/main.rs"):]
    assert p.healed and local == ("<|file_sep|>src/main.rs\n<|fim_prefix|><|fim_suffix|>\n}\n<|fim_middle|>"
                                  + text[:offset - len(p.healed)])
    assert (vocab.decode_bytes(p.ids[p.local_start:]) + p.healed).endswith(b"    pri")
    assert p.boundaries == sorted(p.boundaries) and all(0 < b < len(p.ids) for b in p.boundaries)
    none = build_prompt(vocab, PromptConfig(context="none"), "src/main.rs", text, offset, shape_at(text, offset),
                        context, "demo")
    assert vocab.fim_suffix not in none.ids and vocab.repo_name not in none.ids


def test_psm_and_prefix_prompts_end_where_the_copy_model_continues(vocab):
    text = "fn main() {\n    let x = 1;\n    pri\n    done();\n}\n"
    offset = text.index("pri") + 3
    shape = shape_at(text, offset)
    psm = build_prompt(vocab, PromptConfig(context="local", layout="psm"), "src/main.rs", text, offset, shape, [], "d")
    assert psm.ids[-1] == vocab.fim_middle and not psm.healed
    prefix = build_prompt(vocab, PromptConfig(context="local", layout="prefix"), "src/main.rs", text, offset, shape,
                          [], "d")
    assert vocab.fim_suffix not in prefix.ids and prefix.healed                       # the model sees no suffix…
    for p in (psm, prefix):                                                           # …the copy model does
        copied = vocab.decode_bytes(p.copy_ids) + p.healed
        assert b"done();" in copied and copied.endswith(b"    pri")


def test_prompt_budgets_and_a_stable_prefix_start(vocab):
    text = "".join(f"let v{i} = {i};\n" for i in range(400))
    config = PromptConfig(context="local", layout="spm", prefix_tokens=300, suffix_tokens=50, window_lines=32,
                          anchor_lines=32)
    shape = shape_at(text, 0)
    p = build_prompt(vocab, config, "a.rs", text, len(text) // 2, shape, [], "r")
    suffix = p.ids[p.ids.index(vocab.fim_suffix) + 1:p.ids.index(vocab.fim_middle)]
    prefix = p.ids[p.ids.index(vocab.fim_middle) + 1:]
    assert len(suffix) <= 50 and 300 <= len(prefix) + 1 <= 300 + 32 * 8
    # typing on the cursor's line keeps every token before that line
    q = build_prompt(vocab, config, "a.rs", text[:len(text) // 2] + "x" + text[len(text) // 2:], len(text) // 2 + 1,
                     shape, [], "r")
    line_start = max(b for b in p.boundaries if b <= len(p.ids) - 1)
    assert q.ids[:line_start] == p.ids[:line_start]


def test_the_buffer_outside_the_window_is_a_file_before_it(vocab):
    lines = [f"let v{i} = {i};\n" for i in range(400)]
    text = "".join(lines)
    offset = len("".join(lines[:200])) + 4                    # in `let |v200 = 200;`
    config = PromptConfig(context="local", prefix_tokens=64, suffix_tokens=64, head_tokens=300, tail_tokens=200)
    p = build_prompt(vocab, config, "a.rs", text, offset, shape_at(text, offset), [], "r")
    part = vocab.tok.decode(p.ids[:p.local_start], skip_special_tokens=False)
    local = vocab.tok.decode(p.ids[p.local_start:], skip_special_tokens=False)
    suffix = local[local.index("<|fim_suffix|>") + len("<|fim_suffix|>"):local.index("<|fim_middle|>")]
    prefix = local[local.index("<|fim_middle|>") + len("<|fim_middle|>"):] + p.healed.decode()
    start, end = offset - len(prefix), offset + len(suffix)  # the window: [start, end)
    header = "<|repo_name|>r\n<|file_sep|>a.rs\n"
    assert part.startswith(header) and p.local_start in p.boundaries
    body = part[len(header):]
    cut = body.index(text[end:text.index("\n", end + 1)])    # the first line after the suffix window
    assert 0 < cut < len(body) and text[:start].endswith(body[:cut]) and text[end:].startswith(body[cut:])
    assert len(p.ids[:p.local_start]) <= len(vocab.repo_header("r") + vocab.file_header("a.rs")) + 300 + 200
    typed = build_prompt(vocab, config, "a.rs", text[:offset] + "x" + text[offset:], offset + 1,
                         shape_at(text, offset), [], "r")      # a keystroke leaves the part as it is
    assert typed.ids[:typed.local_start] == p.ids[:p.local_start]
    for other in (replace(config, head_tokens=0, tail_tokens=0), replace(config, layout="psm"),
                  replace(config, context="none")):
        assert build_prompt(vocab, other, "a.rs", text, offset, shape_at(text, offset), [], "r").local_start == 0

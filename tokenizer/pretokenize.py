r"""Pre-tokenizers: where BPE may not merge across. Ours follows Rust's lexemes; `plain` is GPT-2's, the ablation.

Rust-aware pieces, tried in this order at each position:
- a newline run with the next line's indentation ("\n        "), so indentation never glues to a word
  and a 4/8/12/16-space indent after a newline can become one token;
- comment openers (`//`, `///`, `//!`), attribute openers (`#[`, `#![`);
- char literals (`'a'`, `'\n'`) before lifetimes and labels (`'a`, `'static`);
- raw/byte string openers (`r#"`, `b"`) and closers (`"#`); escapes (`\n`, `\u{..}`); format holes (`{}`, `{:?}`);
- macro names with their bang (`println!`, but not `x != y`);
- numeric literals with their suffixes (`1_000u64`, `0xFFu8`, `1.5e-3f32`);
- identifiers with underscores and digits kept whole (`snake_case_2`), with an optional leading space;
- multi-character operators (`::`, `->`, `=>`, `..=`, `==`, `&&`, `+=`, …);
- runs of closing brackets with their `;`/`,`/`?` (`});`, `)?;`) and of opening brackets;
- spaces not before a word (alignment, trailing spaces), then anything else one character at a time.
"""
from __future__ import annotations

from tokenizers import Regex, pre_tokenizers

# Multi-character lexemes: never split, never glued to a neighbouring punctuation run.
LEXEMES = r"\.\.=|\.\.\.|::|->|=>|<<=|>>=|==|!=|<=|>=|&&|\|\||[-+*/%^&|]=|\.\.|#!?\[|//[/!]?"

RUST_PIECES = [
    r"(?:\r?\n)+[ \t]*(?:[)\]}]+[;,]?|//[/!]?)?",
    r" ?'(?:\\(?:[nrt0\\'\"]|x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\})|[^'\\\r\n])'",
    r" ?'[\p{L}_][\p{L}\p{N}_]*",
    r" ?(?:b|c)?r#+\"|\"#+",
    r"\\(?:u\{[0-9a-fA-F]{1,6}\}|x[0-9a-fA-F]{2}|.)",
    r"\{[\p{L}\p{N}_]*:[^{}\s]{0,8}\}",
    r" ?[\p{L}_][\p{L}\p{N}_]*!(?!=)",
    r" ?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*(?:\.[0-9][0-9_]*)?(?:[eE][+-]?[0-9_]+)?)"
    r"(?:[iu](?:8|16|32|64|128|size)|f32|f64)?",
    r" ?[&*!.]?[\p{L}_][\p{L}\p{N}_]*",
    rf" ?(?:{LEXEMES})",
    rf" ?(?:(?!{LEXEMES})[^\s\p{{L}}\p{{N}}_'\\])+",
    r"[ \t]+(?!\S)",
    r"\s+",
    r" ?[^\s]",
]
RUST_PATTERN = "|".join(RUST_PIECES)

# GPT-2's pattern, as `tokenizers`' ByteLevel(use_regex=True) applies it.
PLAIN_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def pre_tokenizer(kind: str) -> pre_tokenizers.PreTokenizer:
    """`rust` or `plain`: a regex split into isolated pieces, then the byte-level alphabet (lossless)."""
    pattern = {"rust": RUST_PATTERN, "plain": PLAIN_PATTERN}[kind]
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])

//! A small sample for `make run`: the tokenizer shows how it splits typical Rust.

use std::collections::HashMap;
use std::fmt;

/// A word count over a borrowed text.
#[derive(Debug, Default, Clone)]
pub struct WordCount<'a> {
    counts: HashMap<&'a str, u64>,
    total: u64,
}

impl<'a> WordCount<'a> {
    pub fn from_text(text: &'a str) -> Self {
        let mut wc = WordCount::default();
        for word in text.split_whitespace() {
            *wc.counts.entry(word).or_insert(0) += 1;
            wc.total += 1;
        }
        wc
    }

    /// The `n` most frequent words, most frequent first.
    pub fn top(&self, n: usize) -> Vec<(&'a str, u64)> {
        let mut pairs: Vec<_> = self.counts.iter().map(|(w, c)| (*w, *c)).collect();
        pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        pairs.into_iter().take(n).collect()
    }
}

impl fmt::Display for WordCount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} words, {} distinct", self.total, self.counts.len())
    }
}

fn main() {
    let limit = 1_000u64;
    let wc = WordCount::from_text("the quick brown fox jumps over the lazy dog");
    match wc.total {
        0 => println!("empty"),
        n @ 1..=9 => println!("{n} words: {wc}"),
        _ if wc.total > limit => eprintln!("too long"),
        _ => println!("{:?}", wc.top(3)),
    }
}

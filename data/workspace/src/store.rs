use std::collections::HashMap;

/// The store: string keys to string values, with a count of writes.
#[derive(Debug, Default)]
pub struct Store {
    entries: HashMap<String, String>,
    writes: u64,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|value| value.as_str())
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn set(&mut self, key: String, value: String) {
        self.writes += 1;
        self.entries.insert(key, value);
    }

    /// Removes `key`; true when it was present.
    pub fn delete(&mut self, key: &str) -> bool {
        self.writes += 1;
        self.entries.remove(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn writes(&self) -> u64 {
        self.writes
    }
}

//! A tiny in-memory key-value store with a line protocol: the workspace `make run` completes in.
pub mod command;
pub mod store;

pub use command::{parse_command, Command, ParseError};
pub use store::Store;

/// Runs one line of the protocol against the store and returns the reply line.
pub fn execute(store: &mut Store, line: &str) -> String {
    match parse_command(line) {
        Ok(Command::Get(key)) => match store.get(&key) {
            Some(value) => value.to_string(),
            None => "(nil)".to_string(),
        },
        Ok(Command::Set(key, value)) => {
            store.set(key, value);
            "OK".to_string()
        }
        Ok(Command::Delete(key)) => {
            if store.delete(&key) {
                "1".to_string()
            } else {
                "0".to_string()
            }
        }
        Ok(Command::Len) => store.len().to_string(),
        Err(err) => format!("ERR {}", err),
    }
}

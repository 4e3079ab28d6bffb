use std::fmt;

/// One request of the line protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Get(String),
    Set(String, String),
    Delete(String),
    Len,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    UnknownCommand(String),
    MissingArgument(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty line"),
            ParseError::UnknownCommand(name) => write!(f, "unknown command '{}'", name),
            ParseError::MissingArgument(what) => write!(f, "missing {}", what),
        }
    }
}

/// Parses `GET key`, `SET key value`, `DEL key` or `LEN`.
pub fn parse_command(line: &str) -> Result<Command, ParseError> {
    let mut words = line.split_whitespace();
    let name = words.next().ok_or(ParseError::Empty)?;
    match name.to_ascii_uppercase().as_str() {
        "GET" => {
            let key = words.next().ok_or(ParseError::MissingArgument("key"))?;
            Ok(Command::Get(key.to_string()))
        }
        "SET" => {
            let key = words.next().ok_or(ParseError::MissingArgument("key"))?;
            let value = words.next().ok_or(ParseError::MissingArgument("value"))?;
            Ok(Command::Set(key.to_string(), value.to_string()))
        }
        "DEL" => {
            let key = words.next().ok_or(ParseError::MissingArgument("key"))?;
            Ok(Command::Delete(key.to_string()))
        }
        "LEN" => Ok(Command::Len),
        other => Err(ParseError::UnknownCommand(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set() {
        assert_eq!(parse_command("set a 1"), Ok(Command::Set("a".into(), "1".into())));
    }

    #[test]
    fn rejects_empty_lines() {
        assert_eq!(parse_command("   "), Err(ParseError::Empty));
    }
}

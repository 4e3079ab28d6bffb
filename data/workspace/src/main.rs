use std::io::{self, BufRead, Write};

use kvstore::{execute, Store};

fn main() -> io::Result<()> {
    let mut store = Store::new();
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().eq_ignore_ascii_case("quit") {
            break;
        }
        let reply = execute(&mut store, &line);
        writeln!(stdout, "{}", reply)?;
    }
    Ok(())
}

//! Command lines for the tests that run the `tokenvault` binary.

/// The arguments of a command line written on one line: split on spaces,
/// except that a part in single quotes is one argument, spaces and all
/// (`token label ID 'old laptop'`). A quote left open panics.
pub fn words(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (word, after) = match rest.strip_prefix('\'') {
            Some(quoted) => quoted
                .split_once('\'')
                .unwrap_or_else(|| panic!("no closing quote in {line:?}")),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        out.push(word);
        rest = after.trim_start();
    }
    out
}

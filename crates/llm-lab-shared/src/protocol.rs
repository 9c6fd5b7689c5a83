//! The plain lines a check report prints for tooling, and their parsers: `cargo xtask check`
//! and `grade` read them back.

/// The start of the line a report prints for tooling.
pub const REPORT_PREFIX: &str = "llm-lab check: ";
/// The start of the line a failed report prints with its hint.
pub const HINT_PREFIX: &str = "llm-lab hint: ";

/// Parses a line a report printed: `(exercise, status word)`, or None for any other line.
///
/// ```
/// use llm_lab_shared::protocol::parse_report_line;
/// assert_eq!(
///     parse_report_line("llm-lab check: top-p = failed"),
///     Some(("top-p".to_string(), "failed".to_string()))
/// );
/// assert_eq!(parse_report_line("hello"), None);
/// ```
pub fn parse_report_line(line: &str) -> Option<(String, String)> {
    parse_tagged(line, REPORT_PREFIX)
}

/// Parses a hint line: `(exercise, hint)`.
pub fn parse_hint_line(line: &str) -> Option<(String, String)> {
    parse_tagged(line, HINT_PREFIX)
}

fn parse_tagged(line: &str, prefix: &str) -> Option<(String, String)> {
    // Exercise names never hold " = "; hints may, so split at the first one.
    let (name, value) = line.trim().strip_prefix(prefix)?.split_once(" = ")?;
    Some((name.trim().to_string(), value.trim().to_string()))
}

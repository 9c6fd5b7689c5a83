//! HTML escaping, which `cargo xtask grade` compiles in too (`#[path]`): only `std` here.

/// Escapes text for inclusion in HTML.
///
/// ```
/// assert_eq!(llm_lab::display::html_escape("<a & b>"), "&lt;a &amp; b&gt;");
/// ```
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

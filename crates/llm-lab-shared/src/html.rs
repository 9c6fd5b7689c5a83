//! HTML escaping, for the notebooks' displays and `cargo xtask grade`'s report.

/// Escapes text for inclusion in HTML.
///
/// ```
/// assert_eq!(llm_lab_shared::html::html_escape("<a & b>"), "&lt;a &amp; b&gt;");
/// ```
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

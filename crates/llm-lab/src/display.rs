//! Rich output for the evcxr Jupyter kernel: a value whose type has an `evcxr_display` method is
//! shown as HTML (or an image) instead of its Debug text.

/// Sends `html` to the notebook as the cell's rich output.
pub fn rich_html(html: &str) {
    println!("EVCXR_BEGIN_CONTENT text/html\n{html}\nEVCXR_END_CONTENT");
}

/// Escapes text for inclusion in HTML.
///
/// ```
/// assert_eq!(llm_lab::display::html_escape("<a & b>"), "&lt;a &amp; b&gt;");
/// ```
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

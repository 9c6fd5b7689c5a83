//! Rich output for the evcxr Jupyter kernel: a value whose type has an `evcxr_display` method is
//! shown as HTML (or an image) instead of its Debug text.
//!
//! Presentation lives here, on top of the library: the model, logits, generation and checks know
//! nothing of a screen; this module gives their types an HTML face (Rust lets a crate write
//! `impl` blocks for its own types in any module, so notebook calls stay `model`, `logits`, …).

use crate::check::{Report, Status};
use crate::generate::{Generated, StopReason};
use crate::logits::Logits;
use crate::model::Model;

// Shared with `cargo xtask grade` (crate `llm-lab-shared`).
pub use llm_lab_shared::html::html_escape;

/// Sends `html` to the notebook as the cell's rich output.
pub fn rich_html(html: &str) {
    MimeBundle::new().with("text/html", html).emit();
}

/// The MIME type of a Vega-Lite 5 chart, which JupyterLab 4 (and VS Code) draw with their
/// built-in Vega renderer: sliders, tooltips, in a notebook that is not trusted too.
pub const VEGA_LITE_MIME: &str = "application/vnd.vegalite.v5+json";

/// One cell output in several formats; the notebook shows the richest one it can draw.
///
/// evcxr 0.22 gathers every `EVCXR_BEGIN_CONTENT <mime>` block that one cell prints into a single
/// `execute_result` whose `data` maps each MIME type to its content (a type whose name contains
/// `json` is parsed as JSON), so a bundle is one output, not several.
///
/// JupyterLab ranks its renderers: HTML (50) before Vega (57) before SVG (80), so a bundle that
/// carries a Vega-Lite chart gives its static fallback as `image/svg+xml`, never as `text/html`.
///
/// ```
/// use llm_lab::display::MimeBundle;
/// let b = MimeBundle::new().with("image/svg+xml", "<svg></svg>").with("text/plain", "a chart");
/// assert_eq!(b.get("text/plain"), Some("a chart"));
/// assert!(b.to_evcxr().starts_with("EVCXR_BEGIN_CONTENT image/svg+xml\n<svg></svg>\nEVCXR_END_CONTENT\n"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MimeBundle {
    parts: Vec<(String, String)>,
}

impl MimeBundle {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the content of one MIME type.
    pub fn with(mut self, mime: &str, content: impl Into<String>) -> Self {
        let content = content.into();
        match self.parts.iter_mut().find(|(m, _)| m == mime) {
            Some(part) => part.1 = content,
            None => self.parts.push((mime.to_string(), content)),
        }
        self
    }

    /// The content of `mime`, if the bundle has it.
    pub fn get(&self, mime: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|(m, _)| m == mime)
            .map(|(_, c)| c.as_str())
    }

    /// The MIME types, in the order they were added.
    pub fn mime_types(&self) -> Vec<&str> {
        self.parts.iter().map(|(m, _)| m.as_str()).collect()
    }

    /// The text evcxr reads on the kernel's stdout.
    pub fn to_evcxr(&self) -> String {
        let mut s = String::new();
        for (mime, content) in &self.parts {
            s.push_str("EVCXR_BEGIN_CONTENT ");
            s.push_str(mime);
            s.push('\n');
            // evcxr ends a block at a line that is exactly its end marker: never send one.
            for (i, line) in content.split('\n').enumerate() {
                if i > 0 {
                    s.push('\n');
                }
                if line == "EVCXR_END_CONTENT" {
                    s.push(' ');
                }
                s.push_str(line);
            }
            s.push_str("\nEVCXR_END_CONTENT\n");
        }
        s
    }

    /// Sends the bundle to the notebook as the cell's output.
    pub fn emit(&self) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.to_evcxr().as_bytes());
        let _ = out.flush();
    }
}

impl Model {
    /// The module tree as HTML (what a notebook shows for a bare `model`).
    pub fn summary_html(&self) -> String {
        format!(
            "<pre style=\"font-size:12px;line-height:1.3\">{}</pre>",
            html_escape(&self.to_string())
        )
    }

    /// evcxr's rich display hook: a notebook cell ending in `model` shows the summary.
    pub fn evcxr_display(&self) {
        rich_html(&self.summary_html());
    }
}

impl Logits {
    /// The top 10 tokens as an HTML table.
    pub fn to_html(&self) -> String {
        let mut s = String::from("<table><thead><tr><th>#</th><th>token</th><th>id</th><th>logit</th><th>probabilidade</th><th></th></tr></thead><tbody>");
        for (rank, t) in self.top_k(10).iter().enumerate() {
            let bar = (t.prob * 200.0).round() as usize;
            s.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{:.2}</td><td>{:.2} %</td><td><div style=\"background:#4c72b0;height:10px;width:{bar}px\"></div></td></tr>",
                rank + 1,
                html_escape(&format!("{:?}", t.text)),
                t.id,
                t.logit,
                t.prob * 100.0
            ));
        }
        s.push_str(&format!(
            "</tbody></table><p>entropia: {:.2} bits</p>",
            self.entropy()
        ));
        s
    }

    /// evcxr's rich display hook.
    pub fn evcxr_display(&self) {
        rich_html(&self.to_html());
    }
}

impl Generated {
    /// HTML where each token is coloured by the probability the model gave it (green: likely,
    /// red: unlikely), with both that and the sampler's probability on hover.
    pub fn to_html(&self) -> String {
        let mut s = format!("<div style=\"font-family:monospace;white-space:pre-wrap;line-height:1.6\"><span style=\"color:#777\">{}</span>", html_escape(&self.prompt));
        for step in &self.steps {
            let hue = (step.model_prob.clamp(0.0, 1.0) * 120.0).round();
            s.push_str(&format!(
                "<span title=\"token {} · p(modelo) = {:.3} · p(amostrador) = {:.3}\" style=\"background:hsl({hue},70%,85%)\">{}</span>",
                step.token,
                step.model_prob,
                step.prob,
                html_escape(&step.text)
            ));
        }
        let why = match &self.stop {
            StopReason::EndOfText(t) => format!("token de fim de texto ({t})"),
            StopReason::StopString(s) => format!("texto de parada {s:?}"),
            StopReason::MaxTokens => "limite de tokens".to_string(),
        };
        s.push_str(&format!("</div><p style=\"font-size:12px;color:#555\">{} tokens · parou por: {why} · cor = probabilidade que o modelo deu ao token (verde alta, vermelho baixa)</p>", self.steps.len()));
        s
    }

    /// evcxr's rich display hook.
    pub fn evcxr_display(&self) {
        rich_html(&self.to_html());
    }
}

impl Report {
    /// The report as HTML: ✅, ❌ with the hint, or ⏳ while the exercise holds `todo!()`.
    pub fn to_html(&self) -> String {
        let (mark, colour, text) = match &self.status {
            Status::Passed => (
                "✅",
                "#e8f5e9",
                match self.cases {
                    1 => "Correto! 1 caso verificado.".to_string(),
                    n => format!("Correto! {n} casos verificados."),
                },
            ),
            Status::Failed { hint } => (
                "❌",
                "#ffebee",
                html_escape(&format!("Ainda não. Dica: {hint}")),
            ),
            Status::NotDone => (
                "⏳",
                "#fff8e1",
                "Ainda não feito: substitua o <code>todo!()</code> pela sua implementação.".into(),
            ),
        };
        format!(
            "<div style=\"background:{colour};padding:8px;border-radius:4px\"><b>{mark} {}</b> — {text}</div>",
            html_escape(&self.exercise)
        )
    }

    /// evcxr's rich display hook: the HTML report, and the plain lines tooling reads on stdout.
    pub fn evcxr_display(&self) {
        println!("{}", self.protocol_lines());
        rich_html(&self.to_html());
    }
}

#[cfg(test)]
mod tests {
    use crate::check::{Report, Status};

    #[test]
    fn a_passed_report_counts_its_cases_in_good_portuguese() {
        let report = |cases| Report {
            exercise: "x".into(),
            status: Status::Passed,
            cases,
        };
        assert!(report(1).to_html().contains("1 caso verificado."));
        assert!(report(12).to_html().contains("12 casos verificados."));
    }
}

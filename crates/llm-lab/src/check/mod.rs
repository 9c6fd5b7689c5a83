//! One check per exercise. Each runs the student's function on visible and hidden cases, survives
//! a panic (a `todo!()` means "not done yet"), and reports ✅ or ❌ with a hint in Portuguese that
//! names the mistake.
//!
//! - [`runner`]: runs the cases, catching panics, and builds the [`Report`];
//! - [`diagnose`]: compares an answer with the right one and with the known wrong ones (NaN and
//!   infinities always count as wrong), and picks the hint of the mistake it matches;
//! - one module per lesson ([`lesson01`] … [`lesson05`]), each with its hints as named data.
//!
//! A report prints one plain line for tooling ([`REPORT_PREFIX`]), which `cargo xtask check`
//! reads back: `llm-lab check: <exercício> = passed | failed | not done yet`, and on failure a
//! [`HINT_PREFIX`] line with the hint.

pub mod diagnose;
pub mod lesson01;
pub mod lesson02;
pub mod lesson03;
pub mod lesson04;
pub mod lesson05;
pub mod runner;
// The report lines' format, shared with `cargo xtask` (crate `llm-lab-shared`).
use llm_lab_shared::protocol;

pub use lesson01::{attention, causal_mask, count_heads, count_kv_heads, multi_head};
pub use lesson02::{block, count_layers, layer_norm};
pub use lesson03::positional_encoding;
pub use lesson04::{next_token_loss, temperature, top_p, SAMPLE_LOGITS};
pub use lesson05::{generation_loop, inverse_cdf, temperature_loop, top_p_sample, window_loop};
pub use protocol::{parse_hint_line, parse_report_line, HINT_PREFIX, REPORT_PREFIX};

/// How an exercise went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Every case passed.
    Passed,
    /// A case failed; the hint says why.
    Failed { hint: String },
    /// The function still holds `todo!()`.
    NotDone,
}

impl Status {
    /// The word tooling reads after `=` in the report line.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed { .. } => "failed",
            Status::NotDone => "not done yet",
        }
    }
}

/// The result of one check, shown as ✅/❌ in a notebook.
#[derive(Debug, Clone)]
pub struct Report {
    /// Exercise name.
    pub exercise: String,
    /// Outcome.
    pub status: Status,
    /// How many cases ran (visible and hidden).
    pub cases: usize,
}

impl Report {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }

    /// The hint, when the check failed.
    pub fn hint(&self) -> Option<&str> {
        match &self.status {
            Status::Failed { hint } => Some(hint),
            _ => None,
        }
    }

    /// The line tooling reads.
    ///
    /// ```
    /// use llm_lab::check::{Report, Status};
    /// let r = Report { exercise: "temperatura".into(), status: Status::NotDone, cases: 0 };
    /// assert_eq!(r.plain_line(), "llm-lab check: temperatura = not done yet");
    /// ```
    pub fn plain_line(&self) -> String {
        format!("{REPORT_PREFIX}{} = {}", self.exercise, self.status.word())
    }

    /// The plain line and, on failure, the hint line, as a notebook prints them.
    pub fn protocol_lines(&self) -> String {
        match self.hint() {
            Some(hint) => format!(
                "{}\n{HINT_PREFIX}{} = {hint}",
                self.plain_line(),
                self.exercise
            ),
            None => self.plain_line(),
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            Status::Failed { hint } => write!(f, "{}\n❌ {hint}", self.plain_line()),
            _ => write!(f, "{}", self.plain_line()),
        }
    }
}

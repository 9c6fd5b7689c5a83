//! Running a check's cases: each in order, a panic caught and kept quiet, the first case that is
//! not right decides the report.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{Report, Status};

/// What one case found.
pub enum Outcome {
    /// Right.
    Ok,
    /// Wrong, with the hint to show.
    Wrong(String),
    /// The student's function still holds `todo!()`.
    Todo,
    /// The student's function panicked, with this message.
    Panicked(String),
}

/// One case of a check, run lazily so a panic in it is caught.
pub type Case<'a> = Box<dyn FnOnce() -> Outcome + 'a>;

/// Runs `f`, turning a panic into an outcome; the panic message is kept, not printed.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Outcome> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    r.map_err(|e| {
        let msg = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if msg.starts_with("not yet implemented") || msg.starts_with("not implemented") {
            Outcome::Todo
        } else {
            Outcome::Panicked(msg)
        }
    })
}

/// The hint for a student's function that panicked.
const PANICKED: &str = "sua função entrou em pânico ({msg}). Leia a mensagem: um índice fora do \
                        intervalo ou um unwrap() em erro?";

/// Runs the cases in order and stops at the first that is not Ok.
pub fn report(exercise: &str, cases: Vec<Case<'_>>) -> Report {
    let n = cases.len();
    for case in cases {
        let status = match guarded(case).unwrap_or_else(|o| o) {
            Outcome::Ok => continue,
            Outcome::Todo => Status::NotDone,
            Outcome::Wrong(hint) => Status::Failed { hint },
            Outcome::Panicked(msg) => Status::Failed {
                hint: PANICKED.replace("{msg}", &msg),
            },
        };
        return Report {
            exercise: exercise.to_string(),
            status,
            cases: n,
        };
    }
    Report {
        exercise: exercise.to_string(),
        status: Status::Passed,
        cases: n,
    }
}

//! `cargo xtask check [NOTEBOOK…]`: runs a student's exercise notebooks and lists each exercise,
//! like rustlings. Every check cell gets a line, whether its check reported, its cell failed,
//! ran past the time limit, or never ran because the kernel had stopped before it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::cli::CheckArgs;
use crate::lab::Lab;
use crate::notebooks::{self, Limits, Run, StopKind, HINT_PREFIX, REPORT_PREFIX};

/// A notebook larger than this is not an exercise notebook (they weigh a few KB).
const MAX_NOTEBOOK_BYTES: u64 = 64 << 20;

/// What became of one exercise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed {
        hint: Option<String>,
    },
    NotDone,
    /// Its cell failed: a compile error, a crash (stack overflow), a missing variable.
    Error(String),
    /// Its cell ran past the time limit and was stopped.
    TimedOut,
    /// The run stopped before its cell.
    NotRun,
}

impl Outcome {
    pub fn mark(&self) -> &'static str {
        match self {
            Outcome::Passed => "✅",
            Outcome::NotDone => "⏳",
            _ => "❌",
        }
    }

    /// Whether it means the notebook could not run as it should.
    pub fn is_failure_to_run(&self) -> bool {
        matches!(
            self,
            Outcome::Error(_) | Outcome::TimedOut | Outcome::NotRun
        )
    }
}

/// One exercise of an executed notebook: the check's own name when it reported, otherwise the
/// cell and the check it calls.
#[derive(Clone, Debug)]
pub struct Exercise {
    pub name: String,
    /// The check its cell calls (`check::attention`): the same for every student's copy of a
    /// notebook, whatever became of the cell.
    pub check: Option<String>,
    pub outcome: Outcome,
}

/// Refuses anything but a readable regular file holding a Jupyter notebook (a FIFO would block,
/// a folder or a Python file would give a traceback), with a message that says what to give.
pub fn validate_notebook(path: &Path) -> Result<PathBuf> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{shown} não existe; dê o caminho de um notebook, por exemplo exercises/01_atencao_multicabecas.ipynb")
        }
        Err(e) => bail!("não consigo ler {shown}: {e}"),
    };
    if meta.is_dir() {
        bail!("{shown} é uma pasta; dê um arquivo .ipynb (ou nada, para verificar todos os de exercises/)");
    }
    if !meta.is_file() {
        bail!("{shown} não é um arquivo comum; dê um arquivo .ipynb");
    }
    if meta.len() > MAX_NOTEBOOK_BYTES {
        bail!(
            "{shown} tem {} bytes: grande demais para um notebook de exercícios",
            meta.len()
        );
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("não consigo ler {shown}: {e}"))?;
    let nb: Option<Value> = serde_json::from_slice(&bytes).ok();
    let is_notebook = nb.as_ref().is_some_and(|v| {
        v["cells"].is_array() && v["nbformat"].as_u64() == Some(4) && v["metadata"].is_object()
    });
    if !is_notebook {
        bail!("{shown} não é um notebook Jupyter (formato 4); dê um arquivo .ipynb de exercises/");
    }
    Ok(std::fs::canonicalize(path)?)
}

/// The check that a cell calls (`check::attention(…)` → `check::attention`), if it calls one.
fn check_called(source: &str) -> Option<String> {
    let start = source.find("check::")?;
    let name: String = source[start + "check::".len()..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then(|| format!("check::{name}"))
}

/// The first line of the first error output of a cell.
fn cell_error(cell: &Value) -> Option<String> {
    cell["outputs"]
        .as_array()?
        .iter()
        .find(|o| o["output_type"] == "error")
        .map(|o| {
            let text = notebooks::output_text(o);
            let text = text.strip_prefix("ERROR ").unwrap_or(&text);
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("erro")
                .to_string()
        })
}

/// Every exercise of an executed notebook with its outcome, in the notebook's order.
pub fn exercises(run: &Run) -> Vec<Exercise> {
    let mut found = vec![];
    let cells = run.nb["cells"].as_array().cloned().unwrap_or_default();
    for (i, cell) in cells.iter().enumerate() {
        if cell["cell_type"] != "code" {
            continue;
        }
        let source = notebooks::source_of(cell);
        let text: String = cell["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| notebooks::output_text(o) + "\n")
            .collect();
        let reports = notebooks::tagged_lines_in(&text, REPORT_PREFIX);
        let hints = notebooks::tagged_lines_in(&text, HINT_PREFIX);
        for (name, status) in &reports {
            let outcome = match status.as_str() {
                "passed" => Outcome::Passed,
                "not done yet" => Outcome::NotDone,
                _ => Outcome::Failed {
                    hint: hints
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, h)| h.clone()),
                },
            };
            found.push(Exercise {
                name: name.clone(),
                check: check_called(&source),
                outcome,
            });
        }
        if !reports.is_empty() {
            continue;
        }
        let stopped_here = run.stop.as_ref().filter(|s| s.cell == Some(i));
        let after_timeout = run.timeouts.iter().any(|&t| t < i);
        let stopped_before = run
            .stop
            .as_ref()
            .is_some_and(|s| s.cell.is_none_or(|c| c < i));
        let outcome = if let Some(stop) = stopped_here {
            match stop.kind {
                StopKind::Timeout => Outcome::TimedOut,
                StopKind::KernelDied => {
                    Outcome::Error(format!("o kernel morreu: {}", stop.message))
                }
                _ => Outcome::Error(cell_error(cell).unwrap_or_else(|| stop.message.clone())),
            }
        } else if run.timeouts.contains(&i) {
            Outcome::TimedOut
        } else if stopped_before {
            Outcome::NotRun
        } else if let Some(e) = cell_error(cell) {
            Outcome::Error(if after_timeout {
                format!("{e} (uma célula anterior foi interrompida e o kernel perdeu as variáveis: corrija-a e rode de novo)")
            } else {
                e
            })
        } else {
            continue;
        };
        let check = check_called(&source);
        let name = match &check {
            Some(c) => format!("célula {i} ({c})"),
            None => format!("célula {i}"),
        };
        // Cells that are not checks and never ran say nothing about an exercise.
        if outcome == Outcome::NotRun && check.is_none() {
            continue;
        }
        found.push(Exercise {
            name,
            check,
            outcome,
        });
    }
    found
}

/// The line printed for an exercise (and, on failure, its hint or error on a second line).
fn describe(e: &Exercise, timeout: u64) -> String {
    let mark = e.outcome.mark();
    match &e.outcome {
        Outcome::Passed => format!("{mark} {}: passed", e.name),
        Outcome::NotDone => format!("{mark} {}: not done yet", e.name),
        Outcome::Failed { hint } => match hint {
            Some(h) => format!("{mark} {}: failed\n     dica: {h}", e.name),
            None => format!("{mark} {}: failed", e.name),
        },
        Outcome::Error(msg) if msg.contains("SIGSEGV") || msg.contains("SIGABRT") => format!(
            "{mark} {}: erro\n     {msg}\n     o processo que roda o código caiu: uma recursão sem fim (estouro de pilha)?",
            e.name
        ),
        Outcome::Error(msg) => format!("{mark} {}: erro\n     {msg}", e.name),
        Outcome::TimedOut => format!(
            "{mark} {}: tempo esgotado\n     a célula passou de {timeout} s e foi interrompida (um laço que nunca termina?)",
            e.name
        ),
        Outcome::NotRun => format!(
            "{mark} {}: não executada\n     o notebook parou antes desta célula",
            e.name
        ),
    }
}

/// `cargo xtask check [NOTEBOOK…] [--timeout SECS]`.
pub fn check(args: &CheckArgs) -> Result<()> {
    // Arguments first: a typo must not wait for a setup.
    let files: Vec<PathBuf> = args
        .notebooks
        .iter()
        .map(|f| validate_notebook(f))
        .collect::<Result<_>>()?;
    let lab = Lab::new();
    if !lab.is_ready() {
        crate::lab::setup()?;
    }
    let files = if files.is_empty() {
        notebooks::list(&lab.root.join("exercises"))?
    } else {
        files
    };
    let limits = Limits::student(args.timeout);
    crate::process::catch_interrupts();
    let (mut passed, mut total, mut broken) = (0, 0, vec![]);
    for f in files {
        if crate::process::interrupted() {
            return Err(crate::process::Interrupted.into());
        }
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        println!("{name}");
        let run = match notebooks::execute(&lab, &f, limits) {
            Ok(run) => run,
            Err(e) if e.is::<crate::process::Interrupted>() => return Err(e),
            Err(e) => {
                println!("  ❌ o notebook não executou: {e:#}");
                broken.push(name);
                continue;
            }
        };
        if let Some(stop) = run.stop.as_ref().filter(|s| s.kind == StopKind::NoKernel) {
            println!("  ❌ o kernel Rust não iniciou: {}", stop.message);
        }
        let found = exercises(&run);
        for e in &found {
            total += 1;
            passed += usize::from(e.outcome == Outcome::Passed);
            println!("  {}", describe(e, args.timeout));
        }
        if run.stop.is_some() || found.iter().any(|e| e.outcome.is_failure_to_run()) {
            broken.push(name);
        }
    }
    println!("{passed}/{total} exercícios concluídos");
    if !broken.is_empty() {
        bail!(
            "{} notebook(s) não rodaram até o fim: {}",
            broken.len(),
            broken.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebooks::{new_notebook, Stop};
    use serde_json::json;

    fn run_with(outputs: Vec<Value>, stop: Option<Stop>) -> Run {
        let sources: Vec<String> = (0..outputs.len())
            .map(|i| format!("check::exercise_{i}(f)"))
            .collect();
        let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
        let mut nb = new_notebook(&refs);
        for (i, o) in outputs.into_iter().enumerate() {
            nb["cells"][i]["outputs"] = o;
        }
        Run {
            nb,
            stop,
            timeouts: vec![],
        }
    }

    fn stdout(text: &str) -> Value {
        json!([{"output_type": "stream", "name": "stdout", "text": [text]}])
    }

    #[test]
    fn every_check_cell_gets_an_outcome() {
        let run = run_with(
            vec![
                stdout("llm-lab check: a = passed\n"),
                stdout("llm-lab check: b = failed\nllm-lab hint: b = divida por T\n"),
                json!([{"output_type": "error", "ename": "Error", "evalue": "Child process terminated with status: signal: 6 (SIGABRT)", "traceback": []}]),
                json!([]),
                json!([]),
            ],
            Some(Stop {
                kind: StopKind::Timeout,
                cell: Some(3),
                message: "Cell execution timed out".into(),
            }),
        );
        let found = exercises(&run);
        let outcomes: Vec<&Outcome> = found.iter().map(|e| &e.outcome).collect();
        assert_eq!(
            outcomes,
            [
                &Outcome::Passed,
                &Outcome::Failed {
                    hint: Some("divida por T".into())
                },
                &Outcome::Error(
                    "Error: Child process terminated with status: signal: 6 (SIGABRT)".into()
                ),
                &Outcome::TimedOut,
                &Outcome::NotRun,
            ]
        );
        assert_eq!(found[3].name, "célula 3 (check::exercise_3)");
    }

    #[test]
    fn a_run_goes_on_after_an_interrupted_cell() {
        let mut run = run_with(
            vec![
                json!([{"output_type": "error", "ename": "Error", "evalue": "Subprocess terminated with status: signal: 9 (SIGKILL)", "traceback": []}]),
                stdout("llm-lab check: b = not done yet\n"),
                json!([{"output_type": "error", "ename": "Error", "evalue": "cannot find value `model` in this scope", "traceback": []}]),
            ],
            None,
        );
        run.timeouts = vec![0];
        let found = exercises(&run);
        assert_eq!(found[0].outcome, Outcome::TimedOut);
        assert_eq!(found[1].outcome, Outcome::NotDone);
        assert!(
            matches!(&found[2].outcome, Outcome::Error(e) if e.contains("perdeu as variáveis")),
            "{found:?}"
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_what_to_give() {
        let dir = tempfile::tempdir().unwrap();
        let e = validate_notebook(&dir.path().join("nope.ipynb")).unwrap_err();
        assert!(e.to_string().contains("não existe"), "{e}");
        let e = validate_notebook(dir.path()).unwrap_err();
        assert!(e.to_string().contains("é uma pasta"), "{e}");
        let py = dir.path().join("x.py");
        std::fs::write(&py, "print(1)").unwrap();
        let e = validate_notebook(&py).unwrap_err();
        assert!(e.to_string().contains("não é um notebook"), "{e}");
        let nb = dir.path().join("ok.ipynb");
        std::fs::write(&nb, new_notebook(&["1"]).to_string()).unwrap();
        assert!(validate_notebook(&nb).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.ipynb");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string, a plain system call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = validate_notebook(&fifo).unwrap_err();
        assert!(e.to_string().contains("não é um arquivo comum"), "{e}");
    }
}

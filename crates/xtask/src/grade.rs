//! `cargo xtask grade DIR`: a teacher's gradebook. DIR holds one sub-folder per student (their
//! exercise notebooks inside) or one notebook per student (named after them). Each notebook runs
//! on a fresh kernel, from a copy in a temporary folder, without network, with the same per-cell
//! time limit and clean-up as `check`; a notebook that loops, crashes or fails to run is graded as
//! such and the next one runs. The gradebook is a CSV (one row per student × exercise) and an HTML
//! table (one row per student), both written into DIR.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use llm_lab_shared::html::html_escape;

use crate::check::{self, Exercise, Outcome};
use crate::cli::GradeArgs;
use crate::lab::Lab;
use crate::notebooks::{self, Limits};

/// One student's notebooks.
struct Submission {
    student: String,
    notebooks: Vec<PathBuf>,
}

/// One cell of the gradebook.
struct Grade {
    student: String,
    notebook: String,
    /// The column: the check the cell calls, else the exercise's name.
    exercise: String,
    outcome: Outcome,
}

fn submissions(dir: &Path) -> Result<Vec<Submission>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with('.')
        })
        .collect();
    entries.sort();
    let mut found = vec![];
    for p in entries {
        let name = |p: &Path| {
            p.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        if p.is_dir() {
            let notebooks = notebooks::list(&p)?;
            if !notebooks.is_empty() {
                found.push(Submission {
                    student: name(&p),
                    notebooks,
                });
            }
        } else if p.extension().is_some_and(|x| x == "ipynb") {
            found.push(Submission {
                student: name(&p),
                notebooks: vec![p],
            });
        }
    }
    if found.is_empty() {
        bail!(
            "{} holds no students: give a folder with one sub-folder of .ipynb files (or one .ipynb file) per student",
            dir.display()
        );
    }
    Ok(found)
}

/// A copy of `nb` in `work` whose `:dep llm-lab` points at this repository's crate, wherever the
/// student's copy sat.
fn placed_copy(lab: &Lab, nb: &Path, work: &Path) -> Result<PathBuf> {
    let mut v = notebooks::read(nb)?;
    let dep = format!(
        ":dep llm-lab = {{ path = {:?} }}",
        lab.root
            .join("crates")
            .join("llm-lab")
            .display()
            .to_string()
    );
    for cell in v["cells"].as_array_mut().into_iter().flatten() {
        let src = notebooks::source_of(cell);
        if src
            .lines()
            .any(|l| l.trim_start().starts_with(":dep llm-lab"))
        {
            let fixed: Vec<String> = src
                .split_inclusive('\n')
                .map(|l| {
                    if l.trim_start().starts_with(":dep llm-lab") {
                        format!("{dep}{}", if l.ends_with('\n') { "\n" } else { "" })
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            cell["source"] = serde_json::json!(fixed);
        }
    }
    let copy = work.join(nb.file_name().context("a notebook has a file name")?);
    std::fs::write(&copy, serde_json::to_string(&v)?)?;
    Ok(copy)
}

fn grade_notebook(lab: &Lab, student: &str, nb: &Path, timeout: u64) -> Result<Vec<Grade>> {
    let notebook = nb
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let as_grade = |exercise: String, outcome: Outcome| Grade {
        student: student.to_string(),
        notebook: notebook.clone(),
        exercise,
        outcome,
    };
    if let Err(e) = check::validate_notebook(nb) {
        return Ok(vec![as_grade(
            "(notebook)".into(),
            Outcome::Error(format!("{e:#}")),
        )]);
    }
    let work = tempfile::Builder::new()
        .prefix("llm-lab-grade-")
        .tempdir()?;
    let copy = placed_copy(lab, nb, work.path())?;
    let limits = Limits {
        offline: true,
        ..Limits::student(timeout)
    };
    let run = match notebooks::execute(lab, &copy, limits) {
        Ok(run) => run,
        Err(e) if e.is::<crate::process::Interrupted>() => return Err(e),
        Err(e) => {
            return Ok(vec![as_grade(
                "(notebook)".into(),
                Outcome::Error(format!("{e:#}")),
            )])
        }
    };
    let mut grades: Vec<Grade> = check::exercises(&run)
        .into_iter()
        .map(
            |Exercise {
                 name,
                 check,
                 outcome,
             }| as_grade(check.unwrap_or(name), outcome),
        )
        .collect();
    if let Some(stop) = &run.stop {
        grades.push(as_grade(
            "(notebook)".into(),
            Outcome::Error(stop.to_string()),
        ));
    }
    Ok(grades)
}

/// The CSV field of an outcome, and its detail (hint or error).
fn outcome_fields(o: &Outcome) -> (&'static str, String) {
    match o {
        Outcome::Passed => ("passed", String::new()),
        Outcome::Failed { hint } => ("failed", hint.clone().unwrap_or_default()),
        Outcome::NotDone => ("not done", String::new()),
        Outcome::Error(e) => ("error", e.clone()),
        Outcome::TimedOut => ("timed out", String::new()),
        Outcome::NotRun => ("not run", String::new()),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(grades: &[Grade]) -> String {
    let mut out = String::from("student,notebook,exercise,outcome,detail\n");
    for g in grades {
        let (outcome, detail) = outcome_fields(&g.outcome);
        let row = [
            g.student.as_str(),
            g.notebook.as_str(),
            g.exercise.as_str(),
            outcome,
            detail.as_str(),
        ]
        .map(csv_field)
        .join(",");
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// One row per student, one column per notebook × exercise; the hint or error on hover.
fn html(grades: &[Grade]) -> String {
    let mut columns: Vec<(String, String)> = vec![];
    let mut students: Vec<String> = vec![];
    for g in grades {
        let col = (g.notebook.clone(), g.exercise.clone());
        if !columns.contains(&col) {
            columns.push(col);
        }
        if !students.contains(&g.student) {
            students.push(g.student.clone());
        }
    }
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"pt-BR\"><head><meta charset=\"utf-8\"><title>Notas — llm-lab</title>\n<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}th{background:#f4f4f4}.passed{background:#e8f5e9}.failed,.error,.timed-out,.not-run{background:#ffebee}.not-done{background:#fff8e1}</style></head><body>\n<h1>Notas</h1>\n<table>\n<tr><th>aluno</th>",
    );
    for (nb, ex) in &columns {
        let _ = write!(
            h,
            "<th>{}<br><small>{}</small></th>",
            html_escape(ex),
            html_escape(nb)
        );
    }
    h.push_str("<th>concluídos</th></tr>\n");
    for s in &students {
        let _ = write!(h, "<tr><th>{}</th>", html_escape(s));
        let mut passed = 0;
        for (nb, ex) in &columns {
            match grades
                .iter()
                .find(|g| &g.student == s && &g.notebook == nb && &g.exercise == ex)
            {
                Some(g) => {
                    let (outcome, detail) = outcome_fields(&g.outcome);
                    passed += usize::from(g.outcome == Outcome::Passed);
                    let _ = write!(
                        h,
                        "<td class=\"{}\" title=\"{}\">{} {}</td>",
                        outcome.replace(' ', "-"),
                        html_escape(&detail),
                        g.outcome.mark(),
                        outcome
                    );
                }
                None => h.push_str("<td>—</td>"),
            }
        }
        let _ = writeln!(h, "<td>{passed}</td></tr>");
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

/// Writes `text` to `path` whole or not at all.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path)?;
    Ok(())
}

/// `cargo xtask grade DIR [--timeout SECS]`.
pub fn grade(args: &GradeArgs) -> Result<()> {
    let subs = submissions(&args.dir)?;
    let lab = Lab::new();
    if !lab.is_ready() {
        crate::lab::setup()?;
    }
    let mut grades = vec![];
    crate::process::catch_interrupts();
    for sub in &subs {
        if crate::process::interrupted() {
            return Err(crate::process::Interrupted.into());
        }
        eprintln!("==> {}", sub.student);
        for nb in &sub.notebooks {
            let g = grade_notebook(&lab, &sub.student, nb, args.timeout)?;
            for x in &g {
                eprintln!("    {} {} / {}", x.outcome.mark(), x.notebook, x.exercise);
            }
            grades.extend(g);
        }
    }
    let (csv_path, html_path) = (
        args.dir.join("gradebook.csv"),
        args.dir.join("gradebook.html"),
    );
    write_atomically(&csv_path, &csv(&grades))?;
    write_atomically(&html_path, &html(&grades))?;
    println!(
        "{} students graded: {} and {}",
        subs.len(),
        csv_path.display(),
        html_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let g = [Grade {
            student: "ana".into(),
            notebook: "01.ipynb".into(),
            exercise: "check::attention".into(),
            outcome: Outcome::Failed {
                hint: Some("divida por √d, \"não\" por d".into()),
            },
        }];
        assert_eq!(
            csv(&g),
            "student,notebook,exercise,outcome,detail\nana,01.ipynb,check::attention,failed,\"divida por √d, \"\"não\"\" por d\"\n"
        );
        assert!(html(&g).contains("title=\"divida por √d, &quot;não&quot; por d\""));
    }
}

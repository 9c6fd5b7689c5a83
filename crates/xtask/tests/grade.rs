//! `cargo xtask grade` on a class of five made-up students, built from the course's own lesson 01
//! solution: complete, partial, wrong, panicking and looping forever. Needs the evcxr kernel
//! (`cargo xtask setup`); without it the test says why and passes (fails under `CI=true`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

fn solution() -> Value {
    let path = support::root().join("solutions/01_atencao_multicabecas.ipynb");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The solution with the cell that defines `function` replaced by `source`.
fn with_function(mut nb: Value, function: &str, source: &str) -> Value {
    let needle = format!("fn {function}(");
    let cell = nb["cells"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| {
            c["source"]
                .as_array()
                .is_some_and(|s| s.iter().any(|l| l.as_str().unwrap_or("").contains(&needle)))
        })
        .unwrap_or_else(|| panic!("no cell defines {function}"));
    cell["source"] = Value::String(source.to_string());
    nb
}

fn write(dir: &Path, student: &str, nb: &Value) {
    let folder = dir.join(student);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("01_atencao_multicabecas.ipynb"), nb.to_string()).unwrap();
}

/// (student, exercise) → outcome, from gradebook.csv (no field of these holds a comma).
fn gradebook(csv: &str) -> BTreeMap<(String, String), String> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ',').collect();
            ((f[0].to_string(), f[2].to_string()), f[3].to_string())
        })
        .collect()
}

#[test]
fn a_class_of_five_gets_the_right_gradebook() {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return;
    }
    let class = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let sol = solution();
    write(class.path(), "ana-complete", &sol);
    write(
        class.path(),
        "bia-partial",
        &with_function(
            sol.clone(),
            "multi_head",
            "fn multi_head(x: &Tensor, heads: &[HeadWeights], w_o: &Tensor) -> Result<Tensor> {\n    todo!()\n}",
        ),
    );
    write(
        class.path(),
        "caio-wrong",
        &with_function(
            sol.clone(),
            "n_heads",
            "fn n_heads(shapes: &WeightShapes, d_head: usize) -> usize {\n    shapes.rows(\"blk.0.attn_k.weight\") / d_head\n}",
        ),
    );
    write(
        class.path(),
        "davi-panics",
        &with_function(
            sol.clone(),
            "attention",
            "fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {\n    panic!(\"ainda não sei\")\n}",
        ),
    );
    write(
        class.path(),
        "eva-loops",
        &with_function(
            sol,
            "attention",
            "fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {\n    loop {\n        std::hint::spin_loop();\n    }\n}",
        ),
    );
    let tag = support::tag("grade");
    let mut child = support::xtask(&tag)
        .arg("grade")
        .arg(class.path())
        .args(["--timeout", "45"])
        .env("TMPDIR", scratch.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            let _ = child.kill();
            panic!("grade did not end");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    eprintln!("{out}\n{err}");
    assert!(status.success(), "{err}");

    let csv = std::fs::read_to_string(class.path().join("gradebook.csv")).unwrap();
    let book = gradebook(&csv);
    let exercises = [
        "check::count_heads",
        "check::count_kv_heads",
        "check::attention",
        "check::causal_mask",
        "check::multi_head",
    ];
    let expected: [(&str, [&str; 5]); 5] = [
        (
            "ana-complete",
            ["passed", "passed", "passed", "passed", "passed"],
        ),
        (
            "bia-partial",
            ["passed", "passed", "passed", "passed", "not done"],
        ),
        (
            "caio-wrong",
            ["failed", "passed", "passed", "passed", "passed"],
        ),
        // multi_head calls the student's own attention: it fails (or hangs) with it; the causal
        // mask does not.
        (
            "davi-panics",
            ["passed", "passed", "failed", "passed", "failed"],
        ),
        (
            "eva-loops",
            ["passed", "passed", "timed out", "passed", "timed out"],
        ),
    ];
    for (student, outcomes) in expected {
        for (ex, want) in exercises.iter().zip(outcomes) {
            assert_eq!(
                book.get(&(student.to_string(), ex.to_string()))
                    .map(String::as_str),
                Some(want),
                "{student} / {ex} in\n{csv}"
            );
        }
    }
    // A failed exercise carries its hint.
    assert!(
        csv.lines().any(|l| l.starts_with("caio-wrong,")
            && l.contains(",failed,")
            && !l.ends_with(",failed,")),
        "{csv}"
    );
    let html = std::fs::read_to_string(class.path().join("gradebook.html")).unwrap();
    for student in [
        "ana-complete",
        "bia-partial",
        "caio-wrong",
        "davi-panics",
        "eva-loops",
    ] {
        assert!(html.contains(&format!("<tr><th>{student}</th>")), "{html}");
    }
    let left = support::tagged(&tag.0, &tag.1);
    assert!(left.is_empty(), "processes left running: {left:#?}");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

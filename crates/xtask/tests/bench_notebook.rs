//! `cargo xtask bench-notebook` runs a new kernel and a restarted one to their first logits, cold,
//! a trivial cell, and the first lesson's kernel (cold, then the spare) and a restart (the next
//! spare) in a Jupyter server as `cargo xtask lab` starts it, and reports every step with its
//! time; nothing
//! it started is left running (spares included). Needs
//! the lab installed (`cargo xtask setup`); without it the test says why and passes (fails under `CI=true`). Times are
//! printed, never asserted.

mod support;

#[test]
fn bench_notebook_reports_every_step() {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return;
    }
    let tag = support::tag("bench-notebook");
    let out = support::xtask(&tag)
        .args(["bench-notebook", "--trivial-runs", "2"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stderr}\n{stdout}");
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<(String, f64)> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (name, secs) = l.trim_end().rsplit_once(' ')?;
            Some((
                name.split_whitespace().collect::<Vec<_>>().join(" "),
                secs.parse().ok()?,
            ))
        })
        .collect();
    let steps = [
        "kernel ready",
        "`:dep` cell",
        "model load",
        "first logits",
        "total to first logits",
    ];
    let mut expected = vec![];
    let kernels = ["fresh kernel", "kernel restart"];
    // The lab's first kernel and a restart, through a Jupyter server with the lab's spares.
    let lab = ["lab: at once", "lab: spare warm", "lab: restart"];
    for phase in kernels {
        expected.extend(steps.map(|step| format!("{phase} {step}")));
    }
    expected.extend(["trivial cell run 1".into(), "trivial cell run 2".into()]);
    for phase in lab {
        expected.extend(steps.map(|step| format!("{phase} {step}")));
    }
    let phases = kernels.iter().chain(&lab);
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, expected, "{stdout}");
    assert!(
        rows.iter().all(|(_, s)| s.is_finite() && *s >= 0.0),
        "{stdout}"
    );
    // A phase's total covers its steps.
    for phase in phases {
        let of = |step: &str| {
            rows.iter()
                .find(|(n, _)| n == &format!("{phase} {step}"))
                .unwrap()
                .1
        };
        let parts = of("`:dep` cell") + of("model load") + of("first logits");
        assert!(of("total to first logits") >= parts, "{stdout}");
    }
    assert!(
        stderr.contains("an idle warm spare holds"),
        "no spare memory note: {stderr}"
    );
    assert!(
        stderr.contains("the lab's spare for the lessons was warm"),
        "no note on the lab's spare: {stderr}"
    );
    assert!(
        support::tagged(&tag.0, &tag.1).is_empty(),
        "the benchmark left processes running"
    );
}

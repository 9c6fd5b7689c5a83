//! The crate's layers point one way: the model knows no screen and no exercise. Every reference
//! `crate::<module>` in the library's source (comments aside) goes to a module of the same or a
//! lower layer, and modules never reference each other in a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layer of each top-level module; 0 serves every layer (errors, the registry, comparisons).
fn layer(module: &str) -> Option<usize> {
    Some(match module {
        "error" | "models" | "threads" | "compare" | "rng" => 0,
        "gguf" | "model" | "tokenizer" => 1,
        "logits" | "sampling" | "generate" | "chat" => 2,
        "scratch" | "scripted" | "check" | "testing" | "train" => 3,
        "display" | "plot" | "explorer" => 4,
        _ => return None,
    })
}

/// `module → modules it references`, read from `src/`.
fn references() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = top.trim_end_matches(".rs").to_string();
            if module == "lib" {
                continue; // the crate root declares and re-exports every module
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for piece in line.split("crate::").skip(1) {
                    let target: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if layer(&target).is_some() && target != module {
                        out.entry(module.clone()).or_default().insert(target);
                    }
                }
            }
            out.entry(module).or_default();
        }
    }
    out
}

#[test]
fn every_module_has_a_layer() {
    for module in references().keys() {
        assert!(
            layer(module).is_some(),
            "`{module}` has no layer in tests/layers.rs"
        );
    }
}

#[test]
fn no_reference_goes_up_a_layer() {
    let mut wrong = vec![];
    for (from, targets) in references() {
        for to in targets {
            if layer(&to) > layer(&from) {
                wrong.push(format!(
                    "{from} (layer {:?}) → {to} (layer {:?})",
                    layer(&from),
                    layer(&to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "references that go up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn core_modules_know_no_screen_and_no_exercise() {
    let refs = references();
    for core in [
        "gguf",
        "model",
        "tokenizer",
        "logits",
        "sampling",
        "generate",
        "chat",
    ] {
        for shown in ["display", "plot", "explorer", "check", "testing"] {
            assert!(!refs[core].contains(shown), "{core} references {shown}");
        }
    }
}

#[test]
fn no_cycles_between_modules() {
    let refs = references();
    // Depth-first search from each module; reaching it again is a cycle.
    for start in refs.keys() {
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start.as_str(), vec![start.as_str()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for next in refs.get(m).into_iter().flatten() {
                if next == start {
                    panic!("cycle: {} → {start}", path.join(" → "));
                }
                if seen.insert(next.as_str()) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
    }
}

//! Peak memory of the real models: loading the file and generating 128 tokens must keep the
//! process's resident-set high-water mark (`VmHWM`) within 1.5 × the file's size, for both
//! models. Each measurement runs in a child process (this test binary, re-run on one test), so
//! its peak is its own and not another test's. Linux only (`/proc`); without a model file the
//! test says SKIPPED and passes.

use std::process::Command;

use llm_lab::models::{self, DEFAULT_MODEL};
use llm_lab::testing::real_gemma;
use llm_lab::{KvCache, Model};

/// The bound the issue sets: the quantized file once, plus activations, cache and the runtime.
const BOUND: f64 = 1.5;
const GENERATED: usize = 128;
const CHILD_ENV: &str = "LLM_LAB_PEAK_MEMORY_CHILD";

fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The child's side: does nothing unless the parent named a model file.
#[test]
fn child_load_and_generate() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let model = Model::load(&path).unwrap();
    let mut cache = KvCache::new();
    let prompt = model
        .tokenizer
        .encode("Certa vez, ele resolveu que não seria")
        .unwrap();
    let mut logits = model.step(&prompt, &mut cache).unwrap();
    for _ in 0..GENERATED {
        let next = logits
            .flatten_all()
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        logits = model.step(&[next], &mut cache).unwrap();
    }
    println!(
        "VmHWM_KB={}",
        vm_hwm_kb().expect("/proc/self/status has VmHWM")
    );
}

/// Runs the child on `path`; returns its peak in bytes.
fn child_peak(path: &std::path::Path) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_load_and_generate",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .env("CANDLE_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kb: u64 = stdout
        .lines()
        // The harness may print the test's name on the same line before it.
        .find_map(|l| l.split_once("VmHWM_KB=").map(|(_, kb)| kb))
        .unwrap_or_else(|| panic!("the child printed no VmHWM: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

fn assert_within_bound(name: &str, path: &std::path::Path) {
    if !std::path::Path::new("/proc/self/status").exists() {
        llm_lab::testing::missing(name, "/proc/self/status (Linux's /proc)");
        return;
    }
    let file = std::fs::metadata(path).unwrap().len();
    let peak = child_peak(path);
    let ratio = peak as f64 / file as f64;
    eprintln!(
        "{name}: peak {:.1} MB for a {:.1} MB file = {ratio:.2} ×",
        peak as f64 / 1e6,
        file as f64 / 1e6
    );
    assert!(
        ratio <= BOUND,
        "{name}: peak memory {peak} bytes = {ratio:.2} × the file ({file} bytes), above {BOUND} ×"
    );
}

#[test]
fn smollm2_peak_memory_is_within_the_bound() {
    assert_within_bound(
        "smollm2_peak_memory_is_within_the_bound",
        &models::fetch(DEFAULT_MODEL).unwrap(),
    );
}

#[test]
fn gemma_peak_memory_is_within_the_bound() {
    let name = "gemma_peak_memory_is_within_the_bound";
    if let Some(path) = real_gemma(name) {
        assert_within_bound(name, &path);
    }
}

//! A long prompt costs memory in proportion to its length, not its square: a 4096-token prompt
//! on the default model stays under 1 GB (the attention scores are computed in query chunks).
//! Its own test binary, so the process's peak memory is this test's alone.

use llm_lab::{KvCache, Model};

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_4096_token_prompt_stays_under_1_gb() {
    let model = Model::load_default().expect("the default model (cargo xtask fetch)");
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(500);
    let mut tokens = model.encode(&text).unwrap();
    tokens.truncate(4096);
    assert_eq!(tokens.len(), 4096);
    let mut cache = KvCache::new();
    let logits = model.step(&tokens, &mut cache).unwrap();
    assert_eq!(cache.len(), 4096);
    assert_eq!(logits.dims(), &[model.config.d_vocab]);
    match peak_rss_bytes() {
        Some(peak) => assert!(peak < 1 << 30, "peak memory {} MB", peak >> 20),
        None => eprintln!("no /proc here: memory not measured"),
    }
}

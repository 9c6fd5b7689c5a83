//! `cargo xtask bench`: tokens per second and peak memory of the glass-box model (tracing off and
//! on) against candle-transformers' `quantized_llama` (`quantized_gemma3` for Gemma) on the same
//! file, in the same run; with
//! `--llama-bench PATH`, llama.cpp's own `llama-bench` too.
//!
//! Each engine runs in a child process of its own, so its peak resident memory is its own and no
//! engine warms caches or thread pools for the next.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llm_lab::{KvCache, Model, TraceOptions};

use llm_lab_shared::args::BenchArgs;

const TEXT: &str = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg \
combined movable metal type, oil-based ink and a wooden screw press into a system that could produce books \
faster and cheaper than any scribe. Within fifty years presses were running in more than two hundred cities.";

/// The engines measured in every run; the first is the yardstick for the ratios.
const ENGINES: [&str; 3] = [
    "candle-transformers (quantized_llama or quantized_gemma3)",
    "glass-box",
    "glass-box, traced",
];

/// One engine's measurement.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    prompt_tok_s: f64,
    gen_tok_s: f64,
    peak_rss_mb: Option<f64>,
}

impl Row {
    /// The faster of two measurements of one engine, per column; the larger peak memory.
    fn best_of(self, other: Row) -> Row {
        Row {
            name: self.name,
            prompt_tok_s: self.prompt_tok_s.max(other.prompt_tok_s),
            gen_tok_s: self.gen_tok_s.max(other.gen_tok_s),
            peak_rss_mb: match (self.peak_rss_mb, other.peak_rss_mb) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

fn argmax(t: &Tensor) -> Result<u32> {
    Ok(t.flatten_all()?.argmax(0)?.to_scalar::<u32>()?)
}

/// Runs `prompt`, then `gen` greedy single-token steps; returns (prompt seconds, generation seconds).
type Run = Box<dyn FnMut(&[u32], usize) -> Result<(f64, f64)>>;

/// Times one greedy run: `step(tokens, position)` returns the logits after `tokens`, which start
/// at `position` (0 starts afresh).
fn time_greedy(
    prompt: &[u32],
    gen: usize,
    mut step: impl FnMut(&[u32], usize) -> Result<Tensor>,
) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut logits = step(prompt, 0)?;
    let pp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..gen {
        let next = argmax(&logits)?;
        logits = step(&[next], prompt.len() + i)?;
    }
    Ok((pp, t.elapsed().as_secs_f64()))
}

fn glass_box(path: &std::path::Path, traced: bool) -> Result<Run> {
    let model = Model::load(path)?;
    Ok(Box::new(move |prompt, gen| {
        let mut cache = KvCache::new();
        time_greedy(prompt, gen, |tokens, _| {
            Ok(if traced {
                model
                    .forward(tokens)
                    .cache(&mut cache)
                    .trace(TraceOptions::default())
                    .next()?
                    .logits
            } else {
                model.step(tokens, &mut cache)?
            })
        })
    }))
}

fn quantized_llama(path: &std::path::Path) -> Result<Run> {
    let mut f = std::fs::File::open(path)?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut f)?;
    let arch = content.metadata.get("general.architecture");
    if matches!(arch, Some(candle_core::quantized::gguf_file::Value::String(a)) if a == "gemma3") {
        // The same yardstick for Gemma: candle's own model of the architecture (at position 0
        // it starts its cache afresh).
        use candle_transformers::models::quantized_gemma3::ModelWeights as Gemma3;
        let mut m = Gemma3::from_gguf(content, &mut f, &Device::Cpu)?;
        return Ok(Box::new(move |prompt, gen| {
            time_greedy(prompt, gen, |tokens, pos| {
                Ok(m.forward(&Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?, pos)?)
            })
        }));
    }
    let mut m = ModelWeights::from_gguf(content, &mut f, &Device::Cpu)?;
    Ok(Box::new(move |prompt, gen| {
        m.clear_kv_cache();
        time_greedy(prompt, gen, |tokens, pos| {
            Ok(m.forward(&Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?, pos)?)
        })
    }))
}

/// The machine's load averages over 1, 5 and 15 minutes (`/proc/loadavg`), as `uptime` prints
/// them: on a shared machine they say how much the numbers beside them can be trusted.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Peak resident memory of this process so far, in MB (Linux).
fn own_peak_rss_mb() -> Option<f64> {
    peak_rss_mb(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmHWM` (the resident-set high-water mark) from a `/proc/<pid>/status` text, in MB.
fn peak_rss_mb(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The child side: measures one engine and prints one JSON line.
fn run_engine(args: &BenchArgs, engine: &str) -> Result<()> {
    let path = args
        .model_path
        .clone()
        .context("--model-path is required")?;
    let prompt: Vec<u32> =
        serde_json::from_str(args.tokens.as_deref().context("--tokens is required")?)?;
    let n_gen = args.gen_tokens;
    let repeats = args.repeats.max(1);
    let mut run = match engine {
        "candle-transformers (quantized_llama or quantized_gemma3)" => quantized_llama(&path)?,
        "glass-box" => glass_box(&path, false)?,
        "glass-box, traced" => glass_box(&path, true)?,
        other => bail!("unknown engine `{other}`"),
    };
    run(&prompt[..prompt.len().min(8)], 2)?; // warm-up: first-touch pages, thread pool start
    let (mut pp, mut tg) = (f64::MAX, f64::MAX);
    for _ in 0..repeats {
        let (a, b) = run(&prompt, n_gen)?;
        pp = pp.min(a);
        tg = tg.min(b);
    }
    let json = serde_json::json!({
        "prompt_tok_s": prompt.len() as f64 / pp,
        "gen_tok_s": n_gen as f64 / tg,
        "peak_rss_mb": own_peak_rss_mb(),
    });
    println!("{json}");
    Ok(())
}

/// Runs `cmd`, sampling its peak memory from /proc while it runs; returns its stdout and peak MB.
fn run_measured(mut cmd: Command) -> Result<(String, Option<f64>)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // Both pipes drained while the child runs, so a full pipe cannot stall it.
    let read_all = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).map(|_| s)
        })
    };
    let out = read_all(Box::new(stdout));
    let err = read_all(Box::new(stderr));
    let mut peak: Option<f64> = None;
    let status = loop {
        // VmHWM only grows, so the last reading before exit is the peak up to ~10 ms.
        if let Some(mb) = std::fs::read_to_string(&status_path)
            .ok()
            .as_deref()
            .and_then(peak_rss_mb)
        {
            peak = Some(peak.map_or(mb, |p: f64| p.max(mb)));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out.join().expect("reader thread")?;
    let err = err.join().expect("reader thread")?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}):\n{err}");
    }
    Ok((out, peak))
}

fn measure_engine(
    engine: &str,
    path: &std::path::Path,
    tokens: &[u32],
    n_gen: usize,
    repeats: usize,
) -> Result<Row> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", "--engine", engine, "--model-path"])
        .arg(path)
        .args([
            "--tokens",
            &serde_json::to_string(tokens)?,
            "--gen-tokens",
            &n_gen.to_string(),
            "--repeats",
            &repeats.to_string(),
        ]);
    let (out, _) = run_measured(cmd)?;
    let line = out.lines().last().context("the engine printed nothing")?;
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("unexpected engine output: {out}"))?;
    Ok(Row {
        name: engine.to_string(),
        prompt_tok_s: v["prompt_tok_s"].as_f64().context("prompt_tok_s")?,
        gen_tok_s: v["gen_tok_s"].as_f64().context("gen_tok_s")?,
        peak_rss_mb: v["peak_rss_mb"].as_f64(),
    })
}

/// llama.cpp's `llama-bench` on the same file, prompt length, generation length and threads.
fn measure_llama_cpp(
    bin: &std::path::Path,
    path: &std::path::Path,
    n_prompt: usize,
    n_gen: usize,
    repeats: usize,
    threads: &str,
) -> Result<Row> {
    let mut cmd = Command::new(bin);
    cmd.arg("-m").arg(path).args([
        "-p",
        &n_prompt.to_string(),
        "-n",
        &n_gen.to_string(),
        "-t",
        threads,
        "-r",
        &repeats.to_string(),
        "-o",
        "json",
    ]);
    let (out, peak) = run_measured(cmd)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("llama-bench printed no JSON: {out}"))?;
    // The best repetition, as for the other engines (older llama-bench only reports the mean).
    let rate = |prompt: bool| -> Result<f64> {
        v.as_array()
            .into_iter()
            .flatten()
            .find(|t| (t["n_prompt"].as_u64().unwrap_or(0) > 0) == prompt)
            .and_then(|t| {
                let samples = t["samples_ts"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|x| x.as_f64()).fold(0f64, f64::max));
                samples
                    .filter(|&best| best > 0.0)
                    .or_else(|| t["avg_ts"].as_f64())
            })
            .with_context(|| {
                format!(
                    "llama-bench JSON lacks the {} test",
                    if prompt { "prompt" } else { "generation" }
                )
            })
    };
    let info = v
        .as_array()
        .and_then(|a| a.first())
        .filter(|t| t.get("cpu_info").is_some())
        .map(|t| {
            format!(
                " on {} ({}, build {})",
                t["cpu_info"].as_str().unwrap_or("?"),
                t["backends"].as_str().unwrap_or("?"),
                t["build_commit"].as_str().unwrap_or("?")
            )
        })
        .unwrap_or_default();
    Ok(Row {
        name: format!("llama.cpp (llama-bench){info}"),
        prompt_tok_s: rate(true)?,
        gen_tok_s: rate(false)?,
        peak_rss_mb: peak,
    })
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "2");
    }
    if let Some(engine) = &args.engine {
        return run_engine(args, engine);
    }
    let threads = std::env::var("CANDLE_NUM_THREADS")?;
    let n_prompt = args.prompt_tokens;
    let n_gen = args.gen_tokens;
    let repeats = args.repeats.max(1);
    let rounds = args.rounds.max(1);
    if n_prompt == 0 {
        bail!("--prompt-tokens must be at least 1");
    }
    // The parent loads the model once for its tokenizer and resolved path (NAME or PATH alike);
    // only the children's memory is measured.
    let Model {
        tokenizer, source, ..
    } = crate::load(&args.model)?;
    let path = source;
    let file_mb = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);
    let mut prompt = tokenizer.encode(TEXT)?;
    while prompt.len() < n_prompt {
        prompt.extend_from_within(..);
    }
    prompt.truncate(n_prompt);

    println!(
        "model: {} ({file_mb:.1} MB), {threads} threads, kernel {} (Q4_1, Q5_0, Q8_0), {n_prompt}-token prompt, {n_gen} generated tokens, best of {rounds}×{repeats}",
        path.display(),
        llm_lab::model::q4_1_kernel()
    );
    let load_before = load_average();
    println!("load average before: {load_before}");
    println!(
        "{:<40} {:>13} {:>10} {:>14}",
        "engine", "prompt tok/s", "gen tok/s", "peak RSS MB"
    );
    // Engines take turns, round after round, and each keeps its best: a slow spell of the machine
    // (another process, the host) then hits every engine alike instead of one.
    let mut rows: Vec<Row> = vec![];
    let mut llama_cpp: Option<Row> = None;
    for round in 0..rounds {
        for (i, engine) in ENGINES.iter().enumerate() {
            let row = measure_engine(engine, &path, &prompt, n_gen, repeats)?;
            match rows.get_mut(i) {
                Some(best) => *best = best.clone().best_of(row),
                None => rows.push(row),
            }
        }
        if let Some(bin) = &args.llama_bench {
            let row = measure_llama_cpp(bin, &path, n_prompt, n_gen, repeats, &threads)?;
            llama_cpp = Some(match llama_cpp {
                Some(best) => best.best_of(row),
                None => row,
            });
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    for row in rows.iter().chain(&llama_cpp) {
        print_row(row);
    }
    let load_after = load_average();
    println!("load average after: {load_after}");

    let (reference, glass, traced) = (&rows[0], &rows[1], &rows[2]);
    println!();
    for row in [glass, traced] {
        println!(
            "{} / candle: prompt × {:.2}, generation × {:.2}",
            row.name,
            row.prompt_tok_s / reference.prompt_tok_s,
            row.gen_tok_s / reference.gen_tok_s
        );
    }
    if let Some(l) = &llama_cpp {
        println!(
            "glass-box / llama.cpp: prompt × {:.2}, generation × {:.2}",
            glass.prompt_tok_s / l.prompt_tok_s,
            glass.gen_tok_s / l.gen_tok_s
        );
    }
    println!(
        "tracing cost: prompt {:+.1} %, generation {:+.1} %",
        (glass.prompt_tok_s / traced.prompt_tok_s - 1.0) * 100.0,
        (glass.gen_tok_s / traced.gen_tok_s - 1.0) * 100.0
    );
    for row in [Some(glass), llama_cpp.as_ref()].into_iter().flatten() {
        if let Some(mb) = row.peak_rss_mb {
            println!(
                "{} peak memory: {mb:.0} MB = {:.2} × the model file",
                row.name,
                mb / file_mb
            );
        }
    }

    if let Some(out) = &args.json {
        let row_json = |r: &Row| serde_json::json!({"name": r.name, "prompt_tok_s": r.prompt_tok_s, "gen_tok_s": r.gen_tok_s, "peak_rss_mb": r.peak_rss_mb});
        let mut json = serde_json::json!({
            "model": path.display().to_string(), "file_mb": file_mb, "load_average": [load_before, load_after], "threads": threads, "kernel": llm_lab::model::q4_1_kernel(), "prompt_tokens": n_prompt, "gen_tokens": n_gen,
            "engines": rows.iter().chain(&llama_cpp).map(row_json).collect::<Vec<_>>(),
            "ratios": {
                "prompt": glass.prompt_tok_s / reference.prompt_tok_s, "generation": glass.gen_tok_s / reference.gen_tok_s,
                "traced_prompt": traced.prompt_tok_s / reference.prompt_tok_s, "traced_generation": traced.gen_tok_s / reference.gen_tok_s,
                "memory_over_file": glass.peak_rss_mb.map(|mb| mb / file_mb),
            },
        });
        if let Some(l) = &llama_cpp {
            json["ratios"]["llama_cpp_prompt"] = (glass.prompt_tok_s / l.prompt_tok_s).into();
            json["ratios"]["llama_cpp_generation"] = (glass.gen_tok_s / l.gen_tok_s).into();
        }
        std::fs::write(out, serde_json::to_string_pretty(&json)?)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn print_row(r: &Row) {
    let rss = r
        .peak_rss_mb
        .map_or("-".to_string(), |mb| format!("{mb:.0}"));
    println!(
        "{:<40} {:>13.1} {:>10.1} {:>14}",
        r.name, r.prompt_tok_s, r.gen_tok_s, rss
    );
}

#[cfg(test)]
mod tests {
    use super::peak_rss_mb;

    #[test]
    fn reads_the_high_water_mark() {
        assert_eq!(
            peak_rss_mb("Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n"),
            Some(2.0)
        );
        assert_eq!(peak_rss_mb("Name:\tx\n"), None);
    }
}

//! `llm-lab bench-train`: the course's tiny transformer (`llm_lab::train`) trained for a fixed
//! number of steps, and the same model trained by a peer (JAX on the CPU, `bench_train_jax.py`)
//! from the same initial weights on the same batches with the same AdamW settings, in one run:
//! training tokens/s, their ratio, the model FLOPs utilisation against the machine's peak, and
//! both validation losses after the same steps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use llm_lab::tokenizer::{Tokenizer, END_OF_TEXT};
use llm_lab::train::{Batches, TinyGpt, TinyGptSpec, Trainer};
use llm_lab_shared::args::BenchTrainArgs;

use crate::bench::load_average;

/// The peer's script, written next to the run's data.
const JAX_SCRIPT: &str = include_str!("bench_train_jax.py");
/// nanoGPT's CPU recipe.
const LEARNING_RATE: f64 = 1e-3;
/// Validation batches averaged for the validation loss.
const VALID_BATCHES: usize = 8;

/// One engine's numbers.
#[derive(Debug, Clone)]
struct Row {
    engine: String,
    tokens_per_s: f64,
    first_loss: f64,
    last_loss: f64,
    valid_loss: f64,
    setup_s: f64,
}

/// The text of `path`: a file as it is, or the Markdown cells of the notebooks in a folder.
fn corpus(path: &Path) -> Result<String> {
    if !path.is_dir() {
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the corpus {}", path.display()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ipynb"))
        .collect();
    files.sort();
    let mut text = String::new();
    for f in &files {
        let nb: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f)?)
            .with_context(|| format!("{} is not a notebook", f.display()))?;
        for cell in nb["cells"].as_array().into_iter().flatten() {
            if cell["cell_type"] == "markdown" {
                for line in cell["source"].as_array().into_iter().flatten() {
                    text.push_str(line.as_str().unwrap_or(""));
                }
                text.push_str(END_OF_TEXT);
            }
        }
    }
    if text.is_empty() {
        bail!("no Markdown cell in the notebooks of {}", path.display());
    }
    Ok(text)
}

/// Floating-point operations of one training step: 6 per parameter of every product and
/// token (forward 2, backward 4), plus attention's two `T × T` products.
fn flops_per_step(gpt: &TinyGpt, batch: usize, window: usize) -> f64 {
    let c = gpt.config.clone();
    let (d, l) = (c.d_model as f64, c.n_layers as f64);
    let products = l * (4.0 * d * d + 3.0 * d * c.d_mlp as f64) + c.d_vocab as f64 * d;
    let tokens = (batch * window) as f64;
    let attention = l * 2.0 * 2.0 * window as f64 * d; // per token, forward
    3.0 * tokens * (2.0 * products + attention)
}

/// The machine's peak f32 rate for `threads` cores: 2 FMA units × 8 lanes × 2 operations per
/// cycle (AVX2; AMD's AVX-512 runs on the same two 256-bit units), at the nominal clock.
fn peak_flops(threads: usize) -> Option<(f64, f64)> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz, threads as f64 * mhz * 1e6 * 32.0))
}

pub fn bench_train(args: &BenchTrainArgs) -> Result<()> {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        std::env::set_var(var, args.threads.to_string());
    }
    if args.steps < 2 || args.batch == 0 || args.window < 2 {
        bail!("bench-train needs at least 2 steps, 1 window per batch and windows of 2 tokens");
    }
    let text = corpus(&args.corpus)?;
    let cut = text.len() * 9 / 10;
    let cut = (cut..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    let (train_text, valid_text) = text.split_at(cut);
    let tokenizer = Tokenizer::train_bpe(&[train_text], args.vocab)?;
    let train_ids = tokenizer.encode(train_text)?;
    let valid_ids = tokenizer.encode(valid_text)?;
    let spec = TinyGptSpec {
        n_layers: args.layers,
        n_heads: 4,
        d_model: args.d_model,
        d_mlp: 4 * args.d_model,
        n_ctx: args.window,
        seed: 1,
        ..TinyGptSpec::default()
    };
    let gpt = TinyGpt::new(&spec, &tokenizer)?;
    let mut train = Batches::new(train_ids.clone(), args.batch, args.window, 1)?;
    let mut valid = Batches::new(valid_ids.clone(), args.batch, args.window, 2)?;
    let train_starts: Vec<Vec<usize>> = (0..args.steps).map(|_| train.next_starts()).collect();
    let valid_starts: Vec<Vec<usize>> = (0..VALID_BATCHES).map(|_| valid.next_starts()).collect();

    let dir = tempfile::tempdir()?;
    let init = dir.path().join("init.safetensors");
    gpt.varmap.save(&init)?;
    let c = gpt.config.clone();
    println!(
        "corpus: {} ({} KB; {} training and {} validation tokens, BPE of {} pieces)",
        args.corpus.display(),
        text.len() / 1000,
        train_ids.len(),
        valid_ids.len(),
        tokenizer.vocab_size()
    );
    println!(
        "model: {} layers, {} heads, d_model {}, d_mlp {}, {} parameters; {} steps of {}×{} tokens, AdamW lr {LEARNING_RATE}, {} threads each",
        c.n_layers, c.n_heads, c.d_model, c.d_mlp, gpt.n_params(), args.steps, args.batch, args.window, args.threads
    );
    let flops = flops_per_step(&gpt, args.batch, args.window);
    let load_before = load_average();

    // The course's loop, timed from the second step (the peer's first step compiles).
    let setup = Instant::now();
    let mut trainer = Trainer::new(gpt, LEARNING_RATE)?;
    let mut losses = Vec::with_capacity(args.steps);
    let mut timed = Instant::now();
    for (i, starts) in train_starts.iter().enumerate() {
        let (xs, ys) = train.batch_at(starts)?;
        losses.push(trainer.step(&xs, &ys)? as f64);
        if i == 0 {
            timed = Instant::now();
        }
    }
    let seconds = timed.elapsed().as_secs_f64();
    let mut valid_loss = 0.0;
    for starts in &valid_starts {
        let (xs, ys) = valid.batch_at(starts)?;
        valid_loss += trainer.model.loss(&xs, &ys)?.to_scalar::<f32>()? as f64;
    }
    let steady = (args.steps - 1) * args.batch * args.window;
    let course = Row {
        engine: "llm-lab (candle autograd)".into(),
        tokens_per_s: steady as f64 / seconds,
        first_loss: losses[0],
        last_loss: *losses.last().unwrap_or(&f64::NAN),
        valid_loss: valid_loss / VALID_BATCHES as f64,
        setup_s: (timed - setup).as_secs_f64(),
    };

    let peer = match &args.python {
        None => None,
        Some(python) => {
            let run = serde_json::json!({
                "config": {
                    "n_layers": c.n_layers, "n_heads": c.n_heads, "d_model": c.d_model,
                    "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_theta,
                },
                "init": init, "lr": LEARNING_RATE, "batch": args.batch, "window": args.window,
                "train_tokens": train_ids, "valid_tokens": valid_ids,
                "train_starts": train_starts, "valid_starts": valid_starts,
            });
            let run_file = dir.path().join("run.json");
            std::fs::write(&run_file, run.to_string())?;
            let script = dir.path().join("bench_train_jax.py");
            std::fs::write(&script, JAX_SCRIPT)?;
            Some(run_jax(python, &script, &run_file, args.threads)?)
        }
    };
    let load_after = load_average();

    let (mhz, peak) = match peak_flops(args.threads) {
        Some((mhz, peak)) => (Some(mhz), Some(peak)),
        None => (None, None),
    };
    println!(
        "{:<28} {:>10} {:>7} {:>10} {:>11} {:>11} {:>9}",
        "engine", "tokens/s", "MFU", "1st loss", "last loss", "valid loss", "setup s"
    );
    for row in std::iter::once(&course).chain(&peer) {
        let mfu = peak.map_or("?".to_string(), |p| {
            let step_s = (args.batch * args.window) as f64 / row.tokens_per_s;
            format!("{:.1}%", 100.0 * flops / step_s / p)
        });
        println!(
            "{:<28} {:>10.0} {:>7} {:>10.3} {:>11.3} {:>11.3} {:>9.1}",
            row.engine,
            row.tokens_per_s,
            mfu,
            row.first_loss,
            row.last_loss,
            row.valid_loss,
            row.setup_s
        );
    }
    if let Some(p) = &peer {
        println!(
            "llm-lab / {}: tokens/s × {:.2}; validation loss {:.3} vs {:.3}",
            p.engine,
            course.tokens_per_s / p.tokens_per_s,
            course.valid_loss,
            p.valid_loss
        );
    }
    println!(
        "MFU: model FLOPs ({:.1} MFLOP per step) per second over {} threads × {} MHz × 32 f32 FLOP per cycle; load average {load_before} before, {load_after} after",
        flops / 1e6,
        args.threads,
        mhz.map_or("?".into(), |m| format!("{m:.0}"))
    );
    if let Some(path) = &args.json {
        let row = |r: &Row| {
            serde_json::json!({"engine": r.engine, "tokens_per_s": r.tokens_per_s,
                "first_loss": r.first_loss, "last_loss": r.last_loss,
                "valid_loss": r.valid_loss, "setup_s": r.setup_s})
        };
        let out = serde_json::json!({
            "steps": args.steps, "batch": args.batch, "window": args.window,
            "threads": args.threads, "flops_per_step": flops, "peak_flops": peak,
            "load_average": [load_before, load_after],
            "engines": std::iter::once(&course).chain(&peer).map(row).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The peer's run: its JSON line, or its error output.
fn run_jax(python: &Path, script: &Path, run: &Path, threads: usize) -> Result<Row> {
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(run)
        .env(
            "XLA_FLAGS",
            format!("--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"),
        )
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("JAX_PLATFORMS", "cpu")
        .output()
        .with_context(|| format!("cannot start {}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the JAX peer failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("the JAX peer printed no result: {stdout}"))?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let num = |k: &str| v[k].as_f64().with_context(|| format!("the peer's `{k}`"));
    Ok(Row {
        engine: v["engine"].as_str().unwrap_or("JAX").to_string(),
        tokens_per_s: num("tokens_per_s")?,
        first_loss: num("first_loss")?,
        last_loss: num("last_loss")?,
        valid_loss: num("valid_loss")?,
        setup_s: num("compile_s")?,
    })
}

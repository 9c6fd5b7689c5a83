//! `cargo xtask bench`: tokens per second of the glass-box model (tracing off and on) against
//! candle-transformers' `quantized_llama` on the same file, in the same run.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llm_lab::model::WeightFormat;
use llm_lab::{KvCache, Model, TraceOptions};

use crate::cli::Args;

const TEXT: &str = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg \
combined movable metal type, oil-based ink and a wooden screw press into a system that could produce books \
faster and cheaper than any scribe. Within fifty years presses were running in more than two hundred cities.";

struct Engine {
    name: &'static str,
    /// Runs `prompt`, then `gen` single-token steps; returns (prompt seconds, generation seconds).
    run: Box<dyn FnMut(&[u32], usize) -> Result<(f64, f64)>>,
}

fn argmax(t: &Tensor) -> Result<u32> {
    Ok(t.flatten_all()?.argmax(0)?.to_scalar::<u32>()?)
}

fn glass_box(
    model: std::rc::Rc<Model>,
    traced: bool,
) -> Box<dyn FnMut(&[u32], usize) -> Result<(f64, f64)>> {
    Box::new(move |prompt, gen| {
        let mut cache = KvCache::new();
        let step = |tokens: &[u32], cache: &mut KvCache| -> Result<Tensor> {
            Ok(if traced {
                model
                    .forward_traced(tokens, cache, TraceOptions::default())?
                    .0
            } else {
                model.forward(tokens, cache)?
            })
        };
        let t = Instant::now();
        let mut logits = step(prompt, &mut cache)?;
        let pp = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..gen {
            let next = argmax(&logits)?;
            logits = step(&[next], &mut cache)?;
        }
        Ok((pp, t.elapsed().as_secs_f64()))
    })
}

fn reference(
    path: std::path::PathBuf,
) -> Result<Box<dyn FnMut(&[u32], usize) -> Result<(f64, f64)>>> {
    let mut f = std::fs::File::open(&path)?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut f)?;
    let mut m = ModelWeights::from_gguf(content, &mut f, &Device::Cpu)?;
    Ok(Box::new(move |prompt, gen| {
        m.clear_kv_cache();
        let t = Instant::now();
        let mut logits = m.forward(&Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?, 0)?;
        let pp = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..gen {
            let next = argmax(&logits)?;
            logits = m.forward(
                &Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?,
                prompt.len() + i,
            )?;
        }
        Ok((pp, t.elapsed().as_secs_f64()))
    }))
}

pub fn bench(args: &Args) -> Result<()> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "2");
    }
    let threads = std::env::var("CANDLE_NUM_THREADS")?;
    let n_prompt: usize = args.parsed("prompt-tokens")?.unwrap_or(64);
    let n_gen: usize = args.parsed("gen-tokens")?.unwrap_or(64);
    let repeats: usize = args.parsed("repeats")?.unwrap_or(3);
    let path = llm_lab::models::fetch(args.get("model").unwrap_or(llm_lab::models::DEFAULT_MODEL))?;
    let model = std::rc::Rc::new(Model::load_with(&path, WeightFormat::AsStored)?);
    let mut prompt = model.encode(TEXT)?;
    while prompt.len() < n_prompt {
        prompt.extend_from_within(..);
    }
    prompt.truncate(n_prompt);

    let mut engines = vec![
        Engine {
            name: "quantized_llama (candle-transformers)",
            run: reference(path.clone())?,
        },
        Engine {
            name: "glass-box",
            run: glass_box(model.clone(), false),
        },
        Engine {
            name: "glass-box, traced",
            run: glass_box(model.clone(), true),
        },
        Engine {
            name: "glass-box, Q4_1 repacked to Q8_0",
            run: glass_box(
                std::rc::Rc::new(Model::load_with(&path, WeightFormat::Repacked)?),
                false,
            ),
        },
    ];
    println!("model: {} ({}), {threads} threads, {n_prompt}-token prompt, {n_gen} generated tokens, best of {repeats}", model.config.name, path.display());
    println!(
        "{:<40} {:>14} {:>14}",
        "engine", "prompt tok/s", "gen tok/s"
    );
    let mut rows = vec![];
    for e in &mut engines {
        (e.run)(&prompt[..8], 2)?; // warm-up
        let (mut pp, mut tg) = (f64::MAX, f64::MAX);
        for _ in 0..repeats {
            let (a, b) = (e.run)(&prompt, n_gen)?;
            pp = pp.min(a);
            tg = tg.min(b);
        }
        let (pp, tg) = (n_prompt as f64 / pp, n_gen as f64 / tg);
        println!("{:<40} {:>14.1} {:>14.1}", e.name, pp, tg);
        rows.push((e.name, pp, tg));
    }
    let (_, ref_pp, ref_tg) = rows[0];
    println!();
    for (name, pp, tg) in &rows[1..] {
        println!(
            "{name} / quantized_llama: prompt × {:.2}, generation × {:.2}",
            pp / ref_pp,
            tg / ref_tg
        );
    }
    let (_, gb_pp, gb_tg) = rows[1];
    let (_, tr_pp, tr_tg) = rows[2];
    println!(
        "tracing cost: prompt {:+.1} %, generation {:+.1} %",
        (gb_pp / tr_pp - 1.0) * 100.0,
        (gb_tg / tr_tg - 1.0) * 100.0
    );
    if let Some(out) = args.get("json") {
        let json = serde_json::json!({
            "model": model.config.name, "threads": threads, "prompt_tokens": n_prompt, "gen_tokens": n_gen,
            "engines": rows.iter().map(|(n, pp, tg)| serde_json::json!({"name": n, "prompt_tok_s": pp, "gen_tok_s": tg})).collect::<Vec<_>>(),
            "ratios": {"prompt": gb_pp / ref_pp, "generation": gb_tg / ref_tg, "traced_prompt": tr_pp / ref_pp, "traced_generation": tr_tg / ref_tg,
                       "repacked_prompt": rows[3].1 / ref_pp, "repacked_generation": rows[3].2 / ref_tg},
        });
        std::fs::write(out, serde_json::to_string_pretty(&json)?)?;
        println!("wrote {out}");
    }
    Ok(())
}

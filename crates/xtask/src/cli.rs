//! Argument parsing and the model-facing commands.

use anyhow::{anyhow, bail, Context, Result};
use llm_lab::models;
use llm_lab::Model;

const HELP: &str = "\
usage: cargo xtask <command> [options]

commands:
  lab [--port N] [--no-browser]      set up if needed, then open JupyterLab on the course
  setup                              install Jupyter (.venv), the evcxr kernel, the models; warm the cache
  check [NOTEBOOK…]                  run your exercise notebooks and list each exercise ✅/❌
  notebooks [NAME…]                  re-execute lessons and solutions (all, or those matching NAME),
                                     writing their outputs back
  exercises [--check]                generate exercises/ from solutions/ (--check: fail on drift)
  fetch [NAME…]                      fetch models into the cache (default: all known)
  inspect [--model NAME|PATH]        print the model's module tree and its numbers
  tokenize [--model NAME|PATH] (--text T | --file F)
                                     print tokens, then their ids as a JSON array
  generate --prompt P [--chat] [--max-new-tokens N] [--temperature T] [--top-k K]
           [--top-p P] [--min-p M] [--repetition-penalty R] [--seed S] [--model NAME|PATH]
                                     stream a continuation (or, with --chat, an answer)
  bench [--json FILE] [--prompt-tokens N] [--gen-tokens N] [--repeats N] [--rounds N]
        [--llama-bench PATH]
                                     tokens/s and peak memory: glass-box (tracing off/on) vs
                                     candle's quantized_llama (and llama.cpp's llama-bench)
  test [--no-notebooks]              the whole test suite (what CI runs): cargo tests, then every
                                     notebook executed on the evcxr kernel
";

/// Options shared by commands: `--key value` pairs and bare words.
pub struct Args {
    pub words: Vec<String>,
    pairs: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Args {
    pub fn parse(raw: &[String], flag_names: &[&str]) -> Result<Self> {
        let (mut words, mut pairs, mut flags) = (vec![], vec![], vec![]);
        let mut it = raw.iter();
        while let Some(a) = it.next() {
            if let Some(key) = a.strip_prefix("--") {
                if let Some((k, v)) = key.split_once('=') {
                    pairs.push((k.to_string(), v.to_string()));
                } else if flag_names.contains(&key) {
                    flags.push(key.to_string());
                } else {
                    let v = it.next().ok_or_else(|| anyhow!("--{key} needs a value"))?;
                    pairs.push((key.to_string(), v.clone()));
                }
            } else {
                words.push(a.clone());
            }
        }
        Ok(Args {
            words,
            pairs,
            flags,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| v.parse::<T>().map_err(|e| anyhow!("--{key} {v}: {e}")))
            .transpose()
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    pub fn model(&self) -> Result<Model> {
        let name = self.get("model").unwrap_or(models::DEFAULT_MODEL);
        Ok(Model::load_named(name)?)
    }
}

pub fn run(raw: &[String]) -> Result<()> {
    let Some((cmd, rest)) = raw.split_first() else {
        print!("{HELP}");
        return Ok(());
    };
    match cmd.as_str() {
        "fetch" => fetch(&Args::parse(rest, &[])?),
        "inspect" => inspect(&Args::parse(rest, &[])?),
        "tokenize" => tokenize(&Args::parse(rest, &[])?),
        "generate" => generate(&Args::parse(rest, &["chat"])?),
        "setup" => crate::lab::setup(&Args::parse(rest, &[])?),
        "lab" => crate::lab::lab(&Args::parse(rest, &["no-browser"])?),
        "notebooks" => crate::notebooks::notebooks(&Args::parse(rest, &[])?),
        "exercises" => crate::notebooks::exercises(&Args::parse(rest, &["check"])?),
        "check" => crate::notebooks::check(&Args::parse(rest, &[])?),
        "bench" => crate::bench::bench(&Args::parse(rest, &[])?),
        "test" => crate::test::test(&Args::parse(rest, &["no-notebooks"])?),
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

fn fetch(args: &Args) -> Result<()> {
    let names: Vec<&str> = if args.words.is_empty() {
        models::registry().iter().map(|m| m.name).collect()
    } else {
        args.words.iter().map(String::as_str).collect()
    };
    for name in names {
        let path = models::fetch(name)?;
        println!("{name}: {}", path.display());
        println!(
            "  {}",
            models::license_notice(models::spec(name)?, &models::cache_dir())
        );
    }
    Ok(())
}

fn inspect(args: &Args) -> Result<()> {
    let model = args.model()?;
    println!("{model}");
    println!("source: {}", model.source.display());
    Ok(())
}

fn tokenize(args: &Args) -> Result<()> {
    let text = match (args.get("text"), args.get("file")) {
        (Some(t), None) => t.to_string(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?
        }
        _ => bail!("give exactly one of --text T or --file F"),
    };
    let model = args.model()?;
    let ids = model.encode(&text)?;
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| format!("{:?}", model.tokenizer.token_text(i)))
        .collect();
    println!("{} tokens: {}", ids.len(), pieces.join(" "));
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

fn generate(args: &Args) -> Result<()> {
    use llm_lab::chat::Message;
    use llm_lab::generate::{CachedModel, GenerateOptions, Generation};
    use llm_lab::sampling::SamplerConfig;
    let prompt = args
        .get("prompt")
        .ok_or_else(|| anyhow!("give --prompt P"))?;
    let d = SamplerConfig::default();
    let sampler = SamplerConfig {
        temperature: args.parsed("temperature")?.unwrap_or(d.temperature),
        top_k: args.parsed("top-k")?,
        top_p: args.parsed("top-p")?,
        min_p: args.parsed("min-p")?,
        repetition_penalty: args
            .parsed("repetition-penalty")?
            .unwrap_or(d.repetition_penalty),
        seed: args.parsed("seed")?.unwrap_or(d.seed),
        ..d
    };
    sampler.validate()?;
    let options = GenerateOptions {
        max_new_tokens: args.parsed("max-new-tokens")?.unwrap_or(64),
        sampler,
        stream: true,
        ..Default::default()
    };
    let model = args.model()?;
    let out = if args.flag("chat") {
        let text = model.render_chat(&[Message::user(prompt)])?;
        let tokens = model.tokenizer.encode(&text)?;
        Generation::new(CachedModel::new(&model), &tokens, options)?.finish()?
    } else {
        print!("{prompt}");
        model.generate(prompt, options)?
    };
    eprintln!("[{} tokens, stopped by {:?}]", out.steps.len(), out.stop);
    Ok(())
}

//! `llm-lab`: the course's model commands, which `cargo xtask fetch|inspect|tokenize|generate|bench`
//! run (see `llm_lab_shared::args` for why xtask parses their arguments first).

mod bench;
mod bench_train;
mod corpus;

use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use llm_lab::{models, Model};

use llm_lab_shared::args::{GenerateArgs, ModelArg, ModelCommand, TokenizeArgs};

/// `llm-lab`: the model commands (`cargo xtask` runs them).
#[derive(Parser, Debug)]
#[command(
    name = "llm-lab",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: ModelCommand,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Fetch { names } => fetch(&names),
        ModelCommand::Inspect(model) => inspect(&model),
        ModelCommand::Tokenize(args) => tokenize(&args),
        ModelCommand::Generate(args) => generate(&args),
        ModelCommand::Bench(args) => bench::bench(&args),
        ModelCommand::BenchTrain(args) => bench_train::bench_train(&args),
        ModelCommand::Corpus(args) => corpus::corpus(&args),
    }
}

fn load(arg: &ModelArg) -> Result<Model> {
    Ok(Model::load_named(&arg.model)?)
}

fn fetch(names: &[String]) -> Result<()> {
    let names: Vec<&str> = if names.is_empty() {
        models::registry().iter().map(|m| m.name).collect()
    } else {
        names.iter().map(String::as_str).collect()
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

fn inspect(model: &ModelArg) -> Result<()> {
    let model = load(model)?;
    println!("{model}");
    println!("source: {}", model.source.display());
    Ok(())
}

fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => return Err(anyhow!("give exactly one of --text T or --file F")),
    };
    let model = load(&args.model)?;
    let ids = model.encode(&text)?;
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| format!("{:?}", model.tokenizer.token_text(i)))
        .collect();
    println!("{} tokens: {}", ids.len(), pieces.join(" "));
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

fn generate(args: &GenerateArgs) -> Result<()> {
    use llm_lab::chat::Message;
    use llm_lab::generate::{CachedModel, GenerateOptions, Generation};
    use llm_lab::sampling::SamplerConfig;
    let d = SamplerConfig::default();
    let sampler = SamplerConfig {
        temperature: args.temperature.unwrap_or(d.temperature),
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty.unwrap_or(d.repetition_penalty),
        seed: args.seed.unwrap_or(d.seed),
        ..d
    };
    sampler.validate()?;
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampler,
        stream: true,
        ..Default::default()
    };
    let model = load(&args.model)?;
    let out = if args.chat {
        let text = model.render_chat(&[Message::user(&args.prompt)])?;
        let tokens = model.tokenizer.encode(&text)?;
        Generation::new(CachedModel::new(&model), &tokens, options)?.finish()?
    } else {
        print!("{}", args.prompt);
        model.generate(&args.prompt, options)?
    };
    eprintln!("[{} tokens, stopped by {:?}]", out.steps.len(), out.stop);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_default_model_is_the_librarys() {
        assert_eq!(llm_lab_shared::args::DEFAULT_MODEL, models::DEFAULT_MODEL);
        assert!(models::spec(llm_lab_shared::args::DEFAULT_MODEL).is_ok());
    }

    #[test]
    fn negative_values_reach_the_validation() {
        let cli = Cli::try_parse_from([
            "llm-lab",
            "generate",
            "--prompt",
            "x",
            "--temperature",
            "-1",
        ])
        .unwrap();
        let ModelCommand::Generate(g) = cli.command else {
            panic!()
        };
        assert_eq!(g.temperature, Some(-1.0));
    }
}

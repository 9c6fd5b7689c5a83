//! The command line: every command and its options, parsed by clap so that a misspelt or unknown
//! option stops the run (exit code 2) with the list of the options that command knows.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use llm_lab::models;
use llm_lab::Model;

/// `cargo xtask`: the project's commands.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Set up if needed, then open JupyterLab on the course
    Lab(LabArgs),
    /// Install Jupyter (.venv), the evcxr kernel, the models; warm evcxr's cache
    Setup,
    /// Run your exercise notebooks and list each exercise ✅/❌
    Check(CheckArgs),
    /// Re-execute lessons and solutions, writing their outputs back
    Notebooks {
        /// Only the notebooks whose file name contains one of these
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Generate exercises/ from solutions/
    Exercises {
        /// Fail when exercises/ differs from what solutions/ generate, write nothing
        #[arg(long)]
        check: bool,
    },
    /// Fetch models into the cache (default: all known)
    Fetch {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Print the model's module tree and its numbers
    Inspect(ModelArg),
    /// Print tokens, then their ids as a JSON array on the last line
    Tokenize(TokenizeArgs),
    /// Stream a continuation (or, with --chat, an answer)
    Generate(GenerateArgs),
    /// Tokens/s and peak memory: glass-box (tracing off/on) vs candle's quantized_llama (and llama.cpp)
    Bench(BenchArgs),
    /// Time the kernel: a new kernel and a restart to the first logits, a trivial cell
    BenchNotebook {
        /// How many times the trivial cell runs
        #[arg(long, value_name = "N", default_value_t = 3,
              value_parser = clap::value_parser!(u32).range(1..=100))]
        trivial_runs: u32,
    },
    /// Grade a class: run every student's exercise notebooks, write a gradebook (CSV, HTML)
    Grade(GradeArgs),
    /// The whole test suite (what CI runs): fmt, clippy, cargo tests, then every notebook on the kernel
    Test(TestArgs),
    /// JupyterLab in headless Chromium: the explorer live without a re-run, a lesson run in the browser
    Browser(BrowserArgs),
}

/// `--model NAME|PATH`, shared by the commands that load a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArg {
    /// A registered model name or the path of a GGUF file / Hugging Face folder
    #[arg(long, value_name = "NAME|PATH", default_value = models::DEFAULT_MODEL)]
    pub model: String,
}

impl ModelArg {
    pub fn load(&self) -> Result<Model> {
        Ok(Model::load_named(&self.model)?)
    }
}

#[derive(Args, Debug, Clone)]
pub struct LabArgs {
    /// The port JupyterLab listens on
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Print the URL instead of opening a browser
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Exercise notebooks to check (default: every notebook in exercises/)
    #[arg(value_name = "NOTEBOOK")]
    pub notebooks: Vec<PathBuf>,
    /// Time limit of each cell, in seconds: a cell that runs longer is stopped and reported
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

#[derive(Args, Debug, Clone)]
pub struct GradeArgs {
    /// One sub-folder of .ipynb files, or one .ipynb file, per student
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Time limit of each cell, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

#[derive(Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["text", "file"]))]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text to tokenize
    #[arg(long, value_name = "T")]
    pub text: Option<String>,
    /// A file whose text to tokenize
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The prompt to continue (or, with --chat, the user's message)
    #[arg(long, value_name = "P")]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template
    #[arg(long)]
    pub chat: bool,
    /// At most this many new tokens
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy, 1 = the model's own distribution
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to probability P, in (0, 1]
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep tokens at least M times as likely as the best one, in [0, 1]
    #[arg(long, value_name = "M")]
    pub min_p: Option<f32>,
    /// > 1 discourages repeating recent tokens
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f32>,
    /// Seed of the random generator
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Also write the results as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Prompt length in tokens
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Generated tokens per run
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub gen_tokens: usize,
    /// Runs per engine and round (each engine keeps its best)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeats: usize,
    /// Rounds in which the engines take turns
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub rounds: usize,
    /// llama.cpp's llama-bench binary, measured on the same file
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    /// Internal: the engine a child process measures
    #[arg(long, hide = true)]
    pub engine: Option<String>,
    /// Internal: the model file a child process loads
    #[arg(long, hide = true)]
    pub model_path: Option<PathBuf>,
    /// Internal: the prompt's token ids as JSON
    #[arg(long, hide = true)]
    pub tokens: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct BrowserArgs {
    /// Only check the committed explorer lesson; do not run a lesson in the browser
    #[arg(long)]
    pub explorer_only: bool,
    /// Time limit of the lesson run in the browser, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 1200,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub run_timeout: u64,
}

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// Stop after the cargo tests and the exercises' drift check
    #[arg(long)]
    pub no_notebooks: bool,
}

/// Parses the process's arguments and runs the command; usage errors exit with code 2.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<crate::process::Interrupted>() => {
            eprintln!("{e}");
            // The shell's convention for "ended by SIGINT".
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message, plus the options the command knows when the error is about an option.
fn usage_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => return ExitCode::SUCCESS,
        ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand => {
            let name = std::env::args().nth(1).unwrap_or_default();
            match Cli::command().find_subcommand(&name) {
                Some(sub) => eprintln!("\n{}", options_of(sub)),
                None => eprintln!("\n{}", commands()),
            }
        }
        _ => {}
    }
    ExitCode::from(2)
}

/// The visible options of one command, one per line, with their help.
pub fn options_of(cmd: &clap::Command) -> String {
    let mut lines = vec![format!("options of `cargo xtask {}`:", cmd.get_name())];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let Some(long) = arg.get_long() else { continue };
        let value = arg
            .get_value_names()
            .filter(|_| arg.get_action().takes_values())
            .map(|v| format!(" <{}>", v.join(" ")))
            .unwrap_or_default();
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        lines.push(format!("  {:<28} {help}", format!("--{long}{value}")));
    }
    if lines.len() == 1 {
        lines.push("  (none)".into());
    }
    lines.join("\n")
}

fn commands() -> String {
    let cli = Cli::command();
    let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    format!("commands: {}", names.join(", "))
}

pub fn run(command: Option<Command>) -> Result<()> {
    let Some(command) = command else {
        Cli::command().print_help()?;
        return Ok(());
    };
    match command {
        Command::Fetch { names } => fetch(&names),
        Command::Inspect(model) => inspect(&model),
        Command::Tokenize(args) => tokenize(&args),
        Command::Generate(args) => generate(&args),
        Command::Setup => crate::lab::setup(),
        Command::Lab(args) => crate::lab::lab(&args),
        Command::Notebooks { names } => crate::notebooks::notebooks(&names),
        Command::Exercises { check } => crate::notebooks::exercises(check),
        Command::Check(args) => crate::check::check(&args),
        Command::Bench(args) => crate::bench::bench(&args),
        Command::Grade(args) => crate::grade::grade(&args),
        Command::BenchNotebook { trivial_runs } => {
            crate::bench_notebook::bench_notebook(trivial_runs)
        }
        Command::Test(args) => crate::test::test(&args),
        Command::Browser(args) => crate::browser::browser(&args),
    }
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
    let model = model.load()?;
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
    let model = args.model.load()?;
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
    let model = args.model.load()?;
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

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn misspelt_options_are_refused_with_the_known_ones() {
        let e = Cli::try_parse_from(["xtask", "generate", "--prompt", "x", "--temprature", "5"])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        let cli = Cli::command();
        let list = options_of(cli.find_subcommand("generate").unwrap());
        for known in [
            "--temperature <T>",
            "--top-k <K>",
            "--model <NAME|PATH>",
            "--chat",
        ] {
            assert!(list.contains(known), "{known} missing in\n{list}");
        }
        assert!(!list.contains("--engine"), "internal options stay hidden");
    }

    #[test]
    fn model_is_accepted_by_every_command_that_loads_one() {
        for cmd in [
            vec!["inspect"],
            vec!["tokenize", "--text", "x"],
            vec!["generate", "--prompt", "x"],
            vec!["bench"],
        ] {
            let mut argv = vec!["xtask"];
            argv.extend(&cmd);
            argv.extend(["--model", "/some/file.gguf"]);
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            let model = match cli.command.unwrap() {
                Command::Inspect(m) => m.model,
                Command::Tokenize(a) => a.model.model,
                Command::Generate(a) => a.model.model,
                Command::Bench(a) => a.model.model,
                other => panic!("{other:?}"),
            };
            assert_eq!(model, "/some/file.gguf");
        }
    }

    #[test]
    fn negative_values_reach_the_validation() {
        let cli =
            Cli::try_parse_from(["xtask", "generate", "--prompt", "x", "--temperature", "-1"])
                .unwrap();
        let Some(Command::Generate(g)) = cli.command else {
            panic!()
        };
        assert_eq!(g.temperature, Some(-1.0));
    }
}

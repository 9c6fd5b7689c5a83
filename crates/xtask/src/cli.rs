//! The command line: every command and its options, parsed by clap so that a misspelt or unknown
//! option stops the run (exit code 2) with the list of the options that command knows.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

pub use llm_lab_shared::args::ModelCommand;

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
    #[command(flatten)]
    Model(ModelCommand),
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
    /// `.ci/run` as a new machine meets it (clean clone, empty home and CARGO_HOME), each step timed
    CiFresh(CiFreshArgs),
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

#[derive(Args, Debug, Clone)]
pub struct CiFreshArgs {
    /// An empty or new folder for the clone, its home folder and the log (default: a new one in /tmp)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The repository to clone (default: this one; its committed HEAD, not the work tree)
    #[arg(long, value_name = "REPO", hide = true)]
    pub source: Option<PathBuf>,
    /// Leave the test users of earlier runs in place (they are removed by default)
    #[arg(long, hide = true)]
    pub keep_test_users: bool,
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
        // The training benchmark's peer is installed here, so the model command finds it.
        Command::Model(ModelCommand::BenchTrain(a)) if a.python.is_none() => {
            let python = crate::peers::jax_python()?;
            forward_to_model_commands(&["--python".into(), python.into_os_string()])
        }
        Command::Model(_) => forward_to_model_commands(&[]),
        Command::Setup => crate::lab::setup(),
        Command::Lab(args) => crate::lab::lab(&args),
        Command::Notebooks { names } => crate::notebooks::notebooks(&names),
        Command::Exercises { check } => crate::notebooks::exercises(check),
        Command::Check(args) => crate::check::check(&args),
        Command::Grade(args) => crate::grade::grade(&args),
        Command::BenchNotebook { trivial_runs } => {
            crate::bench_notebook::bench_notebook(trivial_runs)
        }
        Command::Test(args) => crate::test::test(&args),
        Command::Browser(args) => crate::browser::browser(&args),
        Command::CiFresh(args) => crate::ci_fresh::ci_fresh(&args),
    }
}

/// Runs a model command (already parsed here, so its options are known good) in the
/// `llm-lab` binary, which cargo builds on first use (minutes on a new machine: cargo's lines show
/// it) — xtask itself does not link the model.
fn forward_to_model_commands(extra: &[std::ffi::OsString]) -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .context("the repository's folder")?;
    let status = std::process::Command::new(env!("CARGO"))
        .args(["run", "--package", "llm-lab-cli", "--bin", "llm-lab", "--"])
        .args(std::env::args_os().skip(1))
        .args(extra)
        .current_dir(root)
        .status()
        .context("cannot start cargo to run the model command")?;
    // The command said what went wrong, if anything: only its exit code is passed on (a
    // signal as the shell reports it, 128 + its number).
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    )
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
                Command::Model(ModelCommand::Inspect(m)) => m.model,
                Command::Model(ModelCommand::Tokenize(a)) => a.model.model,
                Command::Model(ModelCommand::Generate(a)) => a.model.model,
                Command::Model(ModelCommand::Bench(a)) => a.model.model,
                other => panic!("{other:?}"),
            };
            assert_eq!(model, "/some/file.gguf");
        }
    }

    #[test]
    fn every_model_command_is_listed() {
        let cli = Cli::command();
        for name in [
            "fetch",
            "inspect",
            "tokenize",
            "generate",
            "bench",
            "bench-train",
        ] {
            assert!(cli.find_subcommand(name).is_some(), "{name}");
        }
    }
}

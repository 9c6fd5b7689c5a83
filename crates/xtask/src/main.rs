//! `cargo xtask …`: the project's commands, in Rust so they run wherever cargo does.

mod bench_notebook;
mod browser;
mod check;
mod ci_fresh;
mod cli;
mod grade;
// Two std-only files of the course crate, compiled in rather than linking the crate (and candle):
// the check reports' line format and HTML escaping.
#[path = "../../llm-lab/src/check/protocol.rs"]
mod check_protocol;
#[path = "../../llm-lab/src/display/html.rs"]
mod html;
mod lab;
// The model commands' arguments, shared with the `llm-lab` binary that runs them.
#[path = "../../llm-lab-cli/src/args.rs"]
mod model_args;
mod notebooks;
mod process;
mod test;
mod test_users;

fn main() -> std::process::ExitCode {
    cli::main()
}

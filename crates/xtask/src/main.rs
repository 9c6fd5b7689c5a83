//! `cargo xtask …`: the project's commands, in Rust so they run wherever cargo does.

mod bench;
mod bench_notebook;
mod browser;
mod check;
mod cli;
mod grade;
mod lab;
mod notebooks;
mod process;
mod test;

fn main() -> std::process::ExitCode {
    cli::main()
}

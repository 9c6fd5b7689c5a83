//! `cargo xtask …`: the project's commands, in Rust so they run wherever cargo does.

mod bench_notebook;
mod browser;
mod check;
mod ci_fresh;
mod cli;
mod grade;
mod lab;
mod notebooks;
mod peers;
mod process;
mod test;
mod test_users;

fn main() -> std::process::ExitCode {
    cli::main()
}

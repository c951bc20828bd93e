//! The `snap` command line. All printing, exit codes and terminal handling live in
//! `cli`; the library only returns values.

mod cli;

fn main() {
    std::process::exit(cli::run());
}

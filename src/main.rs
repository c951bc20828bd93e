//! The `snap` command line. All printing, exit codes and terminal handling live in
//! `cli`; the library only returns values.

/// `eprintln!` that drops what a closed stderr cannot take (`snap check 2>&1 | head`)
/// instead of panicking halfway through a backup; it shadows the standard one here.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;

fn main() {
    std::process::exit(cli::run());
}

//! `rquant`: the command-line front end.

use std::process::ExitCode;

mod demo;

const USAGE: &str = "usage: rquant <command>\n\
\n\
commands:\n  \
demo      show the engines this CPU supports and a quantize → linear → dequantize round trip\n  \
engines   list the engines this CPU supports\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(&args[1..]),
        Some("engines") => demo::engines(),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rquant: error: {e}");
            ExitCode::FAILURE
        }
    }
}

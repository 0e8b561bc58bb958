//! `rquant`: the command-line front end.

use std::process::ExitCode;

mod bits;
mod demo;
mod embed;
mod files;
mod qat;

const USAGE: &str = "usage: rquant <command>\n\
\n\
commands:\n  \
demo      the pretrained MNIST CNN: fp32, dynamic, static PTQ, QAT on every engine [--mnist-dir DIR] [--json PATH]\n  \
embed     --model-dir DIR [--int8|--fp32] [--per-channel] [FILE]: BERT sentence embeddings (--help)\n  \
qat       --dataset fashion-mnist --data DIR: train from scratch, then PTQ, then QAT [--epochs N]\n  \
engines   list the engines this CPU supports\n  \
bits      VALUE [--scale S --zero-point Z --dtype qint8|quint8]: IEEE fields and the int8 code of VALUE\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(&args[1..]),
        Some("engines") => demo::engines(),
        Some("qat") => qat::run(&args[1..]),
        Some("embed") => embed::run(&args[1..]),
        Some("bits") => bits::run(&args[1..]),
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
            // One line, whatever the underlying library put in its message.
            let msg = e.to_string();
            let msg: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("rquant: error: {}", msg.join("; "));
            ExitCode::FAILURE
        }
    }
}

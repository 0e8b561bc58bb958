//! `rquant`: the command-line front end.

use std::process::ExitCode;

/// `println!` that never panics: stdout closed early (`rquant demo | head -1`)
/// ends the program quietly, as a SIGPIPE would; any other write error is a
/// one-line error. (`println!` panics on both.)
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*), true)
    };
}
/// `print!` with the same behaviour as [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*), false)
    };
}

/// Write to stdout for [`say!`].
pub(crate) fn stdout_line(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("rquant: error: standard output: {e}");
            std::process::exit(1);
        }
    }
}

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
            say_raw!("{USAGE}");
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

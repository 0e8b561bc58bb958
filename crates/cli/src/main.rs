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
mod classify;
mod demo;
mod embed;
mod files;
mod qat;
mod quantize;

use rquant_cli::imagenet;

/// PyTorch's int8 quantization stack (eager mode), bit-exact with PyTorch
/// 2.15, in Rust: demos and tools.
///
/// Exit codes: 0 success; 1 an error in the input or output files or while
/// running; 2 a command-line usage error (unknown option, missing or malformed
/// value: one `rquant: error:` line, like every error) or no command.
#[derive(clap::Parser, Debug)]
#[command(name = "rquant", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// The pretrained MNIST CNN: fp32, dynamic, static PTQ, QAT on every engine
    Demo(demo::Args),
    /// BERT sentence embeddings, fp32 or dynamic int8
    #[command(long_about = embed::LONG_ABOUT)]
    Embed(embed::Args),
    /// Train the MNIST CNN on Fashion-MNIST from scratch, then static PTQ, then QAT
    Qat(qat::Args),
    /// Top-5 ImageNet classes of images with a torchvision model, fp32 or int8
    #[command(long_about = classify::LONG_ABOUT)]
    Classify(classify::Args),
    /// Static PTQ of a torchvision model calibrated on real images
    #[command(long_about = quantize::LONG_ABOUT)]
    Quantize(quantize::Args),
    /// List the engines this CPU supports
    Engines,
    /// IEEE fields of VALUE in fp64, fp32, fp16 and bf16, and its int8 code
    Bits(bits::Args),
}

/// A positive integer option value (threads, epochs, image counts).
pub(crate) fn positive(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "expected a positive integer".to_string())
}

/// One line from clap's multi-line error text: paragraphs joined by "; ",
/// indented continuation lines joined to their paragraph by a space, the
/// usage block and clap's "try '--help'" replaced by `(see '{help}')`.
fn one_line(text: &str, help: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut in_usage = false;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            in_usage = false;
            continue;
        }
        in_usage |= t.starts_with("Usage:");
        if in_usage || t.starts_with("For more information") {
            continue;
        }
        let t = t.strip_prefix("error: ").unwrap_or(t);
        match parts.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) && !t.starts_with("tip:") => {
                last.push(' ');
                last.push_str(t);
            }
            _ => parts.push(t.to_string()),
        }
    }
    format!("{} (see '{help}')", parts.join("; "))
}

/// clap's outcome when it does not parse: help and version go to stdout
/// (exit 0); no command at all prints the help to stderr (exit 2); every
/// other usage error is one `rquant: error:` line (exit 2).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            say_raw!("{e}");
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{e}");
            ExitCode::from(2)
        }
        _ => {
            // The subcommand is the first argument that is not an option
            // (rquant's own options are only -h and -V).
            use clap::CommandFactory;
            let help = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
                Some(sub) if Cli::command().find_subcommand(&sub).is_some() => {
                    format!("rquant {sub} --help")
                }
                _ => "rquant --help".to_string(),
            };
            eprintln!("rquant: error: {}", one_line(&e.to_string(), &help));
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    use clap::Parser;
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Engines => demo::engines(),
        Command::Qat(a) => qat::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Bits(a) => bits::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Quantize(a) => quantize::run(a),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_become_one_line() {
        let text = "error: unexpected argument '--bogus' found\n\n  \
                    tip: to pass '--bogus' as a value, use '-- --bogus'\n\n\
                    Usage: rquant demo [OPTIONS]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text, "rquant demo --help"),
            "unexpected argument '--bogus' found; tip: to pass '--bogus' as a value, \
             use '-- --bogus' (see 'rquant demo --help')"
        );
        let text = "error: the following required arguments were not provided:\n  \
                    --model-dir <DIR>\n\nUsage: rquant embed --model-dir <DIR> [FILE]\n";
        assert_eq!(
            one_line(text, "rquant embed --help"),
            "the following required arguments were not provided: --model-dir <DIR> \
             (see 'rquant embed --help')"
        );
    }
}

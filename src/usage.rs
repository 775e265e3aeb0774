//! Command-line mistakes in evloop's own style: one line that names the
//! problem, one line that says where help is, exit status 2. `--help` and
//! `--version` print as clap makes them, with status 0.

use std::error::Error as _;
use std::process::ExitCode;

use clap::CommandFactory as _;
use clap::error::{ContextKind, ErrorKind};

use crate::Cli;

/// Reports a failed parse of `args`: prints help or version, or the
/// mistake and a hint.
pub fn refuse(error: &clap::Error, args: &[String]) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Standard output may be closed: nothing more to say then.
            let _ = error.print();
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
        }
        _ => {
            let (problem, hint) = explain(error, args);
            say!("evloop: {problem}");
            say!("{hint}");
            ExitCode::from(2)
        }
    }
}

/// The two lines that report a mistake in `args`.
fn explain(error: &clap::Error, args: &[String]) -> (String, String) {
    let context = |kind| error.get(kind).map(ToString::to_string);
    let problem = match (
        error.kind(),
        context(ContextKind::InvalidArg),
        context(ContextKind::InvalidValue),
    ) {
        (ErrorKind::ValueValidation, Some(arg), Some(value)) => {
            let reason = error
                .source()
                .map_or_else(|| "invalid value".to_owned(), ToString::to_string);
            format!("{} '{value}': {reason}", flag(&arg))
        }
        (ErrorKind::UnknownArgument, Some(arg), _) => format!("unexpected argument '{arg}'"),
        (ErrorKind::MissingRequiredArgument, Some(args), _) => format!("missing {args}"),
        _ => {
            // clap's own first line, without its "error: ".
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
    };
    let mut hint = String::from("(");
    if let Some(similar) = context(ContextKind::SuggestedArg) {
        hint.push_str(&format!("did you mean '{similar}'? "));
    }
    // clap's tip to pass an unknown flag "as a value, use '-- -1'" misleads
    // more than it helps: no evloop argument takes such a value.
    if let Some(tips) = context(ContextKind::Suggested).filter(|t| !t.starts_with("to pass")) {
        hint.push_str(&format!("tip: {tips}; "));
    }
    hint.push_str(&format!("see '{} --help')", command(args)));
    (problem, hint)
}

/// `--idle-timeout` of clap's `--idle-timeout <DURATION>`.
fn flag(arg: &str) -> &str {
    arg.split(' ').next().unwrap_or(arg)
}

/// The (sub)command that `args` ran, e.g. `evloop serve`: the program's
/// name and every argument that names a subcommand of the one before.
fn command(args: &[String]) -> String {
    let mut current = Cli::command();
    let mut path = vec![current.get_name().to_owned()];
    for arg in args.iter().skip(1) {
        if let Some(sub) = current.find_subcommand(arg) {
            path.push(sub.get_name().to_owned());
            current = sub.clone();
        }
    }
    path.join(" ")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn explain_args(args: &[&str]) -> (String, String) {
        let error = Cli::try_parse_from(args).expect_err("a mistake");
        let args: Vec<String> = args.iter().map(ToString::to_string).collect();
        explain(&error, &args)
    }

    #[test]
    fn an_unknown_flag_is_one_line_and_a_hint() {
        let (problem, hint) = explain_args(&["evloop", "serve", "--frobnicate"]);
        assert_eq!(problem, "unexpected argument '--frobnicate'");
        assert_eq!(hint, "(see 'evloop serve --help')");
    }

    #[test]
    fn a_misspelt_flag_gets_a_suggestion() {
        let (problem, hint) = explain_args(&["evloop", "serve", "--lisen", "x"]);
        assert_eq!(problem, "unexpected argument '--lisen'");
        assert_eq!(hint, "(did you mean '--listen'? see 'evloop serve --help')");
    }

    #[test]
    fn a_missing_value_and_an_extra_argument_name_the_problem() {
        let (problem, hint) = explain_args(&["evloop", "serve", "--listen"]);
        assert!(problem.contains("'--listen <ADDR>'"), "{problem}");
        assert!(!problem.contains('\n'));
        assert_eq!(hint, "(see 'evloop serve --help')");
        let (problem, _) = explain_args(&["evloop", "serve", "echo", "extra"]);
        assert_eq!(problem, "unexpected argument 'extra'");
    }

    #[test]
    fn a_bench_mistake_points_to_the_bench_help() {
        let (problem, hint) = explain_args(&["evloop", "bench", "echo"]);
        assert_eq!(problem, "missing --target <ADDR>");
        assert_eq!(hint, "(see 'evloop bench echo --help')");
    }
}

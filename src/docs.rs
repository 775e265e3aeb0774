//! `evloop completions SHELL` and `evloop man`: shell completions and the
//! manual page, generated from the clap definitions the parser itself uses,
//! so that they cannot drift from it.

use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::{Args, Command, CommandFactory as _};
use clap_complete::Shell;
use clap_mangen::Man;

use crate::Cli;

/// Options of `evloop completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the completion script for the shell that `args` names.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut cli = Cli::command();
    let name = cli.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, name, &mut script);
    print(&script)
}

/// Prints the manual page, in roff, for `man -l -` or section 1.
pub fn man() -> ExitCode {
    match man_page(Cli::command()) {
        Ok(page) => print(&page),
        Err(e) => {
            say!("evloop: rendering the manual page: {e}");
            ExitCode::from(1)
        }
    }
}

/// One page for the whole program: clap_mangen's page of the top command,
/// then a section per subcommand (`EVLOOP SERVE`, `EVLOOP BENCH ECHO`, ...)
/// with its synopsis, description and options, so that `man evloop` shows
/// every option. The subcommands' own pages' headings become subheadings.
fn man_page(mut cli: Command) -> io::Result<Vec<u8>> {
    // Gives each subcommand its full name ("evloop serve") for the synopses.
    cli.build();
    let top = Man::new(cli.clone());
    let mut page = Vec::new();
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    for command in leaves(&cli) {
        let name = command.get_bin_name().unwrap_or(command.get_name());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        let man = Man::new(command.clone());
        let mut chapter = Vec::new();
        man.render_synopsis_section(&mut chapter)?;
        man.render_description_section(&mut chapter)?;
        man.render_options_section(&mut chapter)?;
        for line in String::from_utf8_lossy(&chapter).lines() {
            // roff escapes a text line's leading dot, so this is a heading.
            let line = line
                .strip_prefix(".SH ")
                .map_or(line.to_owned(), |h| format!(".SS {h}"));
            writeln!(page, "{line}")?;
        }
    }
    top.render_version_section(&mut page)?;
    Ok(page)
}

/// The commands that run something (`serve`, `bench echo`, ...), depth
/// first, in definition order: not `help`, nor groups like `bench`.
fn leaves(command: &Command) -> Vec<&Command> {
    command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .flat_map(|sub| {
            if sub.has_subcommands() {
                leaves(sub)
            } else {
                vec![sub]
            }
        })
        .collect()
}

/// Writes `bytes` to standard output. A reader that has gone (`evloop man |
/// head`) is not a failure; another error is reported, with status 1.
fn print(bytes: &[u8]) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            say!("evloop: standard output: {e}");
            ExitCode::from(1)
        }
    }
}

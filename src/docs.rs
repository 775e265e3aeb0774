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
        Ok(page) => print(page.as_bytes()),
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
fn man_page(mut cli: Command) -> io::Result<String> {
    // Gives each subcommand its full name ("evloop serve") for the synopses.
    cli.build();
    let top = Man::new(cli.clone());
    // The title keeps the preamble that every rendering starts with.
    let mut title = Vec::new();
    top.render_title(&mut title)?;
    let mut page = String::from_utf8_lossy(&title).into_owned();
    let mut head = Vec::new();
    top.render_name_section(&mut head)?;
    top.render_synopsis_section(&mut head)?;
    top.render_description_section(&mut head)?;
    top.render_options_section(&mut head)?;
    append(&mut page, &head, false);
    for command in leaves(&cli) {
        let name = command.get_bin_name().unwrap_or(command.get_name());
        page.push_str(&format!(".SH \"{}\"\n", name.to_uppercase()));
        let man = Man::new(command.clone());
        let mut chapter = Vec::new();
        man.render_synopsis_section(&mut chapter)?;
        man.render_description_section(&mut chapter)?;
        man.render_options_section(&mut chapter)?;
        append(&mut page, &chapter, true);
    }
    let mut version = Vec::new();
    top.render_version_section(&mut version)?;
    append(&mut page, &version, false);
    Ok(page)
}

/// Appends rendered roff to `page` without its preamble (which defines
/// the `Aq` string), turning section headings into subheadings if `demote`.
fn append(page: &mut String, rendered: &[u8], demote: bool) {
    for line in String::from_utf8_lossy(rendered).lines() {
        // roff escapes a text line's leading dot: these are requests.
        if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") {
            continue;
        }
        match line.strip_prefix(".SH ") {
            Some(heading) if demote => page.push_str(&format!(".SS {heading}")),
            _ => page.push_str(line),
        }
        page.push('\n');
    }
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

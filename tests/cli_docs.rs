//! The documentation the program carries: shell completions that the shells
//! accept, a manual page that groff accepts and that lists every option,
//! and a version line that names the commit and the drivers.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

/// The standard output of `evloop ARGS`, which must succeed.
#[track_caller]
fn evloop_output(args: &[&str]) -> String {
    let output = common::evloop().args(args).output().expect("run evloop");
    assert!(output.status.success(), "evloop {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs `program ARGS` with `input` on standard input and returns what it
/// wrote to standard error, after checking that it succeeded; `None` if
/// the program is not installed.
#[track_caller]
fn check_with(program: &str, args: &[&str], input: &str) -> Option<String> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{program} is not installed: not checked");
            return None;
        }
        Err(e) => panic!("spawn {program}: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{program} {args:?}: {stderr}");
    Some(stderr)
}

#[test]
fn bash_completion_is_valid_and_knows_the_subcommands() {
    let script = evloop_output(&["completions", "bash"]);
    check_with("bash", &["-n"], &script).expect("bash is installed");
    for word in ["serve", "bench", "--listen", "--max-buffered"] {
        assert!(script.contains(word), "{word} missing from the completion");
    }
}

#[test]
fn zsh_and_fish_completions_are_valid() {
    let zsh = evloop_output(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef evloop"), "{zsh}");
    check_with("zsh", &["-n"], &zsh);
    let fish = evloop_output(&["completions", "fish"]);
    assert!(fish.contains("serve"), "{fish}");
    check_with("fish", &["--no-execute"], &fish);
}

#[test]
fn the_man_page_is_clean_roff_and_lists_every_serve_option() {
    let page = evloop_output(&["man"]);
    assert!(page.contains("\n.TH evloop 1 "), "no title: {page}");
    // One page: one title, one preamble (clap_mangen repeats it per section).
    assert_eq!(page.matches(".TH ").count(), 1);
    assert_eq!(page.matches(".el .ds Aq").count(), 1);
    if let Some(warnings) = check_with("groff", &["-man", "-ww", "-z"], &page) {
        assert!(warnings.is_empty(), "groff warns: {warnings}");
    }
    for section in [".SH \"EVLOOP SERVE\"", ".SH \"EVLOOP BENCH ECHO\""] {
        assert!(page.contains(section), "{section} missing");
    }
    // Every long option that `serve --help` shows, as roff writes it.
    let help = evloop_output(&["serve", "--help"]);
    let options: Vec<&str> = help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|word| word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    assert!(options.contains(&"listen"), "{help}");
    for option in options {
        let roff = format!("\\-\\-{}", option.replace('-', "\\-"));
        assert!(page.contains(&roff), "--{option} missing from the man page");
    }
}

#[test]
fn version_names_the_commit_and_the_drivers() {
    let line = evloop_output(&["--version"]);
    assert_eq!(evloop_output(&["-V"]), line);
    let prefix = format!("evloop {} (", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.trim_end().ends_with(&if cfg!(target_os = "linux") {
            format!("drivers: io_uring, {})", evloop::poll::BACKEND)
        } else {
            format!("drivers: {})", evloop::poll::BACKEND)
        }),
        "{line}"
    );
    // Built from a git checkout: the commit is the checkout's HEAD.
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success());
    match head {
        Some(head) => {
            let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
            assert!(line.contains(&format!("(commit {head}")), "{line}");
        }
        None => eprintln!("not a git checkout: the commit is not checked"),
    }
}

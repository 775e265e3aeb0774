//! The documentation the program carries: a version line that names the
//! commit and the drivers.

mod common;

use std::process::Command;

/// The standard output of `evloop ARGS`, which must succeed.
#[track_caller]
fn evloop_output(args: &[&str]) -> String {
    let output = common::evloop().args(args).output().expect("run evloop");
    assert!(output.status.success(), "evloop {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[test]
fn version_names_the_commit_and_the_drivers() {
    let line = evloop_output(&["--version"]);
    assert_eq!(evloop_output(&["-V"]), line);
    let prefix = format!("evloop {} (", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.trim_end()
            .ends_with(&format!("drivers: {})", evloop::poll::BACKEND)),
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

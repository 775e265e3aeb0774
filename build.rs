//! Records the commit the `evloop` program is built from, for its
//! `--version`: `EVLOOP_COMMIT` is the commit's short hash (12 digits),
//! with `-dirty` when tracked files differ from it. Outside a git checkout
//! of this repository (a packaged crate), or without git, it stays unset
//! and the version names no commit.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the program is compiled from: a change here can change `-dirty`.
const SOURCES: &[&str] = &["build.rs", "Cargo.toml", "Cargo.lock", "src", "evloop"];

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut watched: Vec<PathBuf> = vec![dir.join("build.rs")];
    if let Some((commit, git_files)) = commit(&dir) {
        println!("cargo::rustc-env=EVLOOP_COMMIT={commit}");
        watched.extend(SOURCES.iter().map(|source| dir.join(source)));
        watched.extend(git_files);
    }
    // Only paths that exist: cargo reruns the script on every build while
    // a watched path is missing.
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// The short hash of `HEAD` (with `-dirty`), and the files of the
/// repository whose change moves it, if `dir` is the top of a checkout.
fn commit(dir: &Path) -> Option<(String, Vec<PathBuf>)> {
    // A crate unpacked inside some other repository is not its checkout.
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let mut commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    if !git(dir, &["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        commit.push_str("-dirty");
    }
    // HEAD, and the branch it points to: loose, or packed.
    let mut files = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    let files = files
        .iter()
        .filter_map(|file| git(dir, &["rev-parse", "--git-path", file]))
        .map(|path| dir.join(path))
        .collect();
    Some((commit, files))
}

/// The trimmed output of `git ARGS` run in `dir`, if it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // `git status` must not rewrite the index: that is a change too.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    output.status.success().then(|| text.trim().to_owned())
}

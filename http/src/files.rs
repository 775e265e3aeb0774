//! The document root: opening what a resolved path names without ever
//! leaving the root, and listing directories.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Dir, FileType, Mode, OFlags};

use crate::target;

/// A directory served over HTTP.
#[derive(Debug)]
pub(crate) struct Root {
    dir: OwnedFd,
    /// The root as the kernel resolves it, for the portable containment check.
    canonical: PathBuf,
    follow_symlinks: bool,
}

/// Why a path under the root cannot be opened, as HTTP answers it.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Nothing there: 404.
    Missing,
    /// There, but not for us: permissions, a symlink out of the root, a
    /// device or socket: 403.
    Forbidden,
    /// Anything else (out of descriptors, I/O error): 500, logged.
    Failed(io::Error),
}

impl From<rustix::io::Errno> for OpenError {
    fn from(errno: rustix::io::Errno) -> OpenError {
        use rustix::io::Errno;
        match errno {
            Errno::NOENT | Errno::NOTDIR | Errno::NAMETOOLONG => OpenError::Missing,
            // EXDEV: the path left the root (RESOLVE_BENEATH); ELOOP: a
            // symlink loop, or a symlink where none may be followed.
            Errno::ACCESS | Errno::PERM | Errno::XDEV | Errno::LOOP => OpenError::Forbidden,
            other => OpenError::Failed(other.into()),
        }
    }
}

/// What was opened.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) file: File,
    pub(crate) len: u64,
    /// Modification time, whole seconds since the epoch.
    pub(crate) modified: i64,
    pub(crate) directory: bool,
}

impl Root {
    /// Opens `path` as the root. Symlinks that lead out of it are refused
    /// unless `follow_symlinks`.
    pub(crate) fn open(path: &Path, follow_symlinks: bool) -> io::Result<Root> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", path.display()),
            )
        })?;
        let canonical = std::fs::canonicalize(path)?;
        Ok(Root {
            dir,
            canonical,
            follow_symlinks,
        })
    }

    /// Opens the file or directory at `relative` (as [`target::resolve`]
    /// leaves it: no `..`, no leading `/`; empty for the root) for reading.
    pub(crate) fn open_path(&self, relative: &[u8]) -> Result<Opened, OpenError> {
        let relative = if relative.is_empty() {
            &b"."[..]
        } else {
            relative
        };
        let path = Path::new(OsStr::from_bytes(relative));
        // NONBLOCK: opening a FIFO must not wait for a writer; it changes
        // nothing for regular files.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = self.open_beneath(path, flags)?;
        let stat = rustix::fs::fstat(&fd)?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        if !matches!(kind, FileType::RegularFile | FileType::Directory) {
            return Err(OpenError::Forbidden);
        }
        Ok(Opened {
            file: File::from(fd),
            len: u64::try_from(stat.st_size).unwrap_or(0),
            modified: stat.st_mtime as i64,
            directory: kind == FileType::Directory,
        })
    }

    /// Linux: the kernel resolves the path and refuses any step out of the
    /// root (`RESOLVE_BENEATH`, which covers `..` and symlinks, absolute or
    /// not) in the same call that opens it, so nothing can change between a
    /// check and the open.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn open_beneath(&self, path: &Path, flags: OFlags) -> Result<OwnedFd, OpenError> {
        use rustix::fs::ResolveFlags;
        if self.follow_symlinks {
            return Ok(rustix::fs::openat(&self.dir, path, flags, Mode::empty())?);
        }
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.dir, path, flags, Mode::empty(), resolve) {
            // Kernels before 5.6 have no openat2.
            Err(rustix::io::Errno::NOSYS) => self.open_checked(path, flags),
            other => Ok(other?),
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn open_beneath(&self, path: &Path, flags: OFlags) -> Result<OwnedFd, OpenError> {
        if self.follow_symlinks {
            return Ok(rustix::fs::openat(&self.dir, path, flags, Mode::empty())?);
        }
        self.open_checked(path, flags)
    }

    /// Without `openat2`: opens, then checks that the path the kernel
    /// resolved is inside the root. A symlink swapped in between the two
    /// steps could pass the check: only a user who can write inside the
    /// root could do that.
    fn open_checked(&self, path: &Path, flags: OFlags) -> Result<OwnedFd, OpenError> {
        let fd = rustix::fs::openat(&self.dir, path, flags, Mode::empty())?;
        let real =
            std::fs::canonicalize(self.canonical.join(path)).map_err(|_| OpenError::Missing)?;
        if !real.starts_with(&self.canonical) {
            return Err(OpenError::Forbidden);
        }
        Ok(fd)
    }
}

/// Appends an HTML listing of `dir` (opened from `shown`, the decoded
/// path relative to the root) to `out`: names escaped for HTML and encoded
/// in links, directories first with a trailing `/`, dotfiles left out
/// unless `dotfiles`.
pub(crate) fn write_listing(
    dir: &File,
    shown: &[u8],
    dotfiles: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut entries = Vec::new();
    for entry in Dir::read_from(dir.as_fd())? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || (!dotfiles && name.first() == Some(&b'.')) {
            continue;
        }
        let directory = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown | FileType::Symlink => {
                rustix::fs::statat(dir, entry.file_name(), rustix::fs::AtFlags::empty())
                    .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
            }
            _ => false,
        };
        entries.push((!directory, name.to_vec()));
    }
    entries.sort_unstable();
    let mut title = Vec::with_capacity(shown.len() + 2);
    title.push(b'/');
    title.extend_from_slice(shown);
    if !shown.is_empty() {
        title.push(b'/');
    }
    out.extend_from_slice(b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ");
    escape_html(&title, out);
    out.extend_from_slice(b"</title></head>\n<body><h1>Index of ");
    escape_html(&title, out);
    out.extend_from_slice(b"</h1>\n<ul>\n");
    if !shown.is_empty() {
        out.extend_from_slice(b"<li><a href=\"../\">../</a></li>\n");
    }
    for (file, name) in &entries {
        let slash: &[u8] = if *file { b"" } else { b"/" };
        out.extend_from_slice(b"<li><a href=\"");
        target::encode(name, false, out);
        out.extend_from_slice(slash);
        out.extend_from_slice(b"\">");
        escape_html(name, out);
        out.extend_from_slice(slash);
        out.extend_from_slice(b"</a></li>\n");
    }
    out.extend_from_slice(b"</ul>\n</body></html>\n");
    Ok(())
}

/// Appends `text` escaped for HTML text and attribute values; bytes that
/// are not UTF-8 become U+FFFD.
pub(crate) fn escape_html(text: &[u8], out: &mut Vec<u8>) {
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '&' => out.extend_from_slice(b"&amp;"),
                '<' => out.extend_from_slice(b"&lt;"),
                '>' => out.extend_from_slice(b"&gt;"),
                '"' => out.extend_from_slice(b"&quot;"),
                '\'' => out.extend_from_slice(b"&#39;"),
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        let mut out = Vec::new();
        escape_html(b"<a href='x'>&\"\xff</a>", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;\u{FFFD}&lt;/a&gt;"
        );
    }
}

//! Errors that say what failed and keep the OS error beneath.

use std::fmt;
use std::io;

/// An OS error with a message that says what was being done: its kind is
/// the OS error's, and the OS error itself — with its code, for
/// `raw_os_error` — is its [`source`](std::error::Error::source).
#[derive(Debug)]
struct Described {
    message: String,
    source: io::Error,
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Described {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `source` with `message` in front of it, keeping `source` beneath.
pub(crate) fn described(source: io::Error, message: String) -> io::Error {
    io::Error::new(source.kind(), Described { message, source })
}

/// `source`, introduced as what was being done: `"{what}: {source}"`.
pub(crate) fn context(source: impl Into<io::Error>, what: impl fmt::Display) -> io::Error {
    let source = source.into();
    let message = format!("{what}: {source}");
    described(source, message)
}

/// The OS error code of `e` or of the OS error beneath its message.
#[cfg(target_os = "linux")]
pub(crate) fn os_code(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        let mut source = std::error::Error::source(e.get_ref()?);
        while let Some(s) = source {
            if let Some(code) = s
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
            {
                return Some(code);
            }
            source = s.source();
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_error_and_its_code_stay_beneath_the_message() {
        let os = io::Error::from_raw_os_error(24); // EMFILE
        let err = context(os, "epoll_create1");
        assert!(err.to_string().starts_with("epoll_create1: "), "{err}");
        let beneath = std::error::Error::source(err.get_ref().unwrap())
            .and_then(|s| s.downcast_ref::<io::Error>())
            .unwrap();
        assert_eq!(beneath.raw_os_error(), Some(24));
        assert_eq!(err.kind(), io::Error::from_raw_os_error(24).kind());
        #[cfg(target_os = "linux")]
        assert_eq!(os_code(&err), Some(24));
    }
}

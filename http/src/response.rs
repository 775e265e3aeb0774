//! Response heads, written straight into the connection's output.

use std::io::Write;

use crate::date;

/// The statuses this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Continue,
    Ok,
    PartialContent,
    MovedPermanently,
    NotModified,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    ContentTooLarge,
    UriTooLong,
    RangeNotSatisfiable,
    ExpectationFailed,
    HeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    VersionNotSupported,
}

impl Status {
    /// The status line, without the version.
    fn line(self) -> &'static [u8] {
        match self {
            Status::Continue => b" 100 Continue\r\n",
            Status::Ok => b" 200 OK\r\n",
            Status::PartialContent => b" 206 Partial Content\r\n",
            Status::MovedPermanently => b" 301 Moved Permanently\r\n",
            Status::NotModified => b" 304 Not Modified\r\n",
            Status::BadRequest => b" 400 Bad Request\r\n",
            Status::Forbidden => b" 403 Forbidden\r\n",
            Status::NotFound => b" 404 Not Found\r\n",
            Status::MethodNotAllowed => b" 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b" 408 Request Timeout\r\n",
            Status::ContentTooLarge => b" 413 Content Too Large\r\n",
            Status::UriTooLong => b" 414 URI Too Long\r\n",
            Status::RangeNotSatisfiable => b" 416 Range Not Satisfiable\r\n",
            Status::ExpectationFailed => b" 417 Expectation Failed\r\n",
            Status::HeaderFieldsTooLarge => b" 431 Request Header Fields Too Large\r\n",
            Status::InternalServerError => b" 500 Internal Server Error\r\n",
            Status::NotImplemented => b" 501 Not Implemented\r\n",
            Status::VersionNotSupported => b" 505 HTTP Version Not Supported\r\n",
        }
    }

    /// The numeric code, for the access log.
    pub(crate) fn code(self) -> u16 {
        let line = self.line();
        line[1..4]
            .iter()
            .fold(0, |n, &d| n * 10 + u16::from(d - b'0'))
    }

    /// The body of an error page: the status line's text.
    pub(crate) fn text(self) -> &'static [u8] {
        let line = self.line();
        &line[1..line.len() - 2]
    }
}

/// Whether the connection stays open after a response, and how the
/// request asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// HTTP/1.1's default.
    KeepAlive,
    /// HTTP/1.0 that asked for `Connection: keep-alive`: the answer says so.
    KeepAliveAnnounced,
    /// Closed after this response (`Connection: close` is sent).
    Close,
}

/// Appends the status line and the headers every response carries.
pub(crate) fn write_head_start(out: &mut Vec<u8>, status: Status, persistence: Persistence) {
    out.extend_from_slice(b"HTTP/1.1");
    out.extend_from_slice(status.line());
    out.extend_from_slice(b"Server: evloop\r\n");
    date::write_date_header(out);
    match persistence {
        Persistence::KeepAlive => {}
        Persistence::KeepAliveAnnounced => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
}

/// Appends the interim answer to `Expect: 100-continue`.
pub(crate) fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1");
    out.extend_from_slice(Status::Continue.line());
    out.extend_from_slice(b"\r\n");
}

/// Appends `Content-Length: n`.
pub(crate) fn write_content_length(out: &mut Vec<u8>, n: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "Content-Length: {n}\r\n");
}

/// Appends a whole short response whose body is `body` (not sent for HEAD).
pub(crate) fn write_simple(
    out: &mut Vec<u8>,
    status: Status,
    persistence: Persistence,
    content_type: &str,
    extra_headers: &[u8],
    body: &[u8],
    head_only: bool,
) {
    write_head_start(out, status, persistence);
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra_headers);
    write_content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Appends an error response: a one-line plain-text body naming the status.
/// Returns the body's length, for the access log.
pub(crate) fn write_error(
    out: &mut Vec<u8>,
    status: Status,
    persistence: Persistence,
    extra_headers: &[u8],
    head_only: bool,
) -> u64 {
    let text = status.text();
    write_head_start(out, status, persistence);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(extra_headers);
    write_content_length(out, text.len() as u64 + 1);
    out.extend_from_slice(b"\r\n");
    if head_only {
        return 0;
    }
    out.extend_from_slice(text);
    out.push(b'\n');
    text.len() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts_come_from_the_status_line() {
        assert_eq!(Status::Ok.code(), 200);
        assert_eq!(Status::HeaderFieldsTooLarge.code(), 431);
        assert_eq!(
            Status::VersionNotSupported.text(),
            b"505 HTTP Version Not Supported"
        );
    }

    #[test]
    fn an_error_response_is_complete_and_says_close() {
        let mut out = Vec::new();
        let sent = write_error(&mut out, Status::NotFound, Persistence::Close, b"", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nServer: evloop\r\nDate: "));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\nContent-Length: 14\r\n\r\n404 Not Found\n"));
        assert_eq!(sent, 14);
    }
}

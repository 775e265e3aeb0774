//! One HTTP connection: requests parsed as they arrive, answered in order
//! into the connection's output, bodies discarded, large files handed to
//! the connection core to send.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use evloop::{Action, Address, CloseReason, Context, Handler, Input};
use tracing::warn;

use crate::access_log::escape_field;
use crate::files::{self, OpenError, Opened};
use crate::range::{self, Span};
use crate::response::{self, Persistence, Status};
use crate::target::{self, Refusal};
use crate::{MAX_HEAD, MAX_HEADERS, Shared, date};

/// A body up to this size is read into the output, to go out with its
/// head in one send; a larger one is handed to the connection core
/// ([`Context::send_file`]: `sendfile` where the driver can).
const INLINE_BODY: u64 = 16 * 1024;
/// Past this much output, pipelined requests wait until it has drained:
/// a client that sends requests and never reads answers holds the server's
/// memory to about this, the rest of its requests staying in the kernel.
const OUTPUT_BATCH: usize = 128 * 1024;
/// The longest chunk-size line (with extensions) or trailer line of a
/// chunked request body.
const MAX_CHUNK_LINE: usize = 4096;

/// The per-connection state of the [`Http`](crate::Http) service.
#[derive(Debug)]
pub struct HttpConnection {
    shared: Arc<Shared>,
    /// The client, kept only when requests are logged.
    peer: Option<Address>,
    phase: Phase,
    timer: Timer,
    /// The peer has closed its side; `tail` holds its complete requests
    /// that wait behind a long answer.
    read_closed: bool,
    tail: Vec<u8>,
    /// The decoded path of the request being answered, kept between
    /// requests so that keep-alive allocates once.
    path: Vec<u8>,
}

/// What the connection is doing.
#[derive(Debug)]
enum Phase {
    /// Reading the next request's head.
    Head,
    /// Discarding a request's body before the next head.
    Body(Body),
    /// The core is sending a file; reading is paused until it is out.
    Stream(Stream),
    /// The output passed [`OUTPUT_BATCH`]: reading is paused until it drains.
    Held,
}

/// What the handler's single deadline means now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Off,
    /// A request has begun: its head (and body) must arrive in time.
    Request,
    /// Waiting for the next request on a keep-alive connection.
    Idle,
}

/// A request body being discarded.
#[derive(Debug)]
enum Body {
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`, with the data bytes seen so far.
    Chunked { at: ChunkAt, total: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkAt {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// What follows a file being sent.
#[derive(Debug)]
struct Stream {
    /// Close once sent (the request asked for it).
    close: bool,
    /// The request's body, discarded once the answer is out.
    body: Option<Body>,
}

/// How an answer's body goes out.
enum Sending {
    /// Written into the output with the head (or there is none).
    Done,
    /// The core sends this file range after the head.
    File { file: File, start: u64, len: u64 },
    /// The file could not be read as promised: reset.
    Failed,
}

/// What processing input came to.
enum Outcome {
    /// Wait for more input or for the output to drain.
    Continue,
    /// Close once the output is out.
    Close,
    /// Reset: a promise (a `Content-Length`) cannot be kept.
    Abort,
}

impl From<Outcome> for Action {
    fn from(outcome: Outcome) -> Action {
        match outcome {
            Outcome::Continue => Action::Continue,
            Outcome::Close => Action::Close,
            Outcome::Abort => Action::Abort,
        }
    }
}

/// The request fields that decide the answer.
#[derive(Default)]
struct Fields<'a> {
    hosts: usize,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
}

/// The request being answered, for the answer and the access log.
struct Request<'a> {
    method: &'a str,
    target: &'a [u8],
    minor_version: u8,
    head_only: bool,
    persistence: Persistence,
    fields: Fields<'a>,
}

/// An answer's status and body length, for the access log.
struct Answered {
    status: Status,
    body: u64,
}

impl HttpConnection {
    pub(crate) fn new(shared: Arc<Shared>, peer: &Address) -> HttpConnection {
        let peer = shared.access_log.is_some().then(|| peer.clone());
        HttpConnection {
            shared,
            peer,
            phase: Phase::Head,
            timer: Timer::Off,
            read_closed: false,
            tail: Vec::new(),
            path: Vec::new(),
        }
    }

    /// Handles what `bytes` holds, request after request; returns how many
    /// bytes were used and what to do next.
    fn process(&mut self, bytes: &[u8], cx: &mut Context<'_>) -> (usize, Outcome) {
        let mut used = 0;
        loop {
            let rest = &bytes[used..];
            match &mut self.phase {
                Phase::Stream(_) | Phase::Held => return (used, Outcome::Continue),
                Phase::Body(body) => {
                    let limit = self.shared.max_body;
                    match discard(body, rest, limit) {
                        Ok((n, true)) => {
                            used += n;
                            self.phase = Phase::Head;
                            self.set_timer(Timer::Off, cx);
                        }
                        Ok((n, false)) => return (used + n, Outcome::Continue),
                        // Too long, or not chunked encoding: the answer is
                        // out; nothing after it can be framed.
                        Err(()) => return (used, Outcome::Close),
                    }
                }
                Phase::Head if rest.is_empty() => {
                    if !self.read_closed {
                        self.set_timer(Timer::Idle, cx);
                    }
                    return (used, Outcome::Continue);
                }
                Phase::Head if cx.output().len() >= OUTPUT_BATCH => {
                    self.phase = Phase::Held;
                    cx.pause_reading();
                    cx.notify_drained();
                    return (used, Outcome::Continue);
                }
                Phase::Head => match self.request(rest, cx) {
                    (n, Outcome::Continue) if n > 0 => used += n,
                    (n, outcome) => return (used + n, outcome),
                },
            }
        }
    }

    /// Parses one request head at the start of `bytes` and answers it.
    /// Uses nothing (and returns `Continue`) while the head is incomplete.
    fn request(&mut self, bytes: &[u8], cx: &mut Context<'_>) -> (usize, Outcome) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(bytes) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Complete(_)) => return (0, self.refuse(too_long(bytes), cx)),
            Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD => {
                return (0, self.refuse(too_long(bytes), cx));
            }
            Ok(httparse::Status::Partial) => {
                if self.timer != Timer::Request {
                    self.set_timer(Timer::Request, cx);
                }
                return (0, Outcome::Continue);
            }
            Err(httparse::Error::Version) => {
                return (0, self.refuse(Status::VersionNotSupported, cx));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return (0, self.refuse(Status::HeaderFieldsTooLarge, cx));
            }
            Err(_) => return (0, self.refuse(Status::BadRequest, cx)),
        };
        let (Some(method), Some(target), Some(minor_version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return (0, self.refuse(Status::BadRequest, cx));
        };
        let fields = match read_fields(parsed.headers, minor_version) {
            Ok(fields) => fields,
            Err(status) => return (0, self.refuse(status, cx)),
        };
        if minor_version == 1 && fields.hosts != 1 {
            return (0, self.refuse(Status::BadRequest, cx));
        }
        let persistence = match (minor_version, fields.close, fields.keep_alive) {
            (_, true, _) => Persistence::Close,
            (1, false, _) => Persistence::KeepAlive,
            (_, false, true) => Persistence::KeepAliveAnnounced,
            (_, false, false) => Persistence::Close,
        };
        let body = match (fields.chunked, fields.content_length) {
            (true, _) => Some(Body::Chunked {
                at: ChunkAt::Size,
                total: 0,
            }),
            (false, Some(n)) if n > self.shared.max_body => {
                return (0, self.refuse(Status::ContentTooLarge, cx));
            }
            (false, Some(n)) if n > 0 => Some(Body::Length(n)),
            _ => None,
        };
        let request = Request {
            method,
            target: target.as_bytes(),
            minor_version,
            head_only: method == "HEAD",
            persistence,
            fields,
        };
        // HTTP/1.0 has no 100 (Continue): its expectation is ignored.
        let expecting = request.fields.expect_continue && minor_version == 1;
        if body.is_some() && expecting && persistence != Persistence::Close {
            response::write_continue(cx.output());
        }
        let (answered, sending) = if method == "GET" || method == "HEAD" {
            answer(&self.shared, &mut self.path, &request, cx)
        } else {
            let sent = response::write_error(
                cx.output(),
                Status::MethodNotAllowed,
                persistence,
                b"Allow: GET, HEAD\r\n",
                false,
            );
            (
                Answered {
                    status: Status::MethodNotAllowed,
                    body: sent,
                },
                Sending::Done,
            )
        };
        self.log(&request, &answered);
        match sending {
            Sending::Failed => return (head_len, Outcome::Abort),
            Sending::File { file, start, len } => {
                cx.send_file(file, start, len);
                let close = persistence == Persistence::Close;
                self.phase = Phase::Stream(Stream { close, body });
                self.set_timer(Timer::Off, cx);
                cx.pause_reading();
                cx.notify_drained();
                return (head_len, Outcome::Continue);
            }
            Sending::Done => {}
        }
        if persistence == Persistence::Close {
            return (head_len, Outcome::Close);
        }
        match body {
            // The request's deadline still runs while its body arrives.
            Some(body) => self.phase = Phase::Body(body),
            None if self.timer == Timer::Request => self.set_timer(Timer::Off, cx),
            // An idle timer is set again from now once the input is used up.
            None => {}
        }
        (head_len, Outcome::Continue)
    }

    /// Answers a malformed or unacceptable request and closes: after it
    /// nothing the client sends can be trusted to be framed.
    fn refuse(&mut self, status: Status, cx: &mut Context<'_>) -> Outcome {
        response::write_error(cx.output(), status, Persistence::Close, b"", false);
        if let Some(log) = &self.shared.access_log {
            let peer = self.peer.as_ref();
            log.record(|out| write_log_line(out, peer, b"-", status, 0, None, None));
        }
        Outcome::Close
    }

    /// Sets the handler's deadline for `timer`.
    fn set_timer(&mut self, timer: Timer, cx: &mut Context<'_>) {
        match timer {
            Timer::Off if self.timer != Timer::Off => cx.clear_deadline(),
            Timer::Off => {}
            Timer::Request => cx.set_deadline(self.shared.header_timeout),
            Timer::Idle => cx.set_deadline(self.shared.keepalive_timeout),
        }
        self.timer = timer;
    }

    /// The file has been sent: on to the request's body, or the next
    /// request, or the close it asked for.
    fn stream_done(&mut self, cx: &mut Context<'_>) -> Outcome {
        let Phase::Stream(stream) = std::mem::replace(&mut self.phase, Phase::Head) else {
            return Outcome::Continue;
        };
        if stream.close {
            return Outcome::Close;
        }
        if let Some(body) = stream.body {
            self.phase = Phase::Body(body);
        }
        self.resume(cx)
    }

    /// Back to reading requests after a pause: the core hands over the
    /// input left meanwhile; after the peer closed, the tail kept here.
    fn resume(&mut self, cx: &mut Context<'_>) -> Outcome {
        if !self.read_closed {
            if matches!(self.phase, Phase::Head) {
                self.set_timer(Timer::Idle, cx);
            }
            cx.resume_reading();
            return Outcome::Continue;
        }
        let tail = std::mem::take(&mut self.tail);
        let (used, outcome) = self.process(&tail, cx);
        self.keep_tail(&tail[used..]);
        outcome
    }

    /// After the peer closed: keeps the requests not answered yet (behind a
    /// long answer) for when its output has drained.
    fn keep_tail(&mut self, rest: &[u8]) {
        let waiting = matches!(self.phase, Phase::Stream(_) | Phase::Held);
        if waiting && !rest.is_empty() {
            self.tail = rest.to_vec();
        }
    }

    /// What the handler answers the loop: a connection that closes (its
    /// last answer written) or resets stops its timer first, so that a
    /// header timeout cannot add a 408 behind that last answer while the
    /// client has not read it yet.
    fn decided(&mut self, outcome: Outcome, cx: &mut Context<'_>) -> Action {
        if !matches!(outcome, Outcome::Continue) {
            self.set_timer(Timer::Off, cx);
        }
        outcome.into()
    }

    /// Writes the access log line for an answered request.
    fn log(&self, request: &Request<'_>, answered: &Answered) {
        let Some(log) = &self.shared.access_log else {
            return;
        };
        log.record(|out| {
            let mut line = Vec::with_capacity(request.target.len() + 16);
            line.extend_from_slice(request.method.as_bytes());
            line.push(b' ');
            line.extend_from_slice(request.target);
            let _ = write!(line, " HTTP/1.{}", request.minor_version);
            write_log_line(
                out,
                self.peer.as_ref(),
                &line,
                answered.status,
                answered.body,
                request.fields.referer,
                request.fields.user_agent,
            );
        });
    }
}

impl Handler for HttpConnection {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let (used, outcome) = self.process(input.bytes(), cx);
        input.consume(used);
        self.decided(outcome, cx)
    }

    fn on_read_closed(&mut self, unconsumed: &[u8], cx: &mut Context<'_>) {
        self.read_closed = true;
        self.set_timer(Timer::Off, cx);
        let (used, outcome) = self.process(unconsumed, cx);
        if matches!(outcome, Outcome::Continue) {
            self.keep_tail(&unconsumed[used..]);
        }
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        let outcome = match self.phase {
            Phase::Stream(_) => self.stream_done(cx),
            Phase::Held => {
                self.phase = Phase::Head;
                self.resume(cx)
            }
            Phase::Head | Phase::Body(_) => Outcome::Continue,
        };
        self.decided(outcome, cx)
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Action {
        match std::mem::replace(&mut self.timer, Timer::Off) {
            Timer::Request => {
                self.refuse(Status::RequestTimeout, cx);
                Action::Close
            }
            Timer::Idle | Timer::Off => Action::Close,
        }
    }

    fn on_close(&mut self, _reason: CloseReason) {
        self.shared.about.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a GET or HEAD, and says how its body goes out.
fn answer(
    shared: &Shared,
    path: &mut Vec<u8>,
    request: &Request<'_>,
    cx: &mut Context<'_>,
) -> (Answered, Sending) {
    let error = |status: Status, cx: &mut Context<'_>| {
        let body = response::write_error(
            cx.output(),
            status,
            request.persistence,
            b"",
            request.head_only,
        );
        (Answered { status, body }, Sending::Done)
    };
    let resolved = match target::resolve(request.target, shared.dotfiles, path) {
        Ok(resolved) => resolved,
        Err(Refusal::BadRequest) => return error(Status::BadRequest, cx),
        Err(Refusal::Hidden) => return error(Status::Forbidden, cx),
    };
    let Some(root) = &shared.root else {
        if !path.is_empty() {
            return error(Status::NotFound, cx);
        }
        let mut page = Vec::with_capacity(1024);
        write_about(shared, &mut page);
        return html_page(&page, request, cx);
    };
    let opened = match root.open_path(path) {
        Ok(opened) => opened,
        Err(e) => return error(open_status(e, path), cx),
    };
    if !opened.directory {
        if resolved.directory {
            // `/file.txt/`: no directory of that name.
            return error(Status::NotFound, cx);
        }
        let content_type = mime_guess::from_path(Path::new(OsStr::from_bytes(path)))
            .first_raw()
            .unwrap_or("application/octet-stream");
        return send_file(opened, content_type, request, cx);
    }
    if !resolved.directory {
        let mut location = b"Location: /".to_vec();
        target::encode(path, true, &mut location);
        location.extend_from_slice(b"/\r\n");
        let body = response::write_error(
            cx.output(),
            Status::MovedPermanently,
            request.persistence,
            &location,
            request.head_only,
        );
        return (
            Answered {
                status: Status::MovedPermanently,
                body,
            },
            Sending::Done,
        );
    }
    let listed = path.len();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(b"index.html");
    match root.open_path(path) {
        Ok(index) if !index.directory => return send_file(index, "text/html", request, cx),
        Ok(_) | Err(OpenError::Missing) => {}
        Err(e) => return error(open_status(e, path), cx),
    }
    path.truncate(listed);
    if !shared.list {
        return error(Status::Forbidden, cx);
    }
    let mut page = Vec::with_capacity(4096);
    if let Err(e) = files::write_listing(&opened.file, path, shared.dotfiles, &mut page) {
        warn!("listing /{}: {e}", String::from_utf8_lossy(path));
        return error(Status::InternalServerError, cx);
    }
    html_page(&page, request, cx)
}

/// Answers 200 with an HTML page the service wrote (the built-in page, a
/// listing).
fn html_page(page: &[u8], request: &Request<'_>, cx: &mut Context<'_>) -> (Answered, Sending) {
    response::write_simple(
        cx.output(),
        Status::Ok,
        request.persistence,
        "text/html; charset=utf-8",
        b"",
        page,
        request.head_only,
    );
    let body = if request.head_only {
        0
    } else {
        page.len() as u64
    };
    let answered = Answered {
        status: Status::Ok,
        body,
    };
    (answered, Sending::Done)
}

/// 414 when the request line alone is too long, else 431.
fn too_long(bytes: &[u8]) -> Status {
    match bytes[..bytes.len().min(MAX_HEAD + 1)]
        .iter()
        .position(|&b| b == b'\n')
    {
        Some(_) => Status::HeaderFieldsTooLarge,
        None => Status::UriTooLong,
    }
}

/// Reads the fields that matter, refusing contradictions a proxy in front
/// could read differently (request smuggling): two lengths, a length with
/// chunked, chunked not last.
fn read_fields<'a>(
    headers: &[httparse::Header<'a>],
    minor_version: u8,
) -> Result<Fields<'a>, Status> {
    let mut fields = Fields::default();
    for header in headers {
        let name = header.name.as_bytes();
        let value = header.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"host") {
            fields.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = range::decimal(value).ok_or(Status::BadRequest)?;
            if fields.content_length.is_some_and(|m| m != n) {
                return Err(Status::BadRequest);
            }
            fields.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if minor_version == 0 || fields.chunked {
                return Err(Status::BadRequest);
            }
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            if !last.eq_ignore_ascii_case(b"chunked") {
                return Err(Status::BadRequest);
            }
            if value.len() != last.len() {
                // Another coding before chunked (gzip, …): not supported.
                return Err(Status::NotImplemented);
            }
            fields.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                fields.close |= token.eq_ignore_ascii_case(b"close");
                fields.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(Status::ExpectationFailed);
            }
            fields.expect_continue = true;
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            fields.if_none_match = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            fields.if_modified_since = Some(value);
        } else if name.eq_ignore_ascii_case(b"range") {
            fields.range = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-range") {
            fields.if_range = Some(value);
        } else if name.eq_ignore_ascii_case(b"referer") {
            fields.referer = Some(value);
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            fields.user_agent = Some(value);
        }
    }
    if fields.chunked && fields.content_length.is_some() {
        return Err(Status::BadRequest);
    }
    Ok(fields)
}

/// The status for a path that could not be opened.
fn open_status(error: OpenError, path: &[u8]) -> Status {
    match error {
        OpenError::Missing => Status::NotFound,
        OpenError::Forbidden => Status::Forbidden,
        OpenError::Failed(e) => {
            warn!("opening /{}: {e}", String::from_utf8_lossy(path));
            Status::InternalServerError
        }
    }
}

/// Answers with a file: 304 when the client's copy is current, 206 or 416
/// for a range, else 200; its body (unless HEAD) read into the output when
/// small, else left to the connection core.
fn send_file(
    opened: Opened,
    content_type: &str,
    request: &Request<'_>,
    cx: &mut Context<'_>,
) -> (Answered, Sending) {
    let mut tag = [0u8; 40];
    let tag_len = {
        let mut cursor = io::Cursor::new(&mut tag[..]);
        let _ = write!(cursor, "\"{:x}-{:x}\"", opened.modified, opened.len);
        cursor.position() as usize
    };
    let etag = &tag[..tag_len];
    let fields = &request.fields;
    let not_modified = match (fields.if_none_match, fields.if_modified_since) {
        (Some(candidates), _) => etag_matches(candidates, etag),
        (None, Some(since)) => {
            date::parse_http_date(since).is_some_and(|since| opened.modified <= since)
        }
        (None, None) => false,
    };
    let out = cx.output();
    // Never later than the Date header (RFC 9110, 8.8.2.1: a time in the
    // future is replaced by the response's date). A client revalidating
    // by that date then gets the file again, as it should: its time is
    // not known to be past. Taken before the Date header is written, so
    // never a second after it.
    let last_modified = opened.modified.min(date::now());
    let validators = |out: &mut Vec<u8>| {
        let _ = write!(
            out,
            "Last-Modified: {}\r\nETag: ",
            date::http_date(last_modified)
        );
        out.extend_from_slice(etag);
        out.extend_from_slice(b"\r\n");
    };
    if not_modified {
        response::write_head_start(out, Status::NotModified, request.persistence);
        validators(out);
        out.extend_from_slice(b"\r\n");
        return (
            Answered {
                status: Status::NotModified,
                body: 0,
            },
            Sending::Done,
        );
    }
    let range_applies = fields.if_range.is_none_or(|validator| {
        validator == etag || date::parse_http_date(validator) == Some(opened.modified)
    });
    let span = match fields.range {
        Some(range) if range_applies => range::span(range, opened.len),
        _ => Span::Whole,
    };
    let (status, start, len) = match span {
        Span::Whole => (Status::Ok, 0, opened.len),
        Span::Part { start, end } => (Status::PartialContent, start, end - start + 1),
        Span::Unsatisfiable => {
            let mut range = Vec::with_capacity(48);
            let _ = write!(range, "Content-Range: bytes */{}\r\n", opened.len);
            let body = response::write_error(
                out,
                Status::RangeNotSatisfiable,
                request.persistence,
                &range,
                request.head_only,
            );
            return (
                Answered {
                    status: Status::RangeNotSatisfiable,
                    body,
                },
                Sending::Done,
            );
        }
    };
    response::write_head_start(out, status, request.persistence);
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\n");
    response::write_content_length(out, len);
    validators(out);
    if status == Status::PartialContent {
        let _ = write!(
            out,
            "Content-Range: bytes {start}-{}/{}\r\n",
            start + len - 1,
            opened.len
        );
    }
    out.extend_from_slice(b"Accept-Ranges: bytes\r\n\r\n");
    let answered = Answered {
        status,
        body: if request.head_only { 0 } else { len },
    };
    if request.head_only || len == 0 {
        return (answered, Sending::Done);
    }
    let mut file = opened.file;
    if len > INLINE_BODY {
        return (answered, Sending::File { file, start, len });
    }
    if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
        return (answered, Sending::Failed);
    }
    if !read_exactly(&file, len, out) {
        return (answered, Sending::Failed);
    }
    (answered, Sending::Done)
}

/// Appends exactly `n` bytes of `file` (from its position) to `out`;
/// false if it has fewer (it shrank since it was measured) or fails.
fn read_exactly(mut file: &File, n: u64, out: &mut Vec<u8>) -> bool {
    out.reserve(n as usize);
    match Read::by_ref(&mut file).take(n).read_to_end(out) {
        Ok(got) if got as u64 == n => true,
        Ok(got) => {
            warn!("a file shrank while being sent ({got} of {n} bytes): connection reset");
            false
        }
        Err(e) => {
            warn!("reading a file failed: {e}: connection reset");
            false
        }
    }
}

/// `If-None-Match`: `*`, or a list of entity tags compared weakly.
fn etag_matches(candidates: &[u8], etag: &[u8]) -> bool {
    candidates.split(|&b| b == b',').any(|candidate| {
        let candidate = candidate.trim_ascii();
        candidate == b"*" || candidate.strip_prefix(b"W/").unwrap_or(candidate) == etag
    })
}

/// Consumes body bytes from `bytes`: how many were used and whether the
/// body has ended. `Err` for a malformed chunked body or one past `limit`.
fn discard(body: &mut Body, bytes: &[u8], limit: u64) -> Result<(usize, bool), ()> {
    match body {
        Body::Length(left) => {
            let n = (*left).min(bytes.len() as u64);
            *left -= n;
            Ok((n as usize, *left == 0))
        }
        Body::Chunked { at, total } => {
            let mut used = 0;
            loop {
                let rest = &bytes[used..];
                match *at {
                    ChunkAt::Size => match httparse::parse_chunk_size(rest) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            used += n;
                            *total = total.saturating_add(size);
                            if *total > limit {
                                return Err(());
                            }
                            *at = if size == 0 {
                                ChunkAt::Trailers
                            } else {
                                ChunkAt::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if rest.len() <= MAX_CHUNK_LINE => {
                            return Ok((used, false));
                        }
                        _ => return Err(()),
                    },
                    ChunkAt::Data(left) => {
                        let n = left.min(rest.len() as u64);
                        used += n as usize;
                        *at = if n == left {
                            ChunkAt::DataEnd
                        } else {
                            ChunkAt::Data(left - n)
                        };
                        if n < left {
                            return Ok((used, false));
                        }
                    }
                    ChunkAt::DataEnd => match rest {
                        [b'\r', b'\n', ..] => {
                            used += 2;
                            *at = ChunkAt::Size;
                        }
                        [] | [b'\r'] => return Ok((used, false)),
                        _ => return Err(()),
                    },
                    ChunkAt::Trailers => match rest.iter().position(|&b| b == b'\n') {
                        Some(end) => {
                            used += end + 1;
                            if rest[..end].trim_ascii().is_empty() {
                                return Ok((used, true));
                            }
                        }
                        None if rest.len() <= MAX_CHUNK_LINE => return Ok((used, false)),
                        None => return Err(()),
                    },
                }
            }
        }
    }
}

/// Appends a Combined Log Format line.
fn write_log_line(
    out: &mut Vec<u8>,
    peer: Option<&Address>,
    request_line: &[u8],
    status: Status,
    body: u64,
    referer: Option<&[u8]>,
    user_agent: Option<&[u8]>,
) {
    match peer.and_then(Address::inet) {
        Some(addr) => {
            let _ = write!(out, "{}", addr.ip());
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - - [");
    date::write_log_time(out);
    out.extend_from_slice(b"] \"");
    escape_field(request_line, out);
    let _ = write!(out, "\" {} {body} \"", status.code());
    escape_field(referer.unwrap_or(b"-"), out);
    out.extend_from_slice(b"\" \"");
    escape_field(user_agent.unwrap_or(b"-"), out);
    out.extend_from_slice(b"\"\n");
}

/// The built-in page: what is running, for how long, with how many
/// connections.
fn write_about(shared: &Shared, out: &mut Vec<u8>) {
    let about = &shared.about;
    let uptime = about.started.elapsed().as_secs();
    let (driver, loops) = match about.running.get() {
        Some((driver, loops)) => (driver.as_str(), loops.to_string()),
        None => ("unknown", "unknown".to_owned()),
    };
    out.extend_from_slice(b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    files::escape_html(about.software.as_bytes(), out);
    out.extend_from_slice(b"</title></head>\n<body><h1>");
    files::escape_html(about.software.as_bytes(), out);
    out.extend_from_slice(b"</h1>\n<p>HTTP/1.1 is served here; no document root is configured.</p>\n<table>\n<tr><th>I/O driver</th><td>");
    files::escape_html(driver.as_bytes(), out);
    let _ = write!(
        out,
        "</td></tr>\n<tr><th>loops</th><td>{loops}</td></tr>\n<tr><th>open connections</th><td>{}</td></tr>\n<tr><th>uptime</th><td>{}d {}h {}m {}s</td></tr>\n</table>\n</body></html>\n",
        about.open.load(Ordering::Relaxed),
        uptime / 86_400,
        uptime / 3600 % 24,
        uptime / 60 % 60,
        uptime % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_discarded_across_splits() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nGET";
        for split in 0..body.len() {
            let mut state = Body::Chunked {
                at: ChunkAt::Size,
                total: 0,
            };
            let (first, done) = discard(&mut state, &body[..split], 100).unwrap();
            assert!(!done || split >= body.len() - 3, "split {split}");
            if done {
                assert_eq!(first, body.len() - 3);
                continue;
            }
            let (second, done) = discard(&mut state, &body[first..], 100).unwrap();
            assert!(done, "split {split}");
            assert_eq!(first + second, body.len() - 3, "split {split}");
        }
    }

    #[test]
    fn chunked_bodies_past_the_limit_or_malformed_are_refused() {
        let mut state = Body::Chunked {
            at: ChunkAt::Size,
            total: 0,
        };
        assert!(discard(&mut state, b"ffff\r\n", 100).is_err());
        let mut state = Body::Chunked {
            at: ChunkAt::Size,
            total: 0,
        };
        assert!(discard(&mut state, b"2\r\nabXY", 100).is_err());
        let mut state = Body::Chunked {
            at: ChunkAt::Size,
            total: 0,
        };
        assert!(discard(&mut state, b"zz\r\n", 100).is_err());
    }

    #[test]
    fn entity_tags_compare_weakly() {
        assert!(etag_matches(b"\"a-1\"", b"\"a-1\""));
        assert!(etag_matches(b"W/\"a-1\"", b"\"a-1\""));
        assert!(etag_matches(b"\"x\", \"a-1\"", b"\"a-1\""));
        assert!(etag_matches(b"*", b"\"a-1\""));
        assert!(!etag_matches(b"\"a-2\"", b"\"a-1\""));
    }
}

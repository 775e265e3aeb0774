//! What a handler can see of its connection and ask of the loop.

use std::fmt;
use std::fs::File;
use std::io;
use std::time::Duration;

use crate::Address;
use crate::clock::Clock;
use crate::net;
use crate::reactor::Core;

/// A connection's identity, unique among the open connections of a server
/// (the loop's index and the connection's sequence number on that loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The identity as a number, e.g. for logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 >> 32, self.0 & u64::from(u32::MAX))
    }
}

/// Who is at the other end of a Unix socket, as the kernel recorded it
/// when the peer connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Credentials {
    /// The peer's process id.
    pub pid: u32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// Passed to every [`Handler`](crate::Handler) call: the connection's
/// output, and what the handler may ask of the loop for this connection —
/// a deadline of its own, pausing its input, hearing when its output has
/// drained. Requests take effect when the call returns.
pub struct Context<'a> {
    pub(crate) output: &'a mut Vec<u8>,
    pub(crate) core: &'a mut Core,
    pub(crate) clock: &'a Clock,
    pub(crate) id: ConnId,
    /// The peer when it is known without asking the kernel: as `accept`
    /// reported it, during `on_open`; or as a layer learned it (the client
    /// a PROXY protocol header named), in every call of the handler it
    /// wraps.
    pub(crate) known_peer: Option<&'a Address>,
    /// The most input the handler may leave unconsumed (the server's
    /// `max_input`): a layer that keeps its handler's leftovers itself
    /// (TLS: decrypted bytes) bounds them by it too.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) max_input: usize,
    /// Where files go that the handler sends, when a layer that transforms
    /// the output (TLS) sends them itself: the kernel must not send a
    /// file's bytes as they are.
    #[cfg(feature = "tls")]
    pub(crate) file_slot: Option<&'a mut Option<LayerFile>>,
}

/// A file a handler sent through a layer that transforms the output: the
/// part of it still to send.
#[cfg(feature = "tls")]
#[derive(Debug)]
pub(crate) struct LayerFile {
    pub(crate) file: File,
    /// Where its next byte is.
    pub(crate) offset: u64,
    pub(crate) left: u64,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("output", &self.output.len())
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The bytes to send: append to it. The loop writes them out after the
    /// call, and stops reading from the connection while too much of its
    /// output is pending (backpressure).
    ///
    /// # Panics
    /// While a file is being sent ([`send_file`](Self::send_file)): output
    /// goes out in order, and nothing may follow the file until it is out.
    pub fn output(&mut self) -> &mut Vec<u8> {
        self.assert_no_file();
        self.output
    }

    /// Appends `bytes` to the output.
    ///
    /// # Panics
    /// As [`output`](Self::output).
    pub fn write(&mut self, bytes: &[u8]) {
        self.assert_no_file();
        self.output.extend_from_slice(bytes);
    }

    /// Sends `len` bytes of `file` from `offset` after the output written so
    /// far, without copying them through memory where the driver can: the
    /// readiness driver on Linux hands the file to the kernel (`sendfile`);
    /// the others read it a chunk at a time as the client takes it. Either
    /// way the connection holds no more than a chunk of it, however large
    /// it is. The file counts as pending output (backpressure), and a
    /// [`notify_drained`](Self::notify_drained) notice comes only once all
    /// of it is sent: write nothing more until then (see
    /// [`sending_file`](Self::sending_file)). If the file turns out shorter
    /// than `len` (it shrank meanwhile) or cannot be read, the connection
    /// ends at once (reset on the readiness driver, closed as an error on
    /// io_uring): the peer was promised `len` bytes.
    ///
    /// # Panics
    /// If a file is still being sent.
    ///
    /// Behind TLS (the `tls` layer) the file is read and encrypted a chunk at a
    /// time as the client takes it, never handed to the kernel as it is.
    pub fn send_file(&mut self, file: File, offset: u64, len: u64) {
        #[cfg(feature = "tls")]
        if let Some(slot) = &mut self.file_slot {
            assert!(slot.is_none(), "a file is already being sent");
            if len > 0 {
                **slot = Some(LayerFile {
                    file,
                    offset,
                    left: len,
                });
            }
            return;
        }
        self.core.send_file(file, offset, len);
    }

    /// Whether a file given to [`send_file`](Self::send_file) is still
    /// being sent: until it is, the output may not be written.
    pub fn sending_file(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(slot) = &self.file_slot {
            return slot.is_some();
        }
        self.core.sending_file()
    }

    #[track_caller]
    fn assert_no_file(&self) {
        assert!(
            !self.sending_file(),
            "output written while a file is being sent"
        );
    }

    /// The connection's identity.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address: IP and port, or a Unix socket's path, abstract
    /// name or [`Address::Unnamed`] (the usual client). In
    /// [`on_open`](crate::Handler::on_open) it is the address `accept`
    /// reported; later calls ask the kernel (`getpeername`), so a handler
    /// that needs it often keeps the copy it got when opened.
    ///
    /// Behind the [PROXY protocol](crate::proxy) it is the client the
    /// header named, in every call (no system call), and the address the
    /// service was opened with: the proxy's own address is not seen. For a
    /// header that names no client (`LOCAL`, `UNKNOWN`) it is the real
    /// peer, the proxy, as above.
    pub fn peer(&self) -> io::Result<Address> {
        match self.known_peer {
            Some(peer) => Ok(peer.clone()),
            None => net::peer_of(self.core.socket()),
        }
    }

    /// The address the connection arrived on (`getsockname`): which of
    /// several listeners, or the port chosen for port 0. Behind the PROXY
    /// protocol too, it is this server's own address, not the one the
    /// client reached on the proxy (the header's destination).
    pub fn local(&self) -> io::Result<Address> {
        net::local_of(self.core.socket())
    }

    /// The process, user and group at the other end of a Unix socket
    /// (`SO_PEERCRED`): an error for TCP, and on systems other than Linux
    /// and Android for now.
    pub fn peer_credentials(&self) -> io::Result<Credentials> {
        let (pid, uid, gid) = net::peer_credentials(self.core.socket())?;
        Ok(Credentials { pid, uid, gid })
    }

    /// The same context for a handler wrapped by a layer, which sees
    /// `peer` as its peer if given (else what this one sees).
    pub(crate) fn with_peer<'b>(&'b mut self, peer: Option<&'b Address>) -> Context<'b> {
        Context {
            output: &mut *self.output,
            core: &mut *self.core,
            clock: self.clock,
            id: self.id,
            known_peer: peer.or(self.known_peer),
            max_input: self.max_input,
            #[cfg(feature = "tls")]
            file_slot: self.file_slot.as_deref_mut(),
        }
    }

    /// The context of a handler wrapped by a layer that transforms its
    /// output (TLS): what it writes goes to `output`, the files it sends to
    /// `file`, for the layer to transform; the rest is this context's.
    #[cfg(feature = "tls")]
    pub(crate) fn layered<'b>(
        &'b mut self,
        output: &'b mut Vec<u8>,
        file: &'b mut Option<LayerFile>,
    ) -> Context<'b> {
        Context {
            output,
            core: &mut *self.core,
            clock: self.clock,
            id: self.id,
            known_peer: self.known_peer,
            max_input: self.max_input,
            file_slot: Some(file),
        }
    }

    /// Whether a drain notice is asked for ([`notify_drained`](Self::notify_drained)
    /// since the last one came).
    #[cfg(feature = "tls")]
    pub(crate) fn drain_notice_requested(&self) -> bool {
        self.core.drain_notice_requested()
    }

    /// Takes back the drain notice asked for, if any; says whether there
    /// was one.
    #[cfg(feature = "tls")]
    pub(crate) fn take_drain_notice(&mut self) -> bool {
        self.core.take_drain_notice()
    }

    /// Whether the handler has paused its input
    /// ([`pause_reading`](Self::pause_reading) without a resume since).
    pub(crate) fn paused_by_handler(&self) -> bool {
        self.core.paused_by_handler()
    }

    /// Calls [`Handler::on_deadline`](crate::Handler::on_deadline) once
    /// `after` has passed (from now), unless cleared or set again first.
    /// Unlike the server's idle timeout, traffic does not move it: a
    /// protocol's deadline (a request's headers, a handshake) runs from when
    /// it is set. At most 24 days.
    pub fn set_deadline(&mut self, after: Duration) {
        self.core.set_deadline(Some(self.clock.tick_after(after)));
    }

    /// Cancels the deadline set by [`set_deadline`](Self::set_deadline).
    pub fn clear_deadline(&mut self) {
        self.core.set_deadline(None);
    }

    /// Stops reading from the connection until
    /// [`resume_reading`](Self::resume_reading): input stays in the kernel
    /// (and the client is slowed by TCP's flow control), not in memory.
    pub fn pause_reading(&mut self) {
        self.core.pause_by_handler(true);
    }

    /// Reads from the connection again after
    /// [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&mut self) {
        self.core.pause_by_handler(false);
    }

    /// Calls [`Handler::on_drained`](crate::Handler::on_drained) once the
    /// output pending on this connection has fallen to the low watermark
    /// (at once if it already has). A handler that streams a response of
    /// any length asks for this, appends a chunk each time it is called,
    /// and asks again: its memory stays within the watermarks however
    /// slowly the client reads.
    pub fn notify_drained(&mut self) {
        self.core.request_drain_notice();
    }
}

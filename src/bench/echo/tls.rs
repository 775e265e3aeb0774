//! `evloop bench echo --tls`: the client's configuration (rustls on the
//! ring provider, TLS 1.3 and 1.2), and the TLS session of one connection,
//! which sits between the socket's bytes and the echo check of [`Conn`].
//!
//! Both drivers use a [`Session`] the same way: queued plaintext goes in
//! with [`encrypt`](Session::encrypt), records come out with
//! [`write_tls`](Session::write_tls) (straight into the socket on epoll,
//! into the send buffer on io_uring), and bytes read from the socket go to
//! [`receive`](Session::receive), which decrypts them into the caller's
//! buffer and hands the plaintext to [`Conn::check`]. The per-request path
//! allocates only where rustls's buffered API does (a record's `Vec` on
//! the way out).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, RootCertStore,
    SignatureScheme,
};

use super::conn::{Completions, Conn};
use super::payload::Payload;

/// The most plaintext handed to rustls at once (pipelined messages
/// gathered).
const PLAINTEXT_CHUNK: usize = 16 * 1024;

/// How the server's certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Against the roots of a PEM file (`--ca`).
    Roots(PathBuf),
    /// Not at all (`--insecure`); handshake signatures still are.
    Anything,
}

/// What every connection's TLS session is made of.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// The client's configuration, shared by all threads.
    pub config: Arc<ClientConfig>,
    /// The name sent (SNI, where it is a DNS name) and checked.
    pub server_name: ServerName<'static>,
    /// A new connection, with its own handshake, per request.
    pub new_connection: bool,
}

impl TlsPlan {
    /// The plan for `--tls` with `trust`, `server_name` and, if `resume`,
    /// session resumption (tickets) across a thread's connections.
    pub fn new(
        trust: &Trust,
        server_name: &str,
        new_connection: bool,
        resume: bool,
    ) -> Result<TlsPlan, String> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("--sni {server_name}: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = match trust {
            Trust::Roots(file) => {
                let roots = Arc::new(roots(file)?);
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("--ca {}: {e}", file.display()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
            }
            Trust::Anything => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                })),
        }
        .with_no_client_auth();
        config.resumption = if resume {
            Resumption::default()
        } else {
            Resumption::disabled()
        };
        Ok(TlsPlan {
            config: Arc::new(config),
            server_name,
            new_connection,
        })
    }
}

/// The certificates of the PEM file `file`, as trust anchors.
fn roots(file: &Path) -> Result<RootCertStore, String> {
    let at = |e: &dyn std::fmt::Display| format!("--ca {}: {e}", file.display());
    let pem = fs::read(file).map_err(|e| at(&e))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| at(&e))?).map_err(|e| at(&e))?;
    }
    if roots.is_empty() {
        return Err(at(&"no certificate in the file"));
    }
    Ok(roots)
}

/// `--insecure`: any certificate chain is taken as the server's, but the
/// handshake's signatures are checked with the provider as usual (a load
/// generator must make the server do all its work, and cannot tell a broken
/// server from a fast one otherwise).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A completed handshake, as reported to [`Completions::handshake`].
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    /// When the session was made (its `ClientHello` queued).
    pub started: Instant,
    /// It resumed an earlier session.
    pub resumed: bool,
    /// The protocol version and cipher suite, e.g. `TLSv1_3
    /// TLS13_AES_256_GCM_SHA384`.
    pub negotiated: (&'static str, &'static str),
}

/// One connection's TLS session.
#[derive(Debug)]
pub struct Session {
    tls: ClientConnection,
    started: Instant,
    handshaken: bool,
}

impl Session {
    /// A client session of `plan`, started `now`: its `ClientHello` is
    /// queued.
    pub fn new(plan: &TlsPlan, now: Instant) -> io::Result<Session> {
        let tls = ClientConnection::new(plan.config.clone(), plan.server_name.clone())
            .map_err(io::Error::other)?;
        Ok(Session {
            tls,
            started: now,
            handshaken: false,
        })
    }

    /// Whether the handshake completed.
    pub fn handshaken(&self) -> bool {
        self.handshaken
    }

    /// Hands `conn`'s queued plaintext to rustls, as much as it takes
    /// (until the handshake completes it keeps it; then it encrypts it).
    /// `scratch` gathers pipelined messages.
    pub fn encrypt(
        &mut self,
        conn: &mut Conn,
        payload: &Payload,
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        while conn.has_unsent() {
            scratch.clear();
            conn.gather(payload, scratch, PLAINTEXT_CHUNK);
            let taken = self.tls.writer().write(scratch)?;
            if taken == 0 {
                break;
            }
            conn.sent(payload, taken);
        }
        Ok(())
    }

    /// Whether records wait to be sent.
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Writes waiting records to `out`; the count written, as
    /// [`ClientConnection::write_tls`] returns it.
    pub fn write_tls(&mut self, out: &mut impl Write) -> io::Result<usize> {
        self.tls.write_tls(out)
    }

    /// Queues a `close_notify` alert: the connection ends cleanly.
    pub fn close(&mut self) {
        self.tls.send_close_notify();
    }

    /// Takes `bytes` read from the socket at `now`: advances the handshake
    /// (reporting its completion), decrypts records into `plain` and checks
    /// their plaintext. A TLS error, or the server's `close_notify`, is an
    /// error; records to send in reply wait in [`wants_write`](Self::wants_write).
    pub fn receive(
        &mut self,
        mut bytes: &[u8],
        conn: &mut Conn,
        payload: &Payload,
        plain: &mut [u8],
        now: Instant,
        completions: &mut impl Completions,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.tls.read_tls(&mut bytes)? == 0 {
                return Err(io::Error::other("TLS: no room for the server's records"));
            }
            self.tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if !self.handshaken && !self.tls.is_handshaking() {
                self.handshaken = true;
                completions.handshake(
                    Handshake {
                        started: self.started,
                        resumed: self.tls.handshake_kind() == Some(HandshakeKind::Resumed),
                        negotiated: (
                            self.tls
                                .protocol_version()
                                .and_then(|v| v.as_str())
                                .unwrap_or("unknown"),
                            self.tls
                                .negotiated_cipher_suite()
                                .and_then(|s| s.suite().as_str())
                                .unwrap_or("unknown"),
                        ),
                    },
                    now,
                );
            }
            loop {
                match self.tls.reader().read(plain) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection (TLS close_notify)",
                        ));
                    }
                    Ok(n) => conn.check(payload, &plain[..n], now, completions),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

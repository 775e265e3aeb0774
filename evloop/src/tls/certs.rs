//! Certificates with their keys: read from PEM, chosen by the name the
//! client asks for (SNI), and replaced in place while the server runs.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates a [`Tls`](super::Tls) layer serves, each with its
/// private key, chosen per connection by the name the client asks for
/// (SNI): a handle, cheap to clone, shared by every connection and by
/// whoever reloads them.
///
/// * Each certificate serves the DNS names of its subject alternative
///   names (`*.example.com` covers one label); a client that asks for
///   another name, or none, gets the first certificate.
/// * A certificate file holds the chain: the server's certificate first,
///   then the intermediates, as PEM (`BEGIN CERTIFICATE`). A key file holds
///   one PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1
///   (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`); RSA,
///   ECDSA P-256/P-384 or Ed25519. A key that does not match its
///   certificate is refused.
/// * [`reload`](Self::reload) reads the files again: handshakes from then on
///   get the new certificates (those under way and connections already open
///   keep theirs). If any file is missing or wrong, nothing changes.
#[derive(Clone)]
pub struct Certificates {
    shared: Arc<Shared>,
}

struct Shared {
    /// Where they were read from: what `reload` reads again.
    files: Option<Vec<(PathBuf, PathBuf)>>,
    /// Read once per handshake; replaced whole by `reload`.
    current: RwLock<Arc<CertSet>>,
}

/// Certificates in the order given: the first is the default.
#[derive(Debug)]
struct CertSet {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// The DNS names it serves, in lower case.
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.shared.files)
            .field("names", &self.names())
            .finish()
    }
}

impl Certificates {
    /// Reads pairs of files — a certificate chain and its private key, as
    /// PEM — into the certificates to serve, in order: the first is the
    /// default. Errors name the file and what is wrong with it.
    pub fn load<C, K>(pairs: impl IntoIterator<Item = (C, K)>) -> io::Result<Certificates>
    where
        C: Into<PathBuf>,
        K: Into<PathBuf>,
    {
        let files: Vec<(PathBuf, PathBuf)> = pairs
            .into_iter()
            .map(|(c, k)| (c.into(), k.into()))
            .collect();
        let set = read_files(&files)?;
        Ok(Certificates::with(Some(files), set))
    }

    /// Certificates from PEM text in memory: pairs of a certificate chain
    /// and its private key, the first the default. They have no files to
    /// [`reload`](Self::reload) from.
    pub fn from_pem<C, K>(pairs: impl IntoIterator<Item = (C, K)>) -> io::Result<Certificates>
    where
        C: AsRef<[u8]>,
        K: AsRef<[u8]>,
    {
        let entries = pairs
            .into_iter()
            .enumerate()
            .map(|(i, (cert, key))| {
                let n = i + 1;
                entry(
                    cert.as_ref(),
                    key.as_ref(),
                    &format!("certificate {n}"),
                    &format!("key {n}"),
                )
            })
            .collect::<io::Result<Vec<Entry>>>()?;
        Ok(Certificates::with(None, CertSet::new(entries)?))
    }

    fn with(files: Option<Vec<(PathBuf, PathBuf)>>, set: CertSet) -> Certificates {
        Certificates {
            shared: Arc::new(Shared {
                files,
                current: RwLock::new(Arc::new(set)),
            }),
        }
    }

    /// Reads the certificate and key files again and serves what they hold
    /// from the next handshake on. If any cannot be read or is wrong, the
    /// certificates served stay as they were, and the error says which file
    /// and why. Certificates made [`from_pem`](Self::from_pem) have no files:
    /// an error of kind [`Unsupported`](io::ErrorKind::Unsupported).
    pub fn reload(&self) -> io::Result<()> {
        let Some(files) = &self.shared.files else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "certificates given in memory: no files to reload",
            ));
        };
        let set = read_files(files)?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    /// The DNS names each certificate serves, in order (the first
    /// certificate also serves clients that ask for none of them).
    pub fn names(&self) -> Vec<Vec<String>> {
        let set = self.current();
        set.entries.iter().map(|e| e.names.clone()).collect()
    }

    /// What the next handshake gets.
    fn current(&self) -> Arc<CertSet> {
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// The resolver a rustls server configuration asks for each handshake.
    pub(super) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }
}

/// Picks a certificate for each handshake from the current set.
#[derive(Debug)]
struct Resolver(Certificates);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().pick(hello.server_name()))
    }
}

impl CertSet {
    fn new(entries: Vec<Entry>) -> io::Result<CertSet> {
        if entries.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no certificate given",
            ));
        }
        Ok(CertSet { entries })
    }

    /// The certificate for a client that asked for `name`: the first that
    /// names it, else the first whose wildcard covers it, else the default.
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let chosen = name.and_then(|name| {
            let serves = |e: &&Entry| e.names.iter().any(|n| n.eq_ignore_ascii_case(name));
            let covers = |e: &&Entry| e.names.iter().any(|n| wildcard_covers(n, name));
            let entries = &self.entries;
            entries
                .iter()
                .find(serves)
                .or_else(|| entries.iter().find(covers))
        });
        Arc::clone(&chosen.unwrap_or(&self.entries[0]).key)
    }
}

/// Whether `pattern` (`*.example.com`) covers `name` (`www.example.com`):
/// exactly one label in place of the star.
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    name.split_once('.')
        .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix))
}

fn read_files(files: &[(PathBuf, PathBuf)]) -> io::Result<CertSet> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    let entries = files
        .iter()
        .map(|(cert, key)| {
            entry(
                &read(cert)?,
                &read(key)?,
                &cert.display().to_string(),
                &key.display().to_string(),
            )
        })
        .collect::<io::Result<Vec<Entry>>>()?;
    CertSet::new(entries)
}

/// A certificate chain and its key, checked: the key is one rustls can
/// sign with, and matches the certificate.
fn entry(cert_pem: &[u8], key_pem: &[u8], cert_name: &str, key_name: &str) -> io::Result<Entry> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{cert_name}: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(format!(
            "{cert_name}: no certificate (PEM \"BEGIN CERTIFICATE\")"
        )));
    };
    let end_entity = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| invalid(format!("{cert_name}: not a certificate: {e}")))?;
    let names = end_entity
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        invalid(format!(
            "{key_name}: no private key (PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\"): {e}"
        ))
    })?;
    let signer = any_supported_type(&key)
        .map_err(|e| invalid(format!("{key_name}: not a key this server can use: {e}")))?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(invalid(format!(
                "{key_name}: not the key of the certificate in {cert_name}: {e}"
            )));
        }
    }
    Ok(Entry {
        names,
        key: Arc::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_covers_one_label() {
        assert!(wildcard_covers("*.example.com", "www.example.com"));
        assert!(wildcard_covers("*.example.com", "WWW.Example.COM"));
        assert!(!wildcard_covers("*.example.com", "example.com"));
        assert!(!wildcard_covers("*.example.com", "a.b.example.com"));
        assert!(!wildcard_covers("*.example.com", ".example.com"));
        assert!(!wildcard_covers("www.example.com", "www.example.com"));
    }
}

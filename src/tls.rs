//! `evloop serve --tls-cert/--tls-key`: the options, the certificates
//! they name, and the layer they put around a service.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use evloop::tls::{Certificates, Tls};
use evloop::{Address, Service};

use crate::{addr, duration};

/// Options of TLS, for every service.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Serve TLS (1.3 and 1.2) on every listener, with this certificate
    /// chain: PEM, the certificate first, then its intermediates. May
    /// repeat, each with its --tls-key (paired in order): each certificate
    /// serves the DNS names it carries (SNI), the first also the clients
    /// that ask for another name or none. SIGUSR1 reads the files again;
    /// if one is wrong, the old certificates stay (the log says why).
    /// Behind --proxy-protocol, the PROXY header comes first.
    #[arg(long, value_name = "FILE")]
    tls_cert: Vec<PathBuf>,
    /// The private key of the --tls-cert in the same position: PEM, PKCS#8,
    /// PKCS#1 (RSA) or SEC1 (EC).
    #[arg(long, value_name = "FILE")]
    tls_key: Vec<PathBuf>,
    /// How long a client has to complete its TLS handshake, from its accept
    /// (bytes trickling in do not extend it), at least 1ms. Default: 10s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_positive)]
    tls_handshake_timeout: Option<Duration>,
    /// Serve TLS on this listener only (one of the --listen addresses, as
    /// written; may repeat): the others serve plaintext, e.g. HTTP on one
    /// port and HTTPS on another. Default: TLS on every listener.
    #[arg(long, value_name = "ADDR", value_parser = addr::parse)]
    tls_on: Vec<Address>,
}

/// TLS as the options ask for it.
pub struct TlsSetup {
    pub certificates: Certificates,
    timeout: Option<Duration>,
    /// The listeners it is on, as indexes into `--listen`; all if `None`.
    on: Option<Vec<usize>>,
}

impl TlsArgs {
    /// What the options ask for (`None`: no TLS) with the certificates
    /// read, or why they cannot be.
    pub fn resolve(&self, listen: &[Address]) -> Result<Option<TlsSetup>, String> {
        if self.tls_cert.is_empty() && self.tls_key.is_empty() {
            if self.tls_handshake_timeout.is_some() {
                return Err("--tls-handshake-timeout needs --tls-cert and --tls-key".to_owned());
            }
            if !self.tls_on.is_empty() {
                return Err("--tls-on needs --tls-cert and --tls-key".to_owned());
            }
            return Ok(None);
        }
        let on = match self.tls_on.is_empty() {
            true => None,
            false => Some(
                (self.tls_on.iter())
                    .map(|addr| {
                        listen.iter().position(|l| l == addr).ok_or_else(|| {
                            format!("--tls-on {addr}: not one of the --listen addresses")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if self.tls_cert.len() != self.tls_key.len() {
            return Err(format!(
                "{} --tls-cert and {} --tls-key: each certificate needs its key, given in the same order",
                self.tls_cert.len(),
                self.tls_key.len()
            ));
        }
        let pairs = self.tls_cert.iter().zip(&self.tls_key);
        let certificates = Certificates::load(pairs).map_err(|e| format!("TLS: {e}"))?;
        Ok(Some(TlsSetup {
            certificates,
            timeout: self.tls_handshake_timeout,
            on,
        }))
    }
}

impl TlsSetup {
    /// The layer around the service `name`: ALPN `http/1.1` for http.
    pub fn wrap<S: Service>(&self, service: S, name: &str) -> std::io::Result<Tls<S>> {
        let mut layer = Tls::builder(self.certificates.clone());
        if let Some(timeout) = self.timeout {
            layer = layer.handshake_timeout(timeout);
        }
        if name == "http" {
            layer = layer.alpn(["http/1.1"]);
        }
        layer.build(service)
    }

    /// The layer on the listeners `--tls-on` names, given the addresses
    /// bound (in `--listen` order); unchanged without `--tls-on`.
    pub fn restrict<S: Service>(&self, layer: Tls<S>, bound: &[Address]) -> Tls<S> {
        match &self.on {
            Some(on) => layer.only_on(on.iter().map(|&i| bound[i].clone())),
            None => layer,
        }
    }

    /// Whether the listener at index `i` of the addresses bound has it.
    pub fn is_on(&self, i: usize) -> bool {
        self.on.as_ref().is_none_or(|on| on.contains(&i))
    }
}

/// The DNS names of each certificate, for the log: `a.test b.test; c.test`.
pub fn certificate_names(certificates: &Certificates) -> String {
    let names: Vec<String> = (certificates.names().iter())
        .map(|names| match names.is_empty() {
            true => "(no DNS name)".to_owned(),
            false => names.join(" "),
        })
        .collect();
    names.join("; ")
}

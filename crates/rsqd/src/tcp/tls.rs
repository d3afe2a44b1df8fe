//! TLS: the rustls server configuration built from nsqd's `--tls-*` flags,
//! and what a connection's TLS session reports in `/stats`.
//!
//! Mapping of nsqd's options onto rustls:
//! - `--tls-cert` + `--tls-key` enable TLS (granted to IDENTIFY `tls_v1`) and HTTPS;
//! - `--tls-client-auth-policy=require` asks for a client certificate and
//!   accepts any (signatures are still checked, the chain is not), as Go's
//!   `RequireAnyClientCert`; `require-verify` checks it against
//!   `--tls-root-ca-file` (`RequireAndVerifyClientCert`); either makes TLS
//!   required when `--tls-required` was left off, as nsqd does;
//! - `--tls-min-version`: rustls has no TLS 1.0/1.1, so anything below
//!   `tls1.3` means "1.2 and 1.3".

use std::sync::Arc;

use anyhow::{Context, bail};
use rsq_service::{Listener, PeerAddr, SocketFile, Stream};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::options::{Options, TlsClientAuthPolicy};
pub use rsq_protocol::TlsRequired;

/// The effective `--tls-required`: a client-auth policy forces it on.
pub fn tls_required(opts: &Options) -> TlsRequired {
    match opts.tls_required {
        TlsRequired::No if opts.tls_client_auth_policy != TlsClientAuthPolicy::None => {
            TlsRequired::Yes
        }
        level => level,
    }
}

/// The server configuration, or `None` when no certificate is configured.
/// Errors (unreadable or invalid files) are startup errors.
pub fn server_config(opts: &Options) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) else {
        if opts.tls_client_auth_policy != TlsClientAuthPolicy::None
            || opts.tls_required > TlsRequired::No
        {
            bail!("--tls-required and --tls-client-auth-policy need --tls-cert and --tls-key");
        }
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read --tls-cert {}", cert.display()))?;
    if chain.is_empty() {
        bail!("--tls-cert {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read --tls-key {}", key.display()))?;
    let provider = Arc::new(ring::default_provider());
    let versions = opts.tls_min_version.rustls_versions();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?;
    let builder = match opts.tls_client_auth_policy {
        TlsClientAuthPolicy::Require => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert {
                algorithms: provider.signature_verification_algorithms,
            }))
        }
        TlsClientAuthPolicy::RequireVerify => {
            let Some(ca) = &opts.tls_root_ca_file else {
                bail!("--tls-client-auth-policy=require-verify needs --tls-root-ca-file");
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read --tls-root-ca-file {}", ca.display()))?
            {
                roots
                    .add(cert.context("bad certificate in --tls-root-ca-file")?)
                    .context("bad certificate in --tls-root-ca-file")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        TlsClientAuthPolicy::None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .context("--tls-cert and --tls-key do not make a usable pair")?;
    Ok(Some(Arc::new(config)))
}

/// Go's `RequireAnyClientCert`: a certificate must be presented and must
/// sign the handshake, but its chain is not checked.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What `/stats` shows about a client's TLS session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLS1.2` or `TLS1.3`, as nsqd names them.
    pub version: String,
    /// The cipher suite in Go's spelling (`TLS_AES_128_GCM_SHA256`).
    pub cipher_suite: String,
    /// The ALPN protocol, if any.
    pub negotiated_protocol: String,
    /// The subject common name of the client's certificate, if it sent
    /// one; nsqd passes it to the auth server as `common_name`.
    pub common_name: String,
}

impl TlsInfo {
    /// Reads the negotiated parameters of an established session.
    pub fn of(conn: &ServerConnection) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3".to_string(),
            Some(v) => format!("{v:?}"),
            None => String::new(),
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .map(|s| {
                let name = format!("{:?}", s.suite());
                match name.strip_prefix("TLS13_") {
                    Some(rest) => format!("TLS_{rest}"),
                    None => name,
                }
            })
            .unwrap_or_default();
        let negotiated_protocol = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let common_name = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| common_name(cert))
            .unwrap_or_default();
        TlsInfo {
            version,
            cipher_suite,
            negotiated_protocol,
            common_name,
        }
    }
}

/// The subject common name (OID 2.5.4.3) of a DER certificate; empty when
/// it has none or cannot be read. The certificate may come from anyone
/// (`--tls-client-auth-policy=require` does not verify it), so nothing here
/// trusts its structure: any error gives an empty name.
pub fn common_name(der: &[u8]) -> String {
    use yasna::models::ObjectIdentifier;
    let cn = ObjectIdentifier::from_slice(&[2, 5, 4, 3]);
    let subject = |r: yasna::BERReader| {
        r.read_sequence(|r| {
            // version [0] EXPLICIT (optional), serial, signature algorithm,
            // issuer, validity, then the subject.
            r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_der()))?;
            for _ in 0..4 {
                r.next().read_der()?;
            }
            let mut name = String::new();
            r.next().read_sequence_of(|r| {
                r.read_set_of(|r| {
                    r.read_sequence(|r| {
                        let oid = r.next().read_oid()?;
                        let value = r.next().read_der()?;
                        if oid == cn && name.is_empty() {
                            name = directory_string(&value);
                        }
                        Ok(())
                    })
                })
            })?;
            // Public key, unique ids, extensions: not needed.
            while r.read_optional(|r| r.read_der())?.is_some() {}
            Ok(name)
        })
    };
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let name = subject(r.next())?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(name)
        })
    })
    .unwrap_or_default()
}

/// A DirectoryString's text, whichever string type encodes it.
fn directory_string(der: &[u8]) -> String {
    yasna::parse_der(der, |r| r.read_utf8string())
        .or_else(|_| yasna::parse_der(der, |r| r.read_printable_string()))
        .or_else(|_| yasna::parse_der(der, |r| r.read_ia5_string()))
        .unwrap_or_default()
}

/// A TLS listener for the HTTPS server (an `axum::serve` listener).
/// Handshakes run in their own tasks, so a slow or broken client delays no
/// other; failed handshakes are logged and dropped.
/// On a unix socket, peers (and the listener's own address, for axum)
/// are [`PeerAddr::Unix`], and dropping the listener removes its socket
/// file.
pub struct TlsListener {
    local: PeerAddr,
    ready: mpsc::Receiver<(TlsStream<Stream>, PeerAddr)>,
    _accept: tokio::task::JoinHandle<()>,
    /// Held here, not by the accept task, so that dropping the listener
    /// removes the file at once rather than when the aborted task is.
    _file: Option<SocketFile>,
}

impl TlsListener {
    /// Starts accepting TLS connections on `listener`.
    pub fn new(listener: Listener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (local, accept, file) = match listener {
            Listener::Tcp(l) => (
                PeerAddr::Tcp(l.local_addr()?),
                tokio::spawn(accept_loop(l, acceptor, tx, |s, a| {
                    (Stream::Tcp(s), PeerAddr::Tcp(a))
                })),
                None,
            ),
            Listener::Unix(l, file) => (
                PeerAddr::Unix,
                tokio::spawn(accept_loop(l, acceptor, tx, |s, _| {
                    (Stream::Unix(s), PeerAddr::Unix)
                })),
                Some(file),
            ),
        };
        Ok(TlsListener {
            local,
            ready,
            _accept: accept,
            _file: file,
        })
    }
}

/// Accepts on `listener` (axum's listeners back off on accept errors) and
/// runs each handshake in a task of its own, sending the streams that
/// complete one to `tx`.
async fn accept_loop<L: axum::serve::Listener>(
    mut listener: L,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<Stream>, PeerAddr)>,
    wrap: fn(L::Io, L::Addr) -> (Stream, PeerAddr),
) {
    loop {
        let (io, addr) = listener.accept().await;
        let (stream, addr) = wrap(io, addr);
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "HTTPS handshake failed"),
                Err(_) => tracing::debug!(%addr, "HTTPS handshake timed out"),
            }
        });
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._accept.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Stream>;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task is gone only when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::common_name;

    #[test]
    fn common_name_is_read_from_the_subject() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "rsq");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.clone().self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), "alice");

        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), "");
    }

    #[test]
    fn garbage_gives_an_empty_name() {
        for der in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x02\x01\x01",
            &[0x30, 0x80, 0, 0],
        ] {
            assert_eq!(common_name(der), "");
        }
    }
}

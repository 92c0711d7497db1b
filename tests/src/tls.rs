//! TLS for the tests: a throwaway certificate authority, certificates it issues, and an HTTPS
//! client that reports what the handshake chose.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};
use rustls::{pki_types::ServerName, ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use tokio::net::TcpStream;

use crate::Reply;

/// Key type of an issued certificate.
#[derive(Clone, Copy, Debug)]
pub enum KeyType {
    /// ECDSA P-256.
    Ecdsa,
    /// RSA 2048.
    Rsa,
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The chain (leaf only: the CA is the trust anchor).
    pub chain: String,
    /// The private key.
    pub key: String,
}

impl Issued {
    /// The leaf certificate, DER.
    pub fn leaf_der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.chain.as_bytes())
            .expect("PEM certificate")
            .to_vec()
    }
}

/// A test certificate authority.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weir test CA");
        let key = KeyPair::generate().expect("CA key");
        Self {
            ca: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `names` (DNS names and IP addresses; `scheme://…` names are
    /// URI subject alternative names).
    pub fn issue(&self, names: &[&str], key_type: KeyType) -> Issued {
        let (uris, dns): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.contains("://"));
        let mut params =
            CertificateParams::new(dns.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        for uri in uris {
            let uri = rcgen::string::Ia5String::try_from(uri).expect("an ASCII URI");
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        let key = match key_type {
            KeyType::Ecdsa => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            KeyType::Rsa => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
        }
        .expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        Issued {
            chain: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client configuration trusting this CA, offering `alpn`, with TLS 1.2 only when
    /// `tls12` (else 1.2 and 1.3). Keep it to resume sessions.
    pub fn client(&self, alpn: &[&str], tls12: bool) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem().as_bytes()).expect("CA PEM"))
            .expect("CA certificate");
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut config = ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// What an HTTPS request saw.
#[derive(Debug)]
pub struct HttpsReply {
    /// The response.
    pub reply: Reply,
    /// The server's leaf certificate, DER.
    pub leaf: Vec<u8>,
    /// The ALPN protocol chosen.
    pub alpn: Option<String>,
    /// The TLS version.
    pub version: String,
    /// Whether the session was resumed.
    pub resumed: bool,
}

/// One GET over a fresh TLS connection to `addr`, with SNI `sni` (the certificate must be
/// valid for it) and `Host: sni`. HTTP/2 when ALPN chose h2.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpsReply, String> {
    https_request(addr, sni, config, "GET", path, headers, Bytes::new()).await
}

/// Like [`https_get`], with any method and a body.
pub async fn https_request(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpsReply, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let mut req = Request::builder().method(method).uri(path);
    let h2 = alpn.as_deref() == Some("h2");
    if h2 {
        req = req.uri(format!("https://{sni}{path}"));
    } else {
        req = req.header("host", sni);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await
    }
    .map_err(|e| e.to_string())?;
    Ok(HttpsReply {
        reply: Reply::read(response).await,
        leaf,
        alpn,
        version,
        resumed,
    })
}

/// An HTTPS app on a free loopback port with `issued` as its certificate: `/healthz` answers
/// 200, every other path 503. Serves until the test's runtime ends.
pub async fn https_app(issued: &Issued) -> SocketAddr {
    https_server(issued, "127.0.0.1:0".parse().unwrap(), |path, _| {
        let status = if path == "/healthz" { 200 } else { 503 };
        (status, String::new())
    })
    .await
}

/// An HTTPS echo on `addr` (port 0: a free one) with `issued` as its certificate: every request
/// gets 200 and `{"backend": NAME, "path": PATH, "sni": SNI}` (the name its connection's
/// ClientHello sent, or null), as weir-echo answers in cleartext. Serves
/// until the test's runtime ends.
pub async fn https_echo(name: &str, issued: &Issued, addr: SocketAddr) -> SocketAddr {
    let name = name.to_string();
    https_server(issued, addr, move |path, sni| {
        (
            200,
            serde_json::json!({"backend": name, "path": path, "sni": sni}).to_string(),
        )
    })
    .await
}

/// An HTTP/1.1 server over TLS on `addr`; `answer` gives each request's status and body by
/// its path and the SNI name its connection sent.
async fn https_server(
    issued: &Issued,
    addr: SocketAddr,
    answer: impl Fn(&str, Option<&str>) -> (u16, String) + Clone + Send + Sync + 'static,
) -> SocketAddr {
    let chain = CertificateDer::pem_slice_iter(issued.chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM chain");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (status, body) = answer(req.uri().path(), sni.as_deref());
                        let response = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)));
                        std::future::ready(response)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// A server-first TCP backend (as upstream's TCP echo) on a free loopback port: it greets with
/// `hello NAME`, then sends every line back. Serves until the test's runtime ends.
pub async fn tcp_backend(name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo_lines(stream, format!("hello {name}\n")));
        }
    });
    addr
}

/// A server-first line echo on `stream` (as upstream's TCP echo): it greets with `greeting`
/// (a line), then sends every line back until the stream ends.
pub async fn echo_lines<S>(stream: S, greeting: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = tokio::io::split(stream);
    if write.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

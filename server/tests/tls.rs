//! HTTPS with rustls: the server answers over TLS with the configured certificate, and a plain-text
//! client gets nothing from it.
#![cfg(feature = "tls")]

mod support;

use std::io::{Read, Write};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

#[test]
fn the_server_speaks_tls_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = support::Running::start(tempfile::tempdir().unwrap(), |c| {
        c.tls = Some(quorum_server::TlsConfig { cert: cert_path.clone(), key: key_path.clone() });
    });
    let addr = server.addr;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let text = server.runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut text = String::new();
        tls.read_to_string(&mut text).await.unwrap();
        text
    });
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    plain.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn a_remote_member_reaches_a_tls_server_trusting_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let home = tempfile::tempdir().unwrap();
    drop(support::common::market_engine(home.path()));
    let upstream = support::Running::start(home, |c| {
        c.tls = Some(quorum_server::TlsConfig { cert: cert_path.clone(), key: key_path.clone() });
    });
    let local_home = tempfile::tempdir().unwrap();
    let engine = support::common::market_engine(local_home.path());
    let features = engine.ensemble("market").unwrap().feature_names().to_vec();
    let register = |url: String| {
        engine.register_model(
            quorum::ModelRegistration::remote("up", url, None, features.clone())
                .with_output("prediction".parse().unwrap()),
        )
    };
    let url = format!("https://localhost:{}/v2/models/market", upstream.addr.port());

    // The system's bundle does not trust a self-signed certificate: the handshake fails.
    std::env::remove_var("SSL_CERT_FILE");
    let refused = register(url.clone()).unwrap_err();
    assert!(
        matches!(refused, quorum::Error::ModelLoad { .. }) && refused.to_string().contains("certificate"),
        "{refused}"
    );
    std::env::set_var("SSL_CERT_FILE", &cert_path);
    let meta = register(url.clone()).unwrap();
    assert_eq!(meta.remote.unwrap().url, url);
    let members = ["technical", "up"].map(|m| m.parse::<quorum::MemberSpec>().unwrap());
    engine.create_ensemble(quorum::EnsembleConfig::new("desk", members)).unwrap();
    for f in support::common::holdout_features(3) {
        let p = engine.predict("desk", &f).unwrap();
        assert!(!p.degraded, "{:?}", p.model_contributions[1].error);
        let remote = p.model_contributions[1].prediction.unwrap();
        assert!((remote - engine.predict("market", &f).unwrap().prediction).abs() < 1e-6);
    }
}

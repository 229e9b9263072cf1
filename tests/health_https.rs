//! HTTPS health checks: probes speak TLS to a target serving a certificate made at test
//! time (self-signed, as targets behind ALB often are), and its status decides health.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::*;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS-only target whose `/health` answers `status`, counting TLS handshakes.
async fn tls_target(status: Arc<AtomicU16>) -> (SocketAddr, Arc<AtomicUsize>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, status, counted) =
                (acceptor.clone(), Arc::clone(&status), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |_req| {
                    let code = status.load(Ordering::SeqCst);
                    async move {
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                        *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (addr, handshakes)
}

fn config(target: SocketAddr, protocol: &str) -> String {
    let check = format!(
        r#"health_check = {{ protocol = "{protocol}", path = "/health", interval = "100ms", timeout = "90ms", healthy_threshold = 2, unhealthy_threshold = 2 }}"#
    );
    one_group_config(&[target], "", &check)
}

async fn state(proxy: &Proxy) -> (String, String) {
    let r = get(&proxy.admin_url("/v1/targets")).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let t = &v["target_groups"][0]["targets"][0];
    (
        t["state"].as_str().unwrap().to_owned(),
        t["reason"].as_str().unwrap().to_owned(),
    )
}

async fn wait_for(proxy: &Proxy, want: &str) -> (String, String) {
    let mut last = state(proxy).await;
    for _ in 0..60 {
        if last.0 == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = state(proxy).await;
    }
    last
}

#[tokio::test]
async fn https_checks_speak_tls_to_a_self_signed_target_and_follow_its_status() {
    let status = Arc::new(AtomicU16::new(200));
    let (addr, handshakes) = tls_target(Arc::clone(&status)).await;
    let proxy = start_proxy(&config(addr, "https")).await;
    assert_eq!(wait_for(&proxy, "healthy").await.0, "healthy");
    assert!(
        handshakes.load(Ordering::SeqCst) >= 2,
        "each probe is its own TLS connection"
    );
    status.store(503, Ordering::SeqCst);
    assert_eq!(
        wait_for(&proxy, "unhealthy").await,
        (
            "unhealthy".to_owned(),
            "Target.ResponseCodeMismatch".to_owned()
        )
    );
    proxy.stop().await;
}

#[tokio::test]
async fn plain_http_checks_against_a_tls_target_fail() {
    let (addr, _) = tls_target(Arc::new(AtomicU16::new(200))).await;
    let proxy = start_proxy(&config(addr, "http")).await;
    let (state, _) = wait_for(&proxy, "unhealthy").await;
    assert_eq!(state, "unhealthy");
    proxy.stop().await;
}

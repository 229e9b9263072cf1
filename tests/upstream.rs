//! Upstream connections: pooled keep-alive connections to targets are reused across
//! requests, one per concurrent request, and a connection the target closed while idle
//! is replaced without failing a request.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::*;
use tokio::net::TcpListener;

/// A backend that counts the TCP connections it accepts and can close them after each
/// response (`close_after_each`).
async fn counting_backend(close_after_each: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                    if close_after_each {
                        resp.headers_mut()
                            .insert("connection", "close".parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn config(target: SocketAddr) -> String {
    one_group_config(&[target], "", "")
}

#[tokio::test]
async fn sequential_requests_share_one_target_connection() {
    let (addr, accepted) = counting_backend(false).await;
    let proxy = start_proxy(&config(addr)).await;
    for _ in 0..50 {
        let r = get(&proxy.url("/")).await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_open_at_most_one_connection_each() {
    let (addr, accepted) = counting_backend(false).await;
    let proxy = start_proxy(&config(addr)).await;
    for _ in 0..5 {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                let url = proxy.url("/");
                tokio::spawn(async move { get(&url).await.status.as_u16() })
            })
            .collect();
        for r in batch {
            assert_eq!(r.await.unwrap(), 200);
        }
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&opened),
        "{opened} connections for 8 concurrent requests"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn connections_the_target_closes_are_replaced_without_failing_requests() {
    let (addr, accepted) = counting_backend(true).await;
    let proxy = start_proxy(&config(addr)).await;
    for _ in 0..20 {
        let r = get(&proxy.url("/")).await;
        assert_eq!(r.status.as_u16(), 200);
        // Give the closed connection time to be noticed, as an idle keep-alive expiry would.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
    proxy.stop().await;
}

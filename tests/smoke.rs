//! Smoke test: one request through the proxy.
use crate::support;
use support::*;

#[tokio::test]
async fn forwards_a_request_to_a_static_target() {
    let b = backend("one").await;
    let proxy = start_proxy(&one_group_config(&[b.addr], "", "")).await;
    let r = get(&proxy.url("/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "one");
    assert_eq!(b.hits(), 1);
    proxy.stop().await;
}

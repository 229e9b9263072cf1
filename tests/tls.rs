//! HTTPS listeners and TLS to targets, with certificates made by rcgen at test time:
//! SNI selection, ALPN, security policies, certificate rotation, mTLS, upstream
//! verification, and the forwarding headers and redirects of HTTPS.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::tls::{
    certificates_toml, client_config, connect, default_client, peer_leaf, Ca, Https,
};
use support::{backend, eventually, get, start_proxy, TempDir};

fn https_config(certificates: &str, listener_extra: &str, target: std::net::SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
protocol = "https"
{certificates}
{listener_extra}
default_action = {{ forward = "web" }}

[target_groups.web]
discovery = {{ static = ["{target}"] }}
"#
    )
}

#[tokio::test]
async fn sni_picks_the_exact_then_the_wildcard_then_the_default_certificate() {
    let dir = TempDir::new();
    let ca = Ca::new("test ca");
    let default = ca.issue(&["default.test"]);
    let exact = ca.issue(&["api.example.test", "www.example.test"]);
    let wildcard = ca.issue(&["*.example.test"]);
    let files = [
        default.write(&dir.0, "default"),
        wildcard.write(&dir.0, "wildcard"),
        exact.write(&dir.0, "exact"),
    ];
    let b = backend("b").await;
    let proxy = start_proxy(&https_config(&certificates_toml(&files), "", b.addr)).await;
    let addr = proxy.addrs[0];
    let cases = [
        (
            "api.example.test",
            &exact.der,
            "exact name (listed after the wildcard)",
        ),
        ("WWW.Example.Test", &exact.der, "exact name, other case"),
        ("img.example.test", &wildcard.der, "wildcard"),
        (
            "a.b.example.test",
            &default.der,
            "a wildcard covers one label only",
        ),
        ("other.test", &default.der, "unknown name"),
        ("127.0.0.1", &default.der, "no SNI"),
    ];
    for (sni, want, why) in cases {
        // Names the certificate does not cover still complete the handshake when the
        // client does not verify them; this client trusts the CA, so check the leaf.
        let insecure = insecure_client();
        let stream = connect(addr, sni, insecure).await.unwrap();
        assert_eq!(&peer_leaf(&stream), want, "{sni}: {why}");
    }
    // And a verifying client gets a full, working HTTPS exchange.
    let stream = connect(addr, "img.example.test", default_client(&ca))
        .await
        .unwrap();
    let (status, _, body) = Https::over(stream)
        .await
        .get("img.example.test", "/")
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "b"));
}

/// Accepts any server certificate (to look at which one was sent).
fn insecure_client() -> std::sync::Arc<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(ecslb::tls::AnyCertificate(provider)))
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

#[tokio::test]
async fn alpn_negotiates_h2_or_http1_and_requests_carry_https_forwarding_headers() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let files = [ca.issue(&["site.test"]).write(&dir.0, "site")];
    let b = backend("b").await;
    let proxy = start_proxy(&https_config(&certificates_toml(&files), "", b.addr)).await;
    let addr = proxy.addrs[0];
    for (offer, want) in [
        (&[&b"h2"[..], b"http/1.1"][..], "h2"),
        (&[&b"http/1.1"[..]][..], "http/1.1"),
        (&[&b"h2"[..]][..], "h2"),
    ] {
        let config = client_config(&ca, offer, rustls::DEFAULT_VERSIONS, None);
        let stream = connect(addr, "site.test", config).await.unwrap();
        assert_eq!(
            support::tls::alpn(&stream).as_deref(),
            Some(want.as_bytes())
        );
        let mut https = Https::over(stream).await;
        let (status, _, body) = https.get("site.test", "/echo-headers").await.unwrap();
        assert_eq!(status.as_u16(), 200, "over {want}");
        assert!(
            body.contains("x-forwarded-proto: https\n"),
            "over {want}: {body}"
        );
        let port = format!("x-forwarded-port: {}\n", addr.port());
        assert!(body.contains(&port), "over {want}: {body}");
        assert!(body.contains("host: site.test\n"), "over {want}: {body}");
    }
    // The HTTP2Only policy offers nothing else.
    let http1_only = client_config(&ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS, None);
    let proxy2 = start_proxy(&https_config(
        &certificates_toml(&files),
        r#"alpn_policy = "HTTP2Only""#,
        b.addr,
    ))
    .await;
    let refused = connect(proxy2.addrs[0], "site.test", http1_only).await;
    assert!(
        refused.is_err(),
        "an http/1.1-only client must fail ALPN against HTTP2Only"
    );
}

/// ALB's `x_amzn_tls_version_and_cipher_suite`: targets learn the client's TLS version
/// and cipher suite (OpenSSL names) in two headers; without it, they do not.
#[tokio::test]
async fn targets_get_the_tls_version_and_cipher_suite_when_the_listener_says_so() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let files = [ca.issue(&["site.test"]).write(&dir.0, "site")];
    let b = backend("b").await;
    for (listener_extra, versions, want) in [
        (
            "x_amzn_tls_version_and_cipher_suite = true",
            rustls::ALL_VERSIONS,
            Some(("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
        ),
        (
            "x_amzn_tls_version_and_cipher_suite = true",
            &[&rustls::version::TLS12][..],
            Some(("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")),
        ),
        ("", rustls::ALL_VERSIONS, None),
    ] {
        let config = https_config(&certificates_toml(&files), listener_extra, b.addr);
        let proxy = start_proxy(&config).await;
        let client = client_config(&ca, &[b"http/1.1"], versions, None);
        let stream = connect(proxy.addrs[0], "site.test", client).await.unwrap();
        let mut https = Https::over(stream).await;
        let (status, _, _) = https.get("site.test", "/").await.unwrap();
        assert_eq!(status.as_u16(), 200);
        let seen = b.last_headers();
        let got = |name: &str| seen.get(name).map(|v| v.to_str().unwrap().to_owned());
        let want = want.map(|(v, c)| (v.to_owned(), c.to_owned()));
        let both = got("x-amzn-tls-version").zip(got("x-amzn-tls-cipher-suite"));
        assert_eq!(both, want, "{listener_extra:?}");
    }
}

#[tokio::test]
async fn the_tls13_only_policy_refuses_a_tls12_client() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let files = [ca.issue(&["site.test"]).write(&dir.0, "site")];
    let b = backend("b").await;
    let tls12 = client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS12], None);
    let tls13 = client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS13], None);

    let strict = start_proxy(&https_config(
        &certificates_toml(&files),
        r#"tls_policy = "ELBSecurityPolicy-TLS13-1-3-2021-06""#,
        b.addr,
    ))
    .await;
    let refused = connect(strict.addrs[0], "site.test", tls12.clone()).await;
    assert!(
        refused.is_err(),
        "TLS 1.2 must be refused by the TLS 1.3-only policy"
    );
    let ok = connect(strict.addrs[0], "site.test", tls13.clone())
        .await
        .unwrap();
    assert_eq!(
        ok.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // The default policy takes both, and TLS 1.2 gets a forward-secret AEAD suite.
    let default = start_proxy(&https_config(&certificates_toml(&files), "", b.addr)).await;
    let ok12 = connect(default.addrs[0], "site.test", tls12).await.unwrap();
    let suite = ok12.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert!(
        format!("{suite:?}").starts_with("TLS_ECDHE_") && format!("{suite:?}").contains("GCM"),
        "{suite:?}"
    );
    connect(default.addrs[0], "site.test", tls13).await.unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes_and_open_connections_keep_going() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let first = ca.issue(&["site.test"]);
    let files = [first.write(&dir.0, "site")];
    let b = backend("b").await;
    let proxy = start_proxy(&https_config(&certificates_toml(&files), "", b.addr)).await;
    let addr = proxy.addrs[0];
    let open = connect(addr, "site.test", default_client(&ca))
        .await
        .unwrap();
    assert_eq!(peer_leaf(&open), first.der);
    let mut open = Https::over(open).await;
    assert_eq!(open.get("site.test", "/").await.unwrap().0.as_u16(), 200);

    // Renewal: the files are rewritten in place; the watcher picks them up.
    let second = ca.issue(&["site.test"]);
    second.write(&dir.0, "site");
    eventually("new handshakes get the renewed certificate", async || {
        let s = connect(addr, "site.test", default_client(&ca))
            .await
            .unwrap();
        peer_leaf(&s) == second.der
    })
    .await;
    assert_eq!(
        open.get("site.test", "/").await.unwrap().0.as_u16(),
        200,
        "the open connection survives"
    );

    // A broken renewal (key of another certificate) keeps the working one.
    let (cert, _) = &files[0];
    std::fs::write(cert, ca.issue(&["site.test"]).cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = connect(addr, "site.test", default_client(&ca))
        .await
        .unwrap();
    assert_eq!(
        peer_leaf(&s),
        second.der,
        "a certificate that does not match its key is not used"
    );
    // A reload with it is refused, saying which file is wrong.
    let err = proxy.reloader.reload().unwrap_err().to_string();
    assert!(
        err.contains("site.key") && err.contains("does not belong"),
        "{err}"
    );
    assert_eq!(open.get("site.test", "/").await.unwrap().0.as_u16(), 200);

    // A reload naming a new certificate file switches to it.
    let third = ca.issue(&["site.test"]);
    let files3 = [third.write(&dir.0, "third")];
    proxy.write_config(&https_config(&certificates_toml(&files3), "", b.addr));
    proxy.reloader.reload().unwrap();
    let s = connect(addr, "site.test", default_client(&ca))
        .await
        .unwrap();
    assert_eq!(peer_leaf(&s), third.der);
    assert_eq!(open.get("site.test", "/").await.unwrap().0.as_u16(), 200);
}

/// A proxy whose https listener serves `site.test` (a certificate of the returned CA)
/// with `listener_extra`, in front of a backend named `b`.
async fn site(dir: &TempDir, listener_extra: &str) -> (Ca, support::Backend, support::Proxy) {
    let server_ca = Ca::new("server ca");
    let files = [server_ca.issue(&["site.test"]).write(&dir.0, "site")];
    let b = backend("b").await;
    let proxy = start_proxy(&https_config(
        &certificates_toml(&files),
        listener_extra,
        b.addr,
    ))
    .await;
    (server_ca, b, proxy)
}

/// `mutual_tls` in verify mode against `client_ca` (written to `dir`).
fn verify_against(dir: &TempDir, client_ca: &Ca) -> String {
    let trust = client_ca.write(&dir.0, "clients.pem");
    format!(
        r#"mutual_tls = {{ mode = "verify", trust_store = {:?} }}"#,
        trust.display().to_string()
    )
}

#[tokio::test]
async fn mutual_tls_accepts_clients_of_the_trust_store_and_refuses_others() {
    let dir = TempDir::new();
    let client_ca = Ca::new("client ca");
    let stranger_ca = Ca::new("stranger ca");
    let (server_ca, b, proxy) = site(&dir, &verify_against(&dir, &client_ca)).await;
    let addr = proxy.addrs[0];

    let good = client_ca.issue(&["client-1"]);
    let config = client_config(
        &server_ca,
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
        Some(&good),
    );
    let stream = connect(addr, "site.test", config).await.unwrap();
    let (status, _, body) = Https::over(stream)
        .await
        .get("site.test", "/")
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "b"));

    let bad = stranger_ca.issue(&["client-2"]);
    for (who, cert) in [
        ("no certificate", None),
        ("a certificate of another CA", Some(&bad)),
    ] {
        let config = client_config(&server_ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS, cert);
        // With TLS 1.3 the client learns of the refusal on its first read.
        let refused = match connect(addr, "site.test", config).await {
            Err(_) => true,
            Ok(stream) => {
                let mut https = Https::over(stream).await;
                https.get("site.test", "/").await.is_err()
            }
        };
        assert!(refused, "{who} must be refused");
    }
    assert_eq!(b.hits(), 1, "only the verified client reached the target");
}

/// An HTTP listener forwarding to one `https` target group at `target`.
fn upstream_config(target: std::net::SocketAddr, group_extra: &str) -> String {
    support::one_group_config(
        &[target],
        "",
        &format!("protocol = \"https\"\n{group_extra}"),
    )
}

#[tokio::test]
async fn https_target_groups_verify_the_target_certificate() {
    let dir = TempDir::new();
    let ca = Ca::new("internal ca");
    let ca_file = ca.write(&dir.0, "internal.pem");
    let ca_toml = ca_file.display().to_string();
    let target =
        support::tls::tls_backend(&ca.issue(&["backend.internal", "127.0.0.1"]), "tls-b").await;
    let cases = [
        (
            format!("tls = {{ ca = {ca_toml:?} }}"),
            200,
            "trusted CA, the IP address in the certificate",
        ),
        (
            format!("tls = {{ ca = {ca_toml:?}, server_name = \"backend.internal\" }}"),
            200,
            "trusted CA, name checked",
        ),
        (
            format!("tls = {{ ca = {ca_toml:?}, server_name = \"other.internal\" }}"),
            502,
            "wrong name",
        ),
        (
            String::new(),
            502,
            "system roots do not know the internal CA",
        ),
        (
            "tls = { verify = false }".to_owned(),
            200,
            "verification off",
        ),
    ];
    for (extra, want, why) in cases {
        let proxy = start_proxy(&upstream_config(target.addr, &extra)).await;
        let r = get(&proxy.url("/echo-headers")).await;
        assert_eq!(r.status.as_u16(), want, "{why}: {}", r.body);
        proxy.stop().await;
    }
    // HTTP/2 to the target over TLS (ALPN h2).
    let proxy = start_proxy(&upstream_config(
        target.addr,
        &format!("protocol_version = \"http2\"\ntls = {{ ca = {ca_toml:?} }}"),
    ))
    .await;
    let r = get(&proxy.url("/version")).await;
    let want = format!("HTTP/2.0 https://{}", proxy.addrs[0]); // the client's host, over TLS
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, want.as_str()));
}

#[tokio::test]
async fn redirects_fill_in_https_and_http_redirects_to_https() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let files = [ca.issue(&["site.test"]).write(&dir.0, "site")];
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "plain"
bind = "127.0.0.1:0"
default_action = {{ redirect = {{ protocol = "https", port = "443", status = 301 }} }}

[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
protocol = "https"
{}
default_action = {{ redirect = {{ path = "/moved/#{{path}}", status = 302 }} }}

[target_groups.unused]
discovery = {{ static = ["127.0.0.1:9"] }}
"#,
        certificates_toml(&files)
    );
    let proxy = start_proxy(&config).await;
    let r = support::get_with(&proxy.url("/a/b?x=1"), &[("host", "site.test")]).await;
    assert_eq!(r.status.as_u16(), 301);
    assert_eq!(r.headers["location"], "https://site.test/a/b?x=1");

    let stream = connect(proxy.addrs[1], "site.test", default_client(&ca))
        .await
        .unwrap();
    let (status, headers, _) = Https::over(stream)
        .await
        .get("site.test", "/old")
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 302);
    let port = proxy.addrs[1].port();
    assert_eq!(
        headers["location"],
        format!("https://site.test:{port}/moved/old").as_str()
    );
}

#[tokio::test]
async fn certificate_problems_are_reported_with_file_line_and_field() {
    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let (good_cert, good_key) = ca.issue(&["a.test"]).write(&dir.0, "a");
    let (_, other_key) = ca.issue(&["b.test"]).write(&dir.0, "b");
    let config_path = dir.0.join("bad.toml");
    let text = format!(
        r#"[[listeners]]
name = "secure"
bind = "127.0.0.1:0"
protocol = "https"
certificates = [
  {{ cert = {:?}, key = {:?} }},
  {{ cert = "missing.pem", key = "missing.key" }},
]
default_action = {{ forward = "g" }}

[[listeners]]
name = "plain"
bind = "127.0.0.1:0"
protocol = "https"
default_action = {{ forward = "g" }}

[target_groups.g]
proxy_protocol_v2 = true
discovery = {{ static = ["127.0.0.1:1"] }}
"#,
        good_cert.display().to_string(),
        other_key.display().to_string(),
    );
    std::fs::write(&config_path, text).unwrap();
    let err = ecslb::config::Config::load(&config_path).unwrap_err();
    let p = &err.problems;
    let path = config_path.display().to_string();
    let has = |needle: &str| p.iter().any(|l| l.starts_with(&path) && l.contains(needle));
    assert!(
        has(":6: listeners[0].certificates[0].key:") && has("does not belong"),
        "{p:#?}"
    );
    // Relative paths start at the config file's directory.
    let missing = dir.0.join("missing.pem").display().to_string();
    assert!(
        has(":7: listeners[0].certificates[1].cert:") && has(&missing),
        "{p:#?}"
    );
    assert!(
        has(":11: listeners[1].certificates:") && has("needs at least one certificate"),
        "{p:#?}"
    );
    assert!(has(":18: target_groups.g.proxy_protocol_v2:"), "{p:#?}");
    let _ = good_key;
}

/// Whether this connection resumed a session rather than doing a full handshake.
fn resumed(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> bool {
    stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// Connects with `client`, makes one request (which also reads the session tickets
/// TLS 1.3 sends after the handshake) and says whether the session was resumed.
async fn visit(addr: std::net::SocketAddr, client: &std::sync::Arc<rustls::ClientConfig>) -> bool {
    let stream = connect(addr, "site.test", std::sync::Arc::clone(client))
        .await
        .unwrap();
    let was_resumed = resumed(&stream);
    let mut https = Https::over(stream).await;
    assert_eq!(https.get("site.test", "/").await.unwrap().0.as_u16(), 200);
    was_resumed
}

#[tokio::test]
async fn sessions_resume_for_many_clients_and_across_certificate_reloads() {
    let dir = TempDir::new();
    let (ca, b, proxy) = site(&dir, "").await;
    let addr = proxy.addrs[0];
    // One returning client per TLS version, each with its own session store.
    let returning = [
        client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS13], None),
        client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS12], None),
    ];
    for client in &returning {
        assert!(
            !visit(addr, client).await,
            "a first visit is a full handshake"
        );
        assert!(visit(addr, client).await, "a second visit resumes");
    }
    // Many other clients come and go in between: sessions are tickets the clients
    // keep, not entries of a server cache they could push out.
    for _ in 0..300 {
        let stranger = client_config(&ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS, None);
        visit(addr, &stranger).await;
    }
    for client in &returning {
        assert!(visit(addr, client).await, "resumed after 300 other clients");
    }
    // A new certificate keeps the ticket keys: returning clients still resume.
    let files2 = [ca.issue(&["site.test"]).write(&dir.0, "renewed")];
    proxy.write_config(&https_config(&certificates_toml(&files2), "", b.addr));
    proxy.reloader.reload().unwrap();
    for client in &returning {
        assert!(visit(addr, client).await, "resumed after a reload");
    }
}

/// A client's session store that counts the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingTickets {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingTickets {
    fn set_kx_hint(&self, name: rustls::pki_types::ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group);
    }
    fn kx_hint(&self, name: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value);
    }
    fn tls12_session(
        &self,
        name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &rustls::pki_types::ServerName<'static>) {
        self.inner.remove_tls12_session(name);
    }
    fn insert_tls13_ticket(
        &self,
        name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.insert_tls13_ticket(name, value);
    }
    fn take_tls13_ticket(
        &self,
        name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

#[tokio::test]
async fn each_tls13_handshake_gives_one_ticket_and_the_next_visit_resumes_with_it() {
    let dir = TempDir::new();
    let (ca, _b, proxy) = site(&dir, "").await;
    let store = std::sync::Arc::new(CountingTickets {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        tickets: std::sync::atomic::AtomicUsize::new(0),
    });
    let mut config =
        (*client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS13], None)).clone();
    config.resumption = rustls::client::Resumption::store(std::sync::Arc::clone(&store) as _);
    let client = std::sync::Arc::new(config);
    // One ticket after the full handshake and one after each resumption (as s2n-tls
    // and OpenSSL send on resumption): each visit spends one and gets one back.
    for visit_number in 1..=4 {
        let was_resumed = visit(proxy.addrs[0], &client).await;
        assert_eq!(was_resumed, visit_number > 1, "visit {visit_number}");
        assert_eq!(
            store.tickets.load(std::sync::atomic::Ordering::Relaxed),
            visit_number,
            "tickets received after visit {visit_number}"
        );
    }
}

/// What `openssl x509 -noout ARGS` prints for the certificate in `pem`, after `key=`.
fn openssl_field(dir: &std::path::Path, pem: &str, args: &[&str]) -> String {
    let file = dir.join("subject-of-openssl.pem");
    std::fs::write(&file, pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-in"])
        .arg(&file)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|l| l.split_once('=').unwrap().1.to_owned())
        .collect::<Vec<_>>()
        .join(";")
}

/// Percent-decoding, for the URL-encoded PEM headers.
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The `name: value` lines `/echo-headers` answered, as a map (names lower case).
fn echoed(body: &str) -> std::collections::HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect()
}

const FORGED: [(&str, &str); 2] = [
    ("X-Amzn-Mtls-Clientcert-Subject", "CN=admin"),
    ("X-Amzn-Mtls-Clientcert", "forged"),
];

#[tokio::test]
async fn verified_client_certificates_reach_targets_in_alb_headers() {
    use rcgen::{DnType, DnValue};
    let dir = TempDir::new();
    let client_ca = Ca::new("Client CA, Ops+Dev");
    let (server_ca, _b, proxy) = site(&dir, &verify_against(&dir, &client_ca)).await;
    let client = client_ca.issue_to(
        &["client-1"],
        vec![
            (
                DnType::CountryName,
                DnValue::PrintableString("US".try_into().unwrap()),
            ),
            (DnType::StateOrProvinceName, "Washington".into()),
            (DnType::OrganizationName, "Acme, Inc.".into()),
            (DnType::OrganizationalUnitName, "#ops <east>".into()),
            (DnType::CommonName, "client 1".into()),
        ],
    );
    // Over HTTP/1.1 and HTTP/2, and on a resumed session as on a full handshake.
    let visits = [
        (&b"http/1.1"[..], false),
        (b"http/1.1", true),
        (b"h2", false),
        (b"h2", true),
    ];
    let mut config = None;
    for (alpn, resuming) in visits {
        if !resuming {
            let fresh = client_config(&server_ca, &[alpn], rustls::DEFAULT_VERSIONS, Some(&client));
            config = Some(fresh);
        }
        let config = std::sync::Arc::clone(config.as_ref().unwrap());
        let stream = connect(proxy.addrs[0], "site.test", config).await.unwrap();
        assert_eq!(resumed(&stream), resuming);
        let (status, _, body) = Https::over(stream)
            .await
            .get_with("site.test", "/echo-headers", &FORGED)
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 200);
        let h = echoed(&body);
        // Each as openssl reads the same certificate.
        let field = |args: &[&str]| openssl_field(&dir.0, &client.cert_pem, args);
        let rfc2253 = ["-nameopt", "RFC2253"];
        assert_eq!(
            h["x-amzn-mtls-clientcert-serial-number"],
            field(&["-serial"])
        );
        assert_eq!(
            h["x-amzn-mtls-clientcert-subject"],
            field(&["-subject", rfc2253[0], rfc2253[1]])
        );
        assert_eq!(
            h["x-amzn-mtls-clientcert-subject"],
            r"OU=\#ops \<east\>,O=Acme\, Inc.,ST=Washington,C=US,CN=client 1",
            "the last RDN first, as encoded; values escaped"
        );
        assert_eq!(
            h["x-amzn-mtls-clientcert-issuer"],
            field(&["-issuer", rfc2253[0], rfc2253[1]])
        );
        let dates = field(&["-startdate", "-enddate", "-dateopt", "iso_8601"]);
        let (not_before, not_after) = dates.split_once(';').unwrap();
        assert_eq!(
            h["x-amzn-mtls-clientcert-validity"],
            format!(
                "NotBefore={};NotAfter={}",
                not_before.replace(' ', "T"),
                not_after.replace(' ', "T")
            )
        );
        let leaf = &h["x-amzn-mtls-clientcert-leaf"];
        assert!(
            leaf.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
            "{leaf}"
        );
        assert_eq!(url_decode(leaf), client.cert_pem);
        assert!(
            !h.contains_key("x-amzn-mtls-clientcert"),
            "the client's forged chain header is gone: {body}"
        );
    }
}

#[tokio::test]
async fn passthrough_hands_any_client_chain_to_targets_unverified() {
    let dir = TempDir::new();
    let stranger_ca = Ca::new("anyone");
    let (server_ca, _b, proxy) = site(&dir, r#"mutual_tls = { mode = "passthrough" }"#).await;
    let unknown = stranger_ca.issue(&["client-2"]);
    for (who, cert) in [
        ("a client of no trusted CA", Some(&unknown)),
        ("no certificate", None),
    ] {
        let config = client_config(&server_ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS, cert);
        let stream = connect(proxy.addrs[0], "site.test", config).await.unwrap();
        let (status, _, body) = Https::over(stream)
            .await
            .get_with("site.test", "/echo-headers", &FORGED)
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 200, "{who} is let through");
        let h = echoed(&body);
        assert_eq!(
            h.get("x-amzn-mtls-clientcert").map(|v| url_decode(v)),
            cert.map(|c| c.cert_pem.clone()),
            "{who}: {body}"
        );
        assert!(!h.contains_key("x-amzn-mtls-clientcert-subject"), "{body}");
    }
}

/// `Connection: close` over TLS: every kind of answer arrives whole, and the proxy
/// ends the connection with a `close_notify` (the client's read ends cleanly instead
/// of with rustls's "peer closed connection without sending TLS close_notify").
#[tokio::test]
async fn answers_to_connection_close_end_with_a_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new();
    let (ca, _b, proxy) = site(&dir, "").await;
    let http1 = client_config(&ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS, None);
    // (request line, what the body must be once de-chunked; None: no body)
    let cases: [(&str, Option<Vec<u8>>); 5] = [
        ("GET / HTTP/1.1", Some(b"b".to_vec())),
        ("HEAD / HTTP/1.1", None),
        ("GET /status?code=204 HTTP/1.1", None),
        (
            "GET /drip?chunks=3&ms=20 HTTP/1.1",
            Some(b"tick\n".repeat(3)),
        ),
        ("GET /bytes?n=300000 HTTP/1.1", Some(vec![b'x'; 300_000])),
    ];
    for (line, want) in cases {
        let mut tls = connect(proxy.addrs[0], "site.test", std::sync::Arc::clone(&http1))
            .await
            .unwrap();
        let request = format!("{line}\r\nHost: site.test\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
            .await
            .expect("the proxy closes the connection after its answer");
        read.unwrap_or_else(|e| panic!("{line}: the connection must end with close_notify: {e}"));
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{line}: no head in {answer:?}"))
            + 4;
        let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
        assert!(head.contains("\r\nconnection: close\r\n"), "{line}: {head}");
        let body = &answer[split..];
        match want {
            None => assert!(body.is_empty(), "{line}: a body after a bodiless answer"),
            Some(want) if head.contains("transfer-encoding: chunked") => {
                assert!(body.ends_with(b"0\r\n\r\n"), "{line}: no last chunk");
                assert_eq!(support::dechunk(body), want, "{line}");
            }
            Some(want) => assert_eq!(body, &want[..], "{line}"),
        }
    }
}

/// WebSockets over an HTTPS listener (`wss://`, HTTP/1.1 upgrade after ALPN
/// http/1.1, as browsers open them): messages echo through, and the access log calls
/// the request `wss`, as ALB's does.
#[tokio::test]
async fn websockets_over_https_echo_through_and_are_logged_as_wss() {
    use tokio_tungstenite::tungstenite::Message;

    let dir = TempDir::new();
    let ca = Ca::new("ca");
    let files = [ca.issue(&["site.test"]).write(&dir.0, "site")];
    let b = support::ws_echo_backend("ws").await;
    let log = dir.0.join("access.log");
    let toml = format!(
        "[access_log]\noutput = {:?}\n{}",
        log.display().to_string(),
        https_config(&certificates_toml(&files), "", b.addr)
    );
    let proxy = start_proxy(&toml).await;
    let config = client_config(&ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS, None);
    let stream = connect(proxy.addrs[0], "site.test", config).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://site.test/chat", stream)
        .await
        .expect("handshake through the proxy");
    assert_eq!(resp.status().as_u16(), 101);
    let messages = [
        Message::text("hello"),
        Message::binary(vec![9u8; 300_000]),
        Message::text("bye"),
    ];
    support::echo_over(&mut ws, &messages).await;
    drop(ws);
    proxy.stop().await; // flushes the log

    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["type"], "wss", "{text}");
    assert_eq!(line["elb_status_code"], 101, "{text}");
    assert_eq!(line["domain_name"], "site.test", "{text}");
}

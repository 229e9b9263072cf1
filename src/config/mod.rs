//! Configuration: the TOML file in, a validated [`Config`] out.
//!
//! `file.toml -> file::ConfigFile (serde mirror) -> Config (TryFrom, every problem at once)`.
//! Errors name the file, the line and the field
//! (`config/example.toml:42: listeners[0].rules[3].conditions.path: ...`). The rest of
//! the crate only ever sees a validated [`Config`].

mod file;
mod locate;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use ipnet::IpNet;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The admin listener.
    pub admin: Admin,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub shutdown_timeout: Duration,
    /// Listeners, in file order; their names are unique.
    pub listeners: Vec<Listener>,
    /// Target groups by name.
    pub target_groups: BTreeMap<String, TargetGroup>,
    /// Whether requests are counted for `/metrics` (`[metrics] enabled`, default true).
    pub metrics_enabled: bool,
    /// Where access logs go (`[access_log] output`: "off", "stdout" or a file path).
    pub access_log: crate::access_log::Output,
    /// AWS API calls per second all discovery shares (`[aws] api_rate`, default 20).
    pub aws_api_rate: f64,
    /// Calls that may be saved up for a burst (`[aws] api_burst`, default 100).
    pub aws_api_burst: f64,
    /// How long one AWS API call attempt may take before it fails and is retried
    /// (`[aws] api_timeout`, default 10 s).
    pub aws_api_timeout: Duration,
}

/// The admin listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Address to bind (loopback by default).
    pub listen: SocketAddr,
}

/// One listener: where to accept connections and how to route their requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Address to bind.
    pub bind: SocketAddr,
    /// Protocol spoken to clients.
    pub protocol: Protocol,
    /// Rules, sorted by ascending priority.
    pub rules: Vec<Rule>,
    /// What to do when no rule matches.
    pub default_action: Action,
    /// A client connection with no bytes flowing for this long is closed.
    pub idle_timeout: Duration,
    /// A client connection this old ends after its current response (HTTP/1.1:
    /// `Connection: close`; HTTP/2: GOAWAY), so that clients reconnect and spread over
    /// the load balancers anew (http and https listeners; ALB's
    /// `client_keep_alive.seconds`).
    pub client_keep_alive: Duration,
    /// How requests that could desynchronise HTTP/1 parsers are handled.
    pub desync_mitigation_mode: DesyncMode,
    /// Request size limits.
    pub limits: Limits,
    /// Certificates and TLS settings (`https` and `tls` listeners only).
    pub tls: Option<ListenerTls>,
    /// Whether each connection must start with a PROXY protocol (v1 or v2) header,
    /// whose client address then stands for the connection's.
    pub accept_proxy_protocol: bool,
    /// What becomes of `X-Forwarded-For` (http and https listeners).
    pub xff: Xff,
    /// Whether requests get `X-Amzn-Tls-Version` and `X-Amzn-Tls-Cipher-Suite` (https
    /// listeners; ALB's `routing.http.x_amzn_tls_version_and_cipher_suite.enabled`).
    pub tls_headers: bool,
    /// Whether request header fields whose names are not `[-A-Za-z0-9]+` are dropped
    /// (http and https listeners; ALB's `routing.http.drop_invalid_header_fields.enabled`).
    pub drop_invalid_header_fields: bool,
    /// Fields set on every response the listener sends, replacing a target's of the
    /// same name (http and https listeners; ALB's response header attributes:
    /// `Strict-Transport-Security`, CORS, `X-Frame-Options` and the like).
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Listener {
    /// Whether each connection's client sends the first bytes (an HTTP request, a TLS
    /// client hello, a PROXY header): on all but `tcp` listeners, which may carry a
    /// protocol where the server speaks first, unless they take a PROXY header.
    pub fn client_speaks_first(&self) -> bool {
        self.protocol != Protocol::Tcp || self.accept_proxy_protocol
    }
}

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge) in clear text on one port.
    Http,
    /// HTTP/1.1 and HTTP/2 (ALPN) over TLS.
    Https,
    /// L4: each connection forwarded to a target as a byte stream (NLB's TCP).
    Tcp,
    /// L4 with TLS terminated here; the plain stream goes to the target (NLB's TLS).
    Tls,
    /// L4 routed by the TLS server name (SNI), TLS left to the target.
    TlsPassthrough,
}

impl Protocol {
    /// Whether requests are proxied at HTTP level (rules, headers, status codes).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }

    /// Whether this listener terminates TLS with its own certificates.
    pub fn terminates_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::TlsPassthrough => "tls_passthrough",
        }
    }
}

/// The TLS side of an `https` or `tls` listener.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ListenerTls {
    /// Server certificates; SNI picks among them, the first is the default.
    pub certificates: Vec<Certificate>,
    /// Protocol versions and cipher suites, by ALB policy name.
    pub policy: TlsPolicy,
    /// Application protocols offered (ALPN), by ALB/NLB policy name.
    pub alpn: AlpnPolicy,
    /// Client certificates (mTLS).
    pub mutual_tls: MutualTls,
}

/// ALB's mutual TLS modes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum MutualTls {
    /// No client certificate is asked for.
    Off,
    /// A client certificate is required and verified against this bundle; its fields
    /// go to targets in `X-Amzn-Mtls-Clientcert-*` headers (https listeners).
    Verify(CaBundle),
    /// A client certificate is asked for but not verified, and goes to targets whole in
    /// `X-Amzn-Mtls-Clientcert` (https listeners only).
    Passthrough,
}

/// A certificate chain and its key, as files and as loaded at validation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Certificate {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// What the files held when the config was validated.
    #[serde(skip)]
    pub loaded: std::sync::Arc<crate::tls::LoadedCertificate>,
}

/// CA certificates trusted for some purpose (client certificates, target certificates).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaBundle {
    /// PEM file.
    pub path: PathBuf,
    /// Its certificates (DER), read at validation.
    #[serde(skip)]
    pub certs: std::sync::Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

/// ALB's TLS security policies that rustls can honour (it has no CBC or non-ECDHE
/// suites, so each is the policy's forward-secret AEAD subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TlsPolicy {
    /// TLS 1.3 and 1.2 (ECDHE with AES-GCM for 1.2). ALB's default.
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-2-2021-06")]
    Tls13And12,
    /// The same, restricted variant (also AES-GCM only on 1.2).
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06")]
    Tls13And12Restricted,
    /// TLS 1.3 only.
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-3-2021-06")]
    Tls13Only,
}

impl TlsPolicy {
    /// Every policy by its ALB name.
    pub const ALL: [(&'static str, TlsPolicy); 3] = [
        ("ELBSecurityPolicy-TLS13-1-2-2021-06", TlsPolicy::Tls13And12),
        (
            "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
            TlsPolicy::Tls13And12Restricted,
        ),
        ("ELBSecurityPolicy-TLS13-1-3-2021-06", TlsPolicy::Tls13Only),
    ];
}

/// ALPN policies, named as on ALB/NLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AlpnPolicy {
    /// Offer only `http/1.1`.
    #[serde(rename = "HTTP1Only")]
    Http1Only,
    /// Offer only `h2`.
    #[serde(rename = "HTTP2Only")]
    Http2Only,
    /// Offer both, preferring `http/1.1`.
    #[serde(rename = "HTTP2Optional")]
    Http2Optional,
    /// Offer both, preferring `h2`.
    #[serde(rename = "HTTP2Preferred")]
    Http2Preferred,
    /// No ALPN.
    #[serde(rename = "None")]
    None,
}

impl AlpnPolicy {
    /// Every policy by its name.
    pub const ALL: [(&'static str, AlpnPolicy); 5] = [
        ("HTTP1Only", AlpnPolicy::Http1Only),
        ("HTTP2Only", AlpnPolicy::Http2Only),
        ("HTTP2Optional", AlpnPolicy::Http2Optional),
        ("HTTP2Preferred", AlpnPolicy::Http2Preferred),
        ("None", AlpnPolicy::None),
    ];

    /// The protocol ids offered, in order of preference.
    pub fn protocols(self) -> Vec<Vec<u8>> {
        let (h1, h2) = (b"http/1.1".to_vec(), b"h2".to_vec());
        match self {
            AlpnPolicy::Http1Only => vec![h1],
            AlpnPolicy::Http2Only => vec![h2],
            AlpnPolicy::Http2Optional => vec![h1, h2],
            AlpnPolicy::Http2Preferred => vec![h2, h1],
            AlpnPolicy::None => Vec::new(),
        }
    }
}

/// ALB's desync mitigation modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DesyncMode {
    /// Forward every request; only classify and log.
    Monitor,
    /// Block severe requests; forward ambiguous ones but close both connections.
    Defensive,
    /// Forward only compliant requests.
    Strictest,
}

/// ALB's `X-Forwarded-For` processing (`routing.http.xff_header_processing.mode` and
/// `routing.http.xff_client_port.enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Xff {
    /// What is done with the header.
    pub mode: XffMode,
    /// Whether the client's port follows its address where it is appended.
    pub client_port: bool,
}

/// ALB's `X-Forwarded-For` processing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XffMode {
    /// The client's address is appended (the header added when absent).
    Append,
    /// The header goes to targets as the client sent it, or not at all.
    Preserve,
    /// The header is removed.
    Remove,
}

/// Limits on the request head; beyond them the request gets 414 or 431.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Bytes of all header names and values together (431 beyond).
    pub max_header_bytes: usize,
    /// Number of header fields (431 beyond).
    pub max_headers: usize,
    /// Bytes of the request target (414 beyond).
    pub max_uri_bytes: usize,
}

/// A listener rule: conditions AND-ed, values within a condition OR-ed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Lower is evaluated first; unique within a listener.
    pub priority: u32,
    /// What a request must match.
    pub conditions: Conditions,
    /// What happens to a matching request.
    pub action: Action,
}

/// The conditions of a rule; an empty list means "not a condition".
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Conditions {
    /// Host header patterns (`*` and `?`, case-insensitive).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<String>,
    /// Path patterns (`*` and `?`, case-sensitive).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// Header conditions, all of which must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_header: Vec<HeaderCondition>,
    /// Request methods.
    #[serde(
        serialize_with = "serialize_methods",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub method: Vec<Method>,
    /// Query-string key/value patterns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryCondition>,
    /// Client address ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ip: Vec<IpNet>,
}

fn serialize_methods<S: serde::Serializer>(methods: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(methods.iter().map(Method::as_str))
}

/// `http_header = [{ name = "x-env", values = ["prod*"] }]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeaderCondition {
    /// Header name (case-insensitive).
    pub name: String,
    /// Value patterns (`*` and `?`, case-insensitive).
    pub values: Vec<String>,
}

/// `query = [{ key = "version", value = "v1" }]`; a missing key matches any key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueryCondition {
    /// Key pattern (`*` and `?`, case-insensitive), or any key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Value pattern (`*` and `?`, case-insensitive).
    pub value: String,
}

/// What a rule (or a listener's default) does with a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward to one group, or weighted across several.
    Forward {
        /// Groups and their weights (one group: weight 1).
        groups: Vec<WeightedGroup>,
        /// Group stickiness: keep a client on the group it was first sent to.
        #[serde(with = "humantime_serde_opt")]
        stickiness: Option<Duration>,
    },
    /// Redirect with ALB's `#{...}` placeholders.
    Redirect(Redirect),
    /// Answer directly.
    FixedResponse(FixedResponse),
}

/// One group of a forward action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WeightedGroup {
    /// Target group name.
    pub group: String,
    /// Relative weight (0 to 999).
    pub weight: u32,
}

/// A redirect action; each part defaults to the request's own (`#{protocol}` etc.).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redirect {
    /// `http`, `https` or `#{protocol}`.
    pub protocol: String,
    /// Host, may use placeholders.
    pub host: String,
    /// Port, may use placeholders.
    pub port: String,
    /// Absolute path, may use placeholders.
    pub path: String,
    /// Query without the leading `?`, may use placeholders.
    pub query: String,
    /// 301 or 302.
    pub status: u16,
}

/// A fixed-response action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FixedResponse {
    /// Status code (2XX, 4XX or 5XX).
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// Body (at most 1024 bytes, as on ALB).
    pub body: String,
}

/// A target group: where targets come from and how one is picked.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    /// Unique name.
    pub name: String,
    /// How listeners talk to the targets.
    pub protocol: GroupProtocol,
    /// TLS towards targets (`https` and `tls` groups).
    pub tls: UpstreamTls,
    /// Each connection to a target starts with a PROXY protocol v2 header carrying the
    /// client's address (`tcp` and `tls` groups, as on NLB).
    pub proxy_protocol_v2: bool,
    /// How a target is picked for a request.
    pub algorithm: Algorithm,
    /// HTTP version spoken to targets.
    pub protocol_version: ProtocolVersion,
    /// A target that has not answered within this time gets the client a 504.
    pub response_timeout: Duration,
    /// A target not accepting a connection within this time gets the client a 502.
    pub connect_timeout: Duration,
    /// A keep-alive HTTP/1.1 connection to a target left idle this long is closed
    /// rather than reused, as ALB closes target connections at its idle timeout.
    pub idle_timeout: Duration,
    /// How long a removed target keeps finishing in-flight requests.
    pub deregistration_delay: Duration,
    /// Target stickiness.
    pub stickiness: Option<Stickiness>,
    /// A target that turns healthy ramps its share of new requests up over this long
    /// (zero: off).
    pub slow_start: Duration,
    /// Active health checks; `None`: targets are taken as healthy (`unused`).
    pub health_check: Option<HealthCheck>,
    /// Passive outlier detection; `None`: off.
    pub outlier_detection: Option<OutlierDetection>,
    /// Where the targets come from.
    pub discovery: Discovery,
}

/// A target group's protocol, as on ALB (http, https) and NLB (tcp, tls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    /// HTTP in clear text (HTTP listeners).
    Http,
    /// HTTP over TLS (HTTP listeners).
    Https,
    /// A byte stream (TCP, TLS and TLS-passthrough listeners).
    Tcp,
    /// A byte stream over a new TLS connection (TCP and TLS listeners).
    Tls,
}

impl GroupProtocol {
    /// Whether the group serves HTTP listeners (else L4 ones).
    pub fn is_http(self) -> bool {
        matches!(self, GroupProtocol::Http | GroupProtocol::Https)
    }

    /// Whether connections to targets are TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, GroupProtocol::Https | GroupProtocol::Tls)
    }
}

/// How TLS connections to targets are checked.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct UpstreamTls {
    /// Whether the target's certificate is verified (default: yes).
    pub verify: bool,
    /// Trusted CAs; `None`: the system's bundle (or Mozilla's roots without one).
    pub ca: Option<CaBundle>,
    /// The name the certificate must carry (and the SNI sent); `None`: the target's
    /// IP address.
    pub server_name: Option<String>,
}

/// Active health checks of a target group, with ALB's parameters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthCheck {
    /// How a target is probed.
    pub protocol: HealthProtocol,
    /// Path requested by HTTP checks.
    pub path: String,
    /// Port probed; `None`: the target's own (traffic) port.
    pub port: Option<u16>,
    /// Time between two checks of one target.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A check not answered within this time fails (`Target.Timeout`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passes that make a target healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a target unhealthy.
    pub unhealthy_threshold: u32,
    /// Codes that pass: HTTP status codes, or gRPC status codes for gRPC checks.
    pub matcher: Matcher,
    /// What an HTTP or HTTPS check speaks: the group's protocol version. `Http1` and
    /// `Http2`: a `GET` of `path`, passed by its status. `Grpc` (as on ALB): an HTTP/2
    /// `POST` of an empty message to `path` (`/package.Service/Method`), passed by its
    /// `grpc-status`.
    pub version: ProtocolVersion,
    /// Host header of HTTP checks; `None`: the target's address.
    pub host: Option<String>,
}

/// How health checks reach a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProtocol {
    /// An HTTP/1.1 GET whose status must match.
    Http,
    /// The same over TLS (the target's certificate is not verified, as on ALB).
    Https,
    /// A TCP connection that must open.
    Tcp,
}

/// Codes that pass a check: HTTP status codes (`"200"`, `"200,202"`, `"200-399"`) or
/// gRPC status codes (`"12"`, `"0-99"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher(pub Vec<(u16, u16)>);

impl Matcher {
    /// HTTP status codes a matcher may name.
    pub const HTTP: (u16, u16) = (100, 599);
    /// gRPC status codes a matcher may name (ALB's range).
    pub const GRPC: (u16, u16) = (0, 99);

    /// Whether `code` passes.
    pub fn matches(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
    }

    /// Parses `"200,202,300-399"`: codes and ranges within `bounds`
    /// ([`Matcher::HTTP`] or [`Matcher::GRPC`]).
    pub fn parse(text: &str, bounds: (u16, u16)) -> Option<Self> {
        let (min, max) = bounds;
        let ranges: Option<Vec<(u16, u16)>> = text
            .split(',')
            .map(|part| {
                let part = part.trim();
                let (lo, hi) = part.split_once('-').unwrap_or((part, part));
                let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
                ((min..=max).contains(&lo) && (lo..=max).contains(&hi)).then_some((lo, hi))
            })
            .collect();
        ranges.filter(|r| !r.is_empty()).map(Matcher)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Passive outlier detection: a target whose requests fail (connect errors or 5xx)
/// `consecutive_errors` times in a row is ejected for a while.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutlierDetection {
    /// Consecutive failed requests that eject a target.
    pub consecutive_errors: u32,
    /// First ejection time; each repeat ejection doubles it.
    #[serde(with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// Ejection time cap.
    #[serde(with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// At most this share (percent) of the group is ejected at once.
    pub max_ejection_percent: u32,
}

/// Balancing algorithms, as ALB names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each eligible target in turn.
    RoundRobin,
    /// The eligible target with the fewest requests in flight.
    LeastOutstandingRequests,
    /// A random eligible target, in proportion to its weight.
    WeightedRandom,
}

/// HTTP version used towards targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolVersion {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over clear text (prior knowledge), or over TLS with ALPN `h2`.
    Http2,
    /// gRPC: HTTP/2 as `Http2`, and health checks are gRPC calls.
    Grpc,
}

impl ProtocolVersion {
    /// Whether targets are spoken to in HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, ProtocolVersion::Http2 | ProtocolVersion::Grpc)
    }
}

/// Target stickiness, by cookie.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stickiness {
    /// The proxy's own `AWSALB` cookie.
    LbCookie {
        /// Cookie lifetime.
        #[serde(with = "humantime_serde")]
        duration: Duration,
    },
    /// Follow the application's cookie: while the target sets `cookie_name`, the
    /// proxy keeps the client on it with an `AWSALBAPP-0` cookie.
    AppCookie {
        /// The application's cookie.
        cookie_name: String,
        /// Cookie lifetime.
        #[serde(with = "humantime_serde")]
        duration: Duration,
    },
}

/// Where a target group's targets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// A fixed list of addresses.
    Static(Vec<SocketAddr>),
    /// The tasks of an ECS service (or task family, or `startedBy` value).
    Ecs(EcsDiscovery),
    /// The instances of an AWS Cloud Map service.
    CloudMap(CloudMapDiscovery),
}

/// Which ECS tasks make up a target group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EcsDiscovery {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Which tasks of the cluster.
    pub tasks: EcsTasks,
    /// The container whose port receives traffic.
    pub container: String,
    /// The container port (for bridge/host tasks, its host port binding is used).
    pub port: u16,
    /// How often the task list is polled.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// How often every known task is described again, to see status and health changes.
    #[serde(with = "humantime_serde")]
    pub full_refresh: Duration,
    /// Only tasks whose health is HEALTHY (otherwise: not UNHEALTHY).
    pub healthy_tasks_only: bool,
}

/// The task filter of ECS discovery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EcsTasks {
    /// Tasks of a service.
    Service(String),
    /// Standalone tasks of a task-definition family.
    Family(String),
    /// Tasks started by this `startedBy` value.
    StartedBy(String),
}

/// Which Cloud Map instances make up a target group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CloudMapDiscovery {
    /// Namespace name.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// `HEALTHY`, `UNHEALTHY`, `ALL` or `HEALTHY_OR_ELSE_ALL`.
    pub health_status: String,
    /// Custom attributes instances must have.
    pub query_parameters: BTreeMap<String, String>,
    /// How often the instances are polled.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

mod humantime_serde {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

mod humantime_serde_opt {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

/// A configuration that could not be loaded: every problem found, each located.
#[derive(Debug)]
pub struct Error {
    /// One line per problem: `file:line: field: message`.
    pub problems: Vec<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(p)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Config {
    /// Reads and validates the file at `path`.
    ///
    /// On error, every problem found is returned, each with file, line and field.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error {
            problems: vec![format!("{}: cannot read: {e}", path.display())],
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (used in error messages only).
    pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
        let source = locate::Source::new(PathBuf::from(path), text);
        let mut problems = Vec::new();
        let deserializer = match toml::de::Deserializer::parse(text) {
            Ok(d) => d,
            Err(e) => {
                return Err(Error {
                    problems: vec![source.render_toml_error(&e)],
                })
            }
        };
        let mut unknown = Vec::new();
        let parsed: Result<file::ConfigFile, _> =
            serde_ignored::deserialize(deserializer, |p| unknown.push(locate::segments(&p)));
        for segments in unknown {
            problems.push(source.render(&segments, "unknown field"));
        }
        let mut file = match parsed {
            Ok(file) => file,
            Err(e) => {
                problems.push(source.render_toml_error(&e));
                return Err(Error { problems });
            }
        };
        file.base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        match Config::try_from(file) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(Error { problems }),
            Err(found) => {
                problems.extend(
                    found
                        .into_iter()
                        .map(|p| source.render(&p.path, &p.message)),
                );
                Err(Error { problems })
            }
        }
    }

    /// The target group of this name.
    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.get(name)
    }
}

/// What a file looked like (modification time and length): a change of either means it
/// was rewritten. For watching the config and certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    path: PathBuf,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

impl FileStamp {
    /// How `path` looks now (a missing file has no time and length 0).
    pub fn of(path: &Path) -> Self {
        let meta = std::fs::metadata(path).ok();
        FileStamp {
            path: path.to_owned(),
            modified: meta.as_ref().and_then(|m| m.modified().ok()),
            len: meta.map_or(0, |m| m.len()),
        }
    }
}

//! `TryFrom<ConfigFile> for Config`: defaults filled in, every cross-check run, and every
//! problem collected (with its field path) rather than stopping at the first.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use ipnet::IpNet;

use super::file::{
    ActionFile, CertificateFile, CloudMapFile, ConditionsFile, ConfigFile, DiscoveryFile, EcsFile,
    ForwardFile, HealthCheckFile, ListenerFile, OutlierDetectionFile, PortFile,
    ResponseHeadersFile, RuleFile, StickinessFile, TargetGroupFile, UpstreamTlsFile,
};
use super::locate::Segment;
use super::{
    Action, Admin, Algorithm, AlpnPolicy, CaBundle, Certificate, CloudMapDiscovery, Conditions,
    Config, DesyncMode, Discovery, EcsDiscovery, EcsTasks, FixedResponse, GroupProtocol,
    HeaderCondition, HealthCheck, HealthProtocol, Limits, Listener, ListenerTls, Matcher,
    MutualTls, OutlierDetection, Protocol, ProtocolVersion, QueryCondition, Redirect, Rule,
    Stickiness, TargetGroup, TlsPolicy, UpstreamTls, WeightedGroup, Xff, XffMode,
};

/// One problem, at one field.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) path: Vec<Segment>,
    pub(crate) message: String,
}

/// Collects problems while walking the file; `at` scopes a field path.
struct Check {
    path: Vec<Segment>,
    problems: Vec<Problem>,
}

impl Check {
    fn at<T>(&mut self, segment: Segment, f: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(segment);
        let out = f(self);
        self.path.pop();
        out
    }

    fn key<T>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.at(Segment::key(key), f)
    }

    fn fail(&mut self, message: impl Into<String>) {
        self.problems.push(Problem {
            path: self.path.clone(),
            message: message.into(),
        });
    }

    fn fail_at(&mut self, key: &str, message: impl Into<String>) {
        self.key(key, |c| c.fail(message));
    }

    fn required<'v, T>(&mut self, key: &str, value: &'v Option<T>) -> Option<&'v T> {
        if value.is_none() {
            self.fail_at(key, "missing (required)");
        }
        value.as_ref()
    }

    fn duration(&mut self, key: &str, value: &Option<String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.fail_at(
                    key,
                    format!(
                        "invalid duration {text:?} ({e}); write e.g. \"250ms\", \"30s\", \"5m\""
                    ),
                );
                default
            }
        }
    }

    fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail_at(
                    key,
                    format!("invalid address {value:?}; write ip:port, e.g. \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    fn limit(&mut self, key: &str, value: Option<u64>, default: usize, range: (u64, u64)) -> usize {
        match value {
            None => default,
            Some(v) if (range.0..=range.1).contains(&v) => v as usize,
            Some(v) => {
                self.fail_at(
                    key,
                    format!("{v} is out of range {}..={}", range.0, range.1),
                );
                default
            }
        }
    }

    fn one_of<T: Copy>(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: T,
        choices: &[(&str, T)],
    ) -> T {
        let Some(text) = value else { return default };
        if let Some((_, v)) = choices.iter().find(|(name, _)| name == text) {
            return *v;
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        self.fail_at(
            key,
            format!(
                "unknown value {text:?}; expected one of {}",
                names.join(", ")
            ),
        );
        default
    }
}

/// ALB's limits on the request head.
/// ALB's client keep-alive duration (`client_keep_alive.seconds`): one hour.
const DEFAULT_CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(3600);

const DEFAULT_LIMITS: Limits = Limits {
    max_header_bytes: 64 * 1024,
    max_headers: 100,
    max_uri_bytes: 16 * 1024,
};

impl TryFrom<ConfigFile> for super::Config {
    type Error = Vec<Problem>;

    fn try_from(file: ConfigFile) -> Result<Self, Self::Error> {
        let mut c = Check {
            path: Vec::new(),
            problems: Vec::new(),
        };
        let admin = c.key("admin", |c| {
            let listen = file
                .admin
                .as_ref()
                .and_then(|a| a.listen.as_deref())
                .unwrap_or("127.0.0.1:9901");
            Admin {
                listen: c
                    .socket_addr("listen", listen)
                    .unwrap_or_else(|| ([127, 0, 0, 1], 9901).into()),
            }
        });
        let shutdown_timeout = c.key("shutdown", |c| {
            let timeout = file.shutdown.as_ref().and_then(|s| s.timeout.clone());
            c.duration("timeout", &timeout, Duration::from_secs(30))
        });
        let target_groups: BTreeMap<String, TargetGroup> = c.key("target_groups", |c| {
            file.target_groups
                .iter()
                .map(|(name, group)| {
                    (
                        name.clone(),
                        c.key(name, |c| target_group(c, name, group, &file.base_dir)),
                    )
                })
                .collect()
        });
        if file.listeners.is_empty() {
            c.fail_at("listeners", "at least one [[listeners]] is required");
        }
        // Kept with their position in the file: a listener that failed validation leaves
        // a gap, and later problems must still name the right `listeners[i]`.
        let listeners: Vec<(usize, Listener)> = c.key("listeners", |c| {
            file.listeners
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    c.at(Segment::Index(i), |c| {
                        listener(c, l, &target_groups, &file.base_dir)
                    })
                    .map(|l| (i, l))
                })
                .collect()
        });
        let mut names = HashSet::new();
        let mut binds = HashSet::new();
        for (i, l) in &listeners {
            let i = *i;
            if !names.insert(l.name.clone()) {
                c.key("listeners", |c| {
                    c.at(Segment::Index(i), |c| {
                        c.fail_at("name", format!("duplicate listener name {:?}", l.name))
                    })
                });
            }
            // Port 0 asks the kernel for a free port: never a clash.
            if l.bind.port() != 0 && (!binds.insert(l.bind) || l.bind == admin.listen) {
                c.key("listeners", |c| {
                    c.at(Segment::Index(i), |c| {
                        c.fail_at(
                            "bind",
                            format!("address {} is already used by another listener", l.bind),
                        )
                    })
                });
            }
        }
        // ECS's published quota for the task APIs: 20 per second sustained, bursts of 100.
        let aws = file.aws.as_ref();
        let aws_api_rate = aws.and_then(|a| a.api_rate).unwrap_or(20.0);
        let aws_api_burst = aws.and_then(|a| a.api_burst).unwrap_or(100.0);
        if !(0.1..=10_000.0).contains(&aws_api_rate) {
            c.key("aws", |c| {
                c.fail_at("api_rate", "must be between 0.1 and 10000 calls per second")
            });
        }
        if !(1.0..=100_000.0).contains(&aws_api_burst) {
            c.key("aws", |c| {
                c.fail_at("api_burst", "must be between 1 and 100000 calls")
            });
        }
        let aws_api_timeout = c.key("aws", |c| {
            let timeout = aws.and_then(|a| a.api_timeout.clone());
            let d = c.duration("api_timeout", &timeout, Duration::from_secs(10));
            if d < Duration::from_millis(10) {
                c.fail_at("api_timeout", "must be at least 10ms");
            }
            d
        });
        let access_log = match file.access_log.as_ref().and_then(|a| a.output.as_deref()) {
            None | Some("off") => crate::access_log::Output::Off,
            Some("stdout") => crate::access_log::Output::Stdout,
            Some("") => {
                c.key("access_log", |c| {
                    c.fail_at("output", "\"off\", \"stdout\" or a file path")
                });
                crate::access_log::Output::Off
            }
            Some(path) => crate::access_log::Output::File(path.into()),
        };
        if c.problems.is_empty() {
            let listeners = listeners.into_iter().map(|(_, l)| l).collect();
            Ok(Config {
                admin,
                shutdown_timeout,
                listeners,
                target_groups,
                metrics_enabled: file
                    .metrics
                    .as_ref()
                    .and_then(|m| m.enabled)
                    .unwrap_or(true),
                access_log,
                aws_api_rate,
                aws_api_burst,
                aws_api_timeout,
            })
        } else {
            Err(c.problems)
        }
    }
}

fn listener(
    c: &mut Check,
    l: &ListenerFile,
    groups: &BTreeMap<String, TargetGroup>,
    base: &Path,
) -> Option<Listener> {
    let name = c.required("name", &l.name).cloned();
    let bind = c
        .required("bind", &l.bind)
        .and_then(|b| c.socket_addr("bind", b));
    let protocol = c.one_of(
        "protocol",
        &l.protocol,
        Protocol::Http,
        &[
            ("http", Protocol::Http),
            ("https", Protocol::Https),
            ("tcp", Protocol::Tcp),
            ("tls", Protocol::Tls),
            ("tls_passthrough", Protocol::TlsPassthrough),
        ],
    );
    let default_action = c
        .required("default_action", &l.default_action)
        .and_then(|a| c.key("default_action", |c| action(c, a, groups, protocol)));
    let mut priorities = HashSet::new();
    let mut rules: Vec<Rule> = c.key("rules", |c| {
        l.rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                c.at(Segment::Index(i), |c| {
                    let rule = rule(c, r, groups, protocol);
                    // Checked on the raw priority, so a duplicate is reported even when the
                    // rule has other problems.
                    if let Some(p) = r.priority.filter(|p| (1..=50_000).contains(p)) {
                        if !priorities.insert(p) {
                            c.fail_at(
                                "priority",
                                format!("priority {p} is used by another rule of this listener"),
                            );
                        }
                    }
                    rule
                })
            })
            .collect()
    });
    rules.sort_by_key(|r| r.priority);
    match protocol {
        Protocol::Tcp | Protocol::Tls if !l.rules.is_empty() => c.fail_at(
            "rules",
            format!(
                "{} listeners have no rules: every connection takes the default action",
                protocol.name()
            ),
        ),
        _ => {}
    }
    // NLB's idle timeout for TCP flows is 350 s; ALB's is 60 s.
    let default_idle = if protocol.is_http() { 60 } else { 350 };
    let idle_timeout = c.duration(
        "idle_timeout",
        &l.idle_timeout,
        Duration::from_secs(default_idle),
    );
    if !protocol.is_http() {
        let http_only = [
            ("desync_mitigation_mode", l.desync_mitigation_mode.is_some()),
            ("max_header_bytes", l.max_header_bytes.is_some()),
            ("max_headers", l.max_headers.is_some()),
            ("max_uri_bytes", l.max_uri_bytes.is_some()),
            ("xff_header_processing", l.xff_header_processing.is_some()),
            ("xff_client_port", l.xff_client_port.is_some()),
            (
                "drop_invalid_header_fields",
                l.drop_invalid_header_fields.is_some(),
            ),
            ("response_headers", l.response_headers.is_some()),
            ("client_keep_alive", l.client_keep_alive.is_some()),
        ];
        for (key, given) in http_only {
            if given {
                c.fail_at(key, "applies to http and https listeners only");
            }
        }
    }
    // ALB's default; its range is 60 s to 7 days (shorter ones serve tests here).
    let client_keep_alive = c.duration(
        "client_keep_alive",
        &l.client_keep_alive,
        DEFAULT_CLIENT_KEEP_ALIVE,
    );
    if !(Duration::from_secs(1)..=Duration::from_secs(7 * 86_400)).contains(&client_keep_alive) {
        c.fail_at("client_keep_alive", "must be from 1s to 7 days");
    }
    let desync_mitigation_mode = c.one_of(
        "desync_mitigation_mode",
        &l.desync_mitigation_mode,
        DesyncMode::Defensive,
        &[
            ("monitor", DesyncMode::Monitor),
            ("defensive", DesyncMode::Defensive),
            ("strictest", DesyncMode::Strictest),
        ],
    );
    let xff = Xff {
        mode: c.one_of(
            "xff_header_processing",
            &l.xff_header_processing,
            XffMode::Append,
            &[
                ("append", XffMode::Append),
                ("preserve", XffMode::Preserve),
                ("remove", XffMode::Remove),
            ],
        ),
        client_port: l.xff_client_port.unwrap_or(false),
    };
    let limits = Limits {
        max_header_bytes: c.limit(
            "max_header_bytes",
            l.max_header_bytes,
            DEFAULT_LIMITS.max_header_bytes,
            (1024, 1 << 20),
        ),
        max_headers: c.limit(
            "max_headers",
            l.max_headers,
            DEFAULT_LIMITS.max_headers,
            (1, 1000),
        ),
        max_uri_bytes: c.limit(
            "max_uri_bytes",
            l.max_uri_bytes,
            DEFAULT_LIMITS.max_uri_bytes,
            (64, 1 << 20),
        ),
    };
    let tls = if protocol.terminates_tls() {
        listener_tls(c, l, protocol, base)
    } else {
        let tls_only = [
            ("certificates", l.certificates.is_some()),
            ("tls_policy", l.tls_policy.is_some()),
            ("alpn_policy", l.alpn_policy.is_some()),
            ("mutual_tls", l.mutual_tls.is_some()),
        ];
        for (key, given) in tls_only {
            if given {
                c.fail_at(key, "applies to https and tls listeners only");
            }
        }
        None
    };
    let tls_headers = l.x_amzn_tls_version_and_cipher_suite.unwrap_or(false);
    if l.x_amzn_tls_version_and_cipher_suite.is_some() && protocol != Protocol::Https {
        c.fail_at(
            "x_amzn_tls_version_and_cipher_suite",
            "applies to https listeners only",
        );
    }
    Some(Listener {
        name: name?,
        bind: bind?,
        protocol,
        rules,
        default_action: default_action?,
        idle_timeout,
        client_keep_alive,
        desync_mitigation_mode,
        limits,
        tls,
        accept_proxy_protocol: l.accept_proxy_protocol.unwrap_or(false),
        xff,
        tls_headers,
        drop_invalid_header_fields: l.drop_invalid_header_fields.unwrap_or(false),
        response_headers: match &l.response_headers {
            Some(h) if protocol.is_http() => c.key("response_headers", |c| response_headers(c, h)),
            _ => Vec::new(),
        },
    })
}

/// The fields of a listener's `response_headers`, each value checked against what its
/// field allows (as ALB checks its response header attributes).
fn response_headers(
    c: &mut Check,
    h: &ResponseHeadersFile,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    use http::header;
    type Rule = fn(&str) -> Result<(), String>;
    let max_age = h.access_control_max_age.map(|n| n.to_string());
    let fields: [(&str, header::HeaderName, &Option<String>, Rule); 10] = [
        (
            "strict_transport_security",
            header::STRICT_TRANSPORT_SECURITY,
            &h.strict_transport_security,
            hsts,
        ),
        (
            "content_security_policy",
            header::CONTENT_SECURITY_POLICY,
            &h.content_security_policy,
            |_| Ok(()),
        ),
        (
            "x_content_type_options",
            header::X_CONTENT_TYPE_OPTIONS,
            &h.x_content_type_options,
            |v| exactly(v, "nosniff"),
        ),
        (
            "x_frame_options",
            header::X_FRAME_OPTIONS,
            &h.x_frame_options,
            x_frame_options,
        ),
        (
            "access_control_allow_origin",
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            &h.access_control_allow_origin,
            allow_origin,
        ),
        (
            "access_control_allow_methods",
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &h.access_control_allow_methods,
            |v| list_of(v, "method", |m| Method::from_bytes(m.as_bytes()).is_ok()),
        ),
        (
            "access_control_allow_headers",
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &h.access_control_allow_headers,
            field_names,
        ),
        (
            "access_control_allow_credentials",
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            &h.access_control_allow_credentials,
            |v| exactly(v, "true"),
        ),
        (
            "access_control_expose_headers",
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &h.access_control_expose_headers,
            field_names,
        ),
        (
            "access_control_max_age",
            header::ACCESS_CONTROL_MAX_AGE,
            &max_age,
            |_| Ok(()),
        ),
    ];
    let mut out = Vec::new();
    for (key, name, value, rule) in fields {
        let Some(value) = value else { continue };
        let checked = match http::HeaderValue::from_str(value) {
            Ok(_) if value.trim().is_empty() => Err("must not be empty".to_owned()),
            Ok(v) => rule(value.trim()).map(|()| v),
            Err(_) => Err("must be visible ASCII characters and spaces".to_owned()),
        };
        match checked {
            Ok(v) => out.push((name, v)),
            Err(e) => c.fail_at(key, e),
        }
    }
    out
}

fn exactly(value: &str, only: &str) -> Result<(), String> {
    if value.eq_ignore_ascii_case(only) {
        Ok(())
    } else {
        Err(format!("must be \"{only}\""))
    }
}

/// `max-age=N`, and optionally `includeSubDomains` and `preload` (RFC 6797 §6.1).
fn hsts(value: &str) -> Result<(), String> {
    let mut max_age = false;
    for directive in value.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.split_once('=') {
            Some((name, n)) if name.trim().eq_ignore_ascii_case("max-age") => {
                let n = n.trim().trim_matches('"');
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("max-age must be a number of seconds, not {n:?}"));
                }
                max_age = true;
            }
            _ if directive.eq_ignore_ascii_case("includeSubDomains")
                || directive.eq_ignore_ascii_case("preload") => {}
            _ => {
                return Err(format!(
                    "unknown directive {directive:?}; expected max-age=SECONDS, \
                     includeSubDomains, preload"
                ))
            }
        }
    }
    if max_age {
        Ok(())
    } else {
        Err("must have max-age=SECONDS".to_owned())
    }
}

/// `DENY`, `SAMEORIGIN` or `ALLOW-FROM <uri>` (RFC 7034).
fn x_frame_options(value: &str) -> Result<(), String> {
    let allow_from = value
        .get(..11)
        .is_some_and(|p| p.eq_ignore_ascii_case("ALLOW-FROM "))
        && !value[11..].trim().is_empty();
    if value.eq_ignore_ascii_case("DENY") || value.eq_ignore_ascii_case("SAMEORIGIN") || allow_from
    {
        Ok(())
    } else {
        Err("must be DENY, SAMEORIGIN or ALLOW-FROM <uri>".to_owned())
    }
}

/// `*`, `null`, or an origin: `scheme://host[:port]` with no path.
fn allow_origin(value: &str) -> Result<(), String> {
    if value == "*" || value == "null" {
        return Ok(());
    }
    let origin = value.parse::<http::Uri>().ok().filter(|u| {
        u.scheme().is_some()
            && u.authority().is_some()
            && u.path_and_query().is_none_or(|p| p.as_str() == "/")
            && !value.ends_with('/')
    });
    match origin {
        Some(_) => Ok(()),
        None => Err(format!(
            "must be *, null or an origin such as https://app.example.com, not {value:?}"
        )),
    }
}

/// `*`, or a comma-separated list of header field names.
fn field_names(value: &str) -> Result<(), String> {
    list_of(value, "field name", |n| {
        http::HeaderName::from_bytes(n.as_bytes()).is_ok()
    })
}

/// `*`, or a comma-separated list of items that each pass `valid`.
fn list_of(value: &str, what: &str, valid: fn(&str) -> bool) -> Result<(), String> {
    if value == "*" {
        return Ok(());
    }
    match value.split(',').map(str::trim).find(|i| !valid(i)) {
        Some(bad) => Err(format!("{bad:?} is not a {what}")),
        None => Ok(()),
    }
}

/// Certificates (each loaded and checked now, so a bad file is reported at its line),
/// policies and client-certificate verification of an `https` or `tls` listener.
fn listener_tls(
    c: &mut Check,
    l: &ListenerFile,
    protocol: Protocol,
    base: &Path,
) -> Option<ListenerTls> {
    let files = l.certificates.as_deref().unwrap_or_default();
    if files.is_empty() {
        c.fail_at(
            "certificates",
            format!(
                "an {} listener needs at least one certificate, e.g. certificates = [{{ cert = \"site.pem\", key = \"site.key\" }}]",
                protocol.name()
            ),
        );
    }
    let certificates: Vec<Certificate> = c.key("certificates", |c| {
        files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| c.at(Segment::Index(i), |c| certificate(c, f, base)))
            .collect()
    });
    let policy = c.one_of(
        "tls_policy",
        &l.tls_policy,
        TlsPolicy::Tls13And12,
        &TlsPolicy::ALL,
    );
    let default_alpn = match protocol {
        Protocol::Https => AlpnPolicy::Http2Preferred,
        _ => AlpnPolicy::None,
    };
    let alpn = c.one_of(
        "alpn_policy",
        &l.alpn_policy,
        default_alpn,
        &AlpnPolicy::ALL,
    );
    let mutual_tls = l.mutual_tls.as_ref().map_or(MutualTls::Off, |m| {
        c.key("mutual_tls", |c| match m.mode.as_deref() {
            None | Some("verify") => {
                let path = c.required("trust_store", &m.trust_store);
                path.and_then(|path| c.key("trust_store", |c| ca_bundle(c, path, base)))
                    .map_or(MutualTls::Off, MutualTls::Verify)
            }
            Some(mode @ ("off" | "passthrough")) => {
                if m.trust_store.is_some() {
                    c.fail_at("trust_store", "applies to mode \"verify\" only");
                }
                if mode == "off" {
                    MutualTls::Off
                } else {
                    if protocol != Protocol::Https {
                        c.fail_at(
                            "mode",
                            "passthrough hands the certificate to targets in HTTP headers: https listeners only",
                        );
                    }
                    MutualTls::Passthrough
                }
            }
            Some(other) => {
                c.fail_at(
                    "mode",
                    format!("unknown value {other:?}; expected one of verify, passthrough, off"),
                );
                MutualTls::Off
            }
        })
    });
    (certificates.len() == files.len() && !files.is_empty()).then_some(ListenerTls {
        certificates,
        policy,
        alpn,
        mutual_tls,
    })
}

fn certificate(c: &mut Check, f: &CertificateFile, base: &Path) -> Option<Certificate> {
    let cert = c.required("cert", &f.cert).map(|p| base.join(p));
    let key = c.required("key", &f.key).map(|p| base.join(p));
    let (cert, key) = (cert?, key?);
    match crate::tls::load_certificate(&cert, &key) {
        Ok(loaded) => Some(Certificate {
            cert,
            key,
            loaded: Arc::new(loaded),
        }),
        Err(e) => {
            c.fail_at(e.field, e.message);
            None
        }
    }
}

fn ca_bundle(c: &mut Check, path: &str, base: &Path) -> Option<CaBundle> {
    let path = base.join(path);
    match crate::tls::load_ca_bundle(&path) {
        Ok(certs) => Some(CaBundle {
            path,
            certs: Arc::new(certs),
        }),
        Err(e) => {
            c.fail(e);
            None
        }
    }
}

fn rule(
    c: &mut Check,
    r: &RuleFile,
    groups: &BTreeMap<String, TargetGroup>,
    listener: Protocol,
) -> Option<Rule> {
    let priority = c.required("priority", &r.priority).and_then(|&p| {
        if (1..=50_000).contains(&p) {
            Some(p as u32)
        } else {
            c.fail_at("priority", format!("{p} is out of range 1..=50000"));
            None
        }
    });
    let conditions = match &r.conditions {
        Some(conds) => c.key("conditions", |c| conditions(c, conds)),
        None => {
            c.fail_at(
                "conditions",
                "missing (required): a rule needs at least one condition",
            );
            None
        }
    };
    let action = c
        .required("action", &r.action)
        .and_then(|a| c.key("action", |c| action(c, a, groups, listener)));
    if let (Protocol::TlsPassthrough, Some(conds)) = (listener, &conditions) {
        let by_request = !conds.path.is_empty()
            || !conds.http_header.is_empty()
            || !conds.method.is_empty()
            || !conds.query.is_empty();
        if by_request {
            c.fail_at(
                "conditions",
                "a tls_passthrough listener sees no request: only host (the TLS server name) and source_ip apply",
            );
        }
    }
    Some(Rule {
        priority: priority?,
        conditions: conditions?,
        action: action?,
    })
}

fn conditions(c: &mut Check, f: &ConditionsFile) -> Option<Conditions> {
    let before = c.problems.len();
    let mut out = Conditions::default();
    if f.host.is_empty()
        && f.path.is_empty()
        && f.http_header.is_empty()
        && f.method.is_empty()
        && f.query.is_empty()
        && f.source_ip.is_empty()
    {
        c.fail("at least one of host, path, http_header, method, query, source_ip is required");
    }
    c.key("host", |c| {
        for (i, h) in f.host.iter().enumerate() {
            if h.is_empty()
                || h.len() > 128
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*?:".contains(&b))
            {
                c.at(Segment::Index(i), |c| {
                    c.fail(format!(
                        "invalid host pattern {h:?}: up to 128 of a-z, A-Z, 0-9, - . * ?"
                    ))
                });
            }
        }
        out.host = f.host.clone();
    });
    c.key("path", |c| {
        for (i, p) in f.path.iter().enumerate() {
            if !p.starts_with('/') && !p.starts_with('*') {
                c.at(Segment::Index(i), |c| {
                    c.fail(format!(
                        "invalid path pattern {p:?}: must start with / (or *)"
                    ))
                });
            } else if p.len() > 128 || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                c.at(Segment::Index(i), |c| {
                    c.fail(format!(
                        "invalid path pattern {p:?}: up to 128 printable characters, no spaces"
                    ))
                });
            }
        }
        out.path = f.path.clone();
    });
    c.key("http_header", |c| {
        for (i, h) in f.http_header.iter().enumerate() {
            c.at(Segment::Index(i), |c| {
                let name = c.required("name", &h.name);
                if let Some(name) = name {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        c.fail_at("name", format!("invalid header name {name:?}"));
                    }
                }
                if h.values.is_empty() {
                    c.fail_at("values", "at least one value is required");
                }
                if let Some(name) = name {
                    out.http_header.push(HeaderCondition {
                        name: name.to_ascii_lowercase(),
                        values: h.values.clone(),
                    });
                }
            });
        }
    });
    c.key("method", |c| {
        for (i, m) in f.method.iter().enumerate() {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
            {
                c.at(Segment::Index(i), |c| {
                    c.fail(format!("invalid method {m:?}: upper-case letters, - and _"))
                });
            } else if let Ok(method) = Method::from_bytes(m.as_bytes()) {
                out.method.push(method);
            }
        }
    });
    c.key("query", |c| {
        for (i, q) in f.query.iter().enumerate() {
            c.at(Segment::Index(i), |c| {
                if let Some(value) = c.required("value", &q.value) {
                    out.query.push(QueryCondition {
                        key: q.key.clone(),
                        value: value.clone(),
                    });
                }
            });
        }
    });
    c.key("source_ip", |c| {
        for (i, s) in f.source_ip.iter().enumerate() {
            match s.parse::<IpNet>() {
                Ok(net) => out.source_ip.push(net.trunc()),
                Err(_) => c.at(Segment::Index(i), |c| {
                    c.fail(format!(
                        "invalid CIDR {s:?}; write e.g. \"10.0.0.0/8\" or \"::1/128\""
                    ))
                }),
            }
        }
    });
    (c.problems.len() == before).then_some(out)
}

fn action(
    c: &mut Check,
    a: &ActionFile,
    groups: &BTreeMap<String, TargetGroup>,
    listener: Protocol,
) -> Option<Action> {
    let kinds = [
        a.forward.is_some(),
        a.redirect.is_some(),
        a.fixed_response.is_some(),
    ]
    .into_iter()
    .filter(|&k| k)
    .count();
    if kinds != 1 {
        c.fail("exactly one of forward, redirect, fixed_response is required");
        return None;
    }
    if !listener.is_http() && a.forward.is_none() {
        c.fail(format!(
            "a {} listener can only forward (redirect and fixed_response are HTTP actions)",
            listener.name()
        ));
        return None;
    }
    if a.stickiness.is_some() && a.forward.is_none() {
        c.fail_at("stickiness", "only a forward action has group stickiness");
    }
    if let Some(forward) = &a.forward {
        let stickiness = a
            .stickiness
            .as_ref()
            .map(|_| c.duration("stickiness", &a.stickiness, Duration::ZERO));
        let known = |c: &mut Check, name: &str| {
            match groups.get(name) {
            None => c.fail(format!(
                "unknown target group {name:?}; defined: {}",
                groups.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(g) if g.protocol.is_http() != listener.is_http() => c.fail(format!(
                "target group {name:?} has protocol {:?}, which a {} listener cannot forward to (http and https groups serve http and https listeners; tcp and tls groups the others)",
                g.protocol, listener.name()
            )),
            Some(_) => {}
        }
        };
        let groups_out = c.key("forward", |c| match forward {
            ForwardFile::One(name) => {
                known(c, name);
                vec![WeightedGroup {
                    group: name.clone(),
                    weight: 1,
                }]
            }
            ForwardFile::Weighted(list) => {
                if list.is_empty() || list.len() > 5 {
                    c.fail("list 1 to 5 target groups");
                }
                list.iter()
                    .enumerate()
                    .filter_map(|(i, w)| {
                        c.at(Segment::Index(i), |c| {
                            let group = c.required("group", &w.group)?;
                            c.key("group", |c| known(c, group));
                            let weight = w.weight.unwrap_or(1);
                            if !(0..=999).contains(&weight) {
                                c.fail_at("weight", format!("{weight} is out of range 0..=999"));
                            }
                            Some(WeightedGroup {
                                group: group.clone(),
                                weight: weight.clamp(0, 999) as u32,
                            })
                        })
                    })
                    .collect()
            }
        });
        if !groups_out.is_empty() && groups_out.iter().all(|g| g.weight == 0) {
            c.fail_at("forward", "at least one weight must be above 0");
        }
        return Some(Action::Forward {
            groups: groups_out,
            stickiness,
        });
    }
    if let Some(r) = &a.redirect {
        return c.key("redirect", |c| {
            let protocol = r.protocol.clone().unwrap_or_else(|| "#{protocol}".into());
            if !["http", "https", "HTTP", "HTTPS", "#{protocol}"].contains(&protocol.as_str()) {
                c.fail_at(
                    "protocol",
                    format!("invalid protocol {protocol:?}: http, https or #{{protocol}}"),
                );
            }
            let path = r.path.clone().unwrap_or_else(|| "/#{path}".into());
            if !path.starts_with('/') {
                c.fail_at("path", format!("invalid path {path:?}: must start with /"));
            }
            let status = r.status.unwrap_or(301);
            if status != 301 && status != 302 {
                c.fail_at(
                    "status",
                    format!("{status} is not a redirect status: 301 or 302"),
                );
            }
            Some(Action::Redirect(Redirect {
                protocol: protocol.to_ascii_lowercase(),
                host: r.host.clone().unwrap_or_else(|| "#{host}".into()),
                port: r.port.clone().unwrap_or_else(|| "#{port}".into()),
                path,
                query: r.query.clone().unwrap_or_else(|| "#{query}".into()),
                status: status as u16,
            }))
        });
    }
    let f = a.fixed_response.as_ref()?;
    c.key("fixed_response", |c| {
        let status = c.required("status", &f.status).copied().unwrap_or(200);
        if !(200..=299).contains(&status) && !(400..=599).contains(&status) {
            c.fail_at(
                "status",
                format!("{status} is not a 2XX, 4XX or 5XX status"),
            );
        }
        let body = f.body.clone().unwrap_or_default();
        if body.len() > 1024 {
            c.fail_at("body", format!("{} bytes; at most 1024", body.len()));
        }
        let content_type = f
            .content_type
            .clone()
            .unwrap_or_else(|| "text/plain".into());
        if http::HeaderValue::from_str(&content_type).is_err() {
            c.fail_at(
                "content_type",
                format!("invalid content type {content_type:?}"),
            );
        }
        Some(Action::FixedResponse(FixedResponse {
            status: status.clamp(200, 599) as u16,
            content_type,
            body,
        }))
    })
}

fn target_group(c: &mut Check, name: &str, g: &TargetGroupFile, base: &Path) -> TargetGroup {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.fail(format!(
            "invalid target group name {name:?}: up to 32 of a-z, A-Z, 0-9, - and _"
        ));
    }
    let protocol = c.one_of(
        "protocol",
        &g.protocol,
        GroupProtocol::Http,
        &[
            ("http", GroupProtocol::Http),
            ("https", GroupProtocol::Https),
            ("tcp", GroupProtocol::Tcp),
            ("tls", GroupProtocol::Tls),
        ],
    );
    let tls = match &g.tls {
        Some(t) if protocol.is_tls() => c.key("tls", |c| upstream_tls(c, t, base)),
        Some(_) => {
            c.fail_at("tls", "applies to https and tls target groups only");
            UpstreamTls::default()
        }
        None => UpstreamTls {
            verify: true,
            ..UpstreamTls::default()
        },
    };
    if g.proxy_protocol_v2.is_some() && protocol.is_http() {
        c.fail_at(
            "proxy_protocol_v2",
            "applies to tcp and tls target groups only (HTTP targets get X-Forwarded-For)",
        );
    }
    if !protocol.is_http() {
        let http_only = [
            ("protocol_version", g.protocol_version.is_some()),
            ("response_timeout", g.response_timeout.is_some()),
            ("idle_timeout", g.idle_timeout.is_some()),
            ("stickiness", g.stickiness.is_some()),
            ("outlier_detection", g.outlier_detection.is_some()),
        ];
        for (key, given) in http_only {
            if given {
                c.fail_at(key, "applies to http and https target groups only");
            }
        }
    }
    let algorithm = c.one_of(
        "algorithm",
        &g.algorithm,
        Algorithm::RoundRobin,
        &[
            ("round_robin", Algorithm::RoundRobin),
            (
                "least_outstanding_requests",
                Algorithm::LeastOutstandingRequests,
            ),
            ("weighted_random", Algorithm::WeightedRandom),
            // NLB's name for the same thing over connections.
            ("least_connections", Algorithm::LeastOutstandingRequests),
        ],
    );
    let protocol_version = c.one_of(
        "protocol_version",
        &g.protocol_version,
        ProtocolVersion::Http1,
        PROTOCOL_VERSIONS,
    );
    let response_timeout = c.duration(
        "response_timeout",
        &g.response_timeout,
        Duration::from_secs(60),
    );
    let connect_timeout = c.duration(
        "connect_timeout",
        &g.connect_timeout,
        Duration::from_secs(10),
    );
    let idle_timeout = c.duration("idle_timeout", &g.idle_timeout, Duration::from_secs(60));
    if idle_timeout.is_zero() {
        c.fail_at("idle_timeout", "must be more than 0s");
    }
    let deregistration_delay = c.duration(
        "deregistration_delay",
        &g.deregistration_delay,
        Duration::from_secs(300),
    );
    let stickiness = g
        .stickiness
        .as_ref()
        .and_then(|s| c.key("stickiness", |c| stickiness(c, s)));
    let slow_start = c.duration("slow_start", &g.slow_start, Duration::ZERO);
    if !slow_start.is_zero()
        && !(Duration::from_secs(30)..=Duration::from_secs(900)).contains(&slow_start)
        && slow_start < Duration::from_millis(100)
    {
        c.fail_at("slow_start", "must be 0s (off) or at least 100ms");
    }
    let health_check = g.health_check.as_ref().and_then(|h| {
        c.key("health_check", |c| {
            health_check(c, h, protocol, protocol_version)
        })
    });
    let outlier_detection = g
        .outlier_detection
        .as_ref()
        .map(|o| c.key("outlier_detection", |c| outlier_detection(c, o)));
    let discovery = c.key("discovery", |c| discovery(c, g.discovery.as_ref()));
    TargetGroup {
        name: name.to_owned(),
        protocol,
        tls,
        proxy_protocol_v2: g.proxy_protocol_v2.unwrap_or(false),
        algorithm,
        protocol_version,
        response_timeout,
        connect_timeout,
        idle_timeout,
        deregistration_delay,
        stickiness,
        slow_start,
        health_check,
        outlier_detection,
        discovery,
    }
}

fn upstream_tls(c: &mut Check, t: &UpstreamTlsFile, base: &Path) -> UpstreamTls {
    let ca =
        t.ca.as_ref()
            .and_then(|path| c.key("ca", |c| ca_bundle(c, path, base)));
    if let Some(name) = &t.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            c.fail_at(
                "server_name",
                format!("invalid server name {name:?}: a DNS name or an IP address"),
            );
        }
    }
    if t.verify == Some(false) && (t.ca.is_some() || t.server_name.is_some()) {
        c.fail("ca and server_name are for verification, which verify = false turns off");
    }
    UpstreamTls {
        verify: t.verify.unwrap_or(true),
        ca,
        server_name: t.server_name.clone(),
    }
}

fn count(c: &mut Check, key: &str, value: Option<i64>, default: u32, range: (u32, u32)) -> u32 {
    match value {
        None => default,
        Some(v) if (i64::from(range.0)..=i64::from(range.1)).contains(&v) => v as u32,
        Some(v) => {
            c.fail_at(
                key,
                format!("{v} is out of range {}..={}", range.0, range.1),
            );
            default
        }
    }
}

/// The values of a group's and a health check's `protocol_version`.
const PROTOCOL_VERSIONS: &[(&str, ProtocolVersion)] = &[
    ("http1", ProtocolVersion::Http1),
    ("http2", ProtocolVersion::Http2),
    ("grpc", ProtocolVersion::Grpc),
];

/// ALB's defaults: HTTP checks every 30 s, 5 s timeout, 5 to turn healthy, 2 to turn
/// unhealthy, matcher 200; TCP checks every 30 s, 10 s timeout, 5 and 2. HTTP checks
/// speak the group's protocol `version` unless told another: a `grpc` group's are gRPC
/// calls, to path `/AWS.ALB/healthcheck` and passed by gRPC code 12 (UNIMPLEMENTED:
/// any gRPC server that is up answers it so) unless told otherwise.
fn health_check(
    c: &mut Check,
    h: &HealthCheckFile,
    group: GroupProtocol,
    version: ProtocolVersion,
) -> Option<HealthCheck> {
    if h.enabled == Some(false) {
        return None;
    }
    // As on ALB and NLB: a check speaks the group's protocol unless told otherwise, and
    // TCP and TLS groups are checked by opening a connection.
    let default = match group {
        GroupProtocol::Http => HealthProtocol::Http,
        GroupProtocol::Https => HealthProtocol::Https,
        GroupProtocol::Tcp | GroupProtocol::Tls => HealthProtocol::Tcp,
    };
    let protocol = c.one_of(
        "protocol",
        &h.protocol,
        default,
        &[
            ("http", HealthProtocol::Http),
            ("https", HealthProtocol::Https),
            ("tcp", HealthProtocol::Tcp),
        ],
    );
    let default_timeout = match protocol {
        HealthProtocol::Http | HealthProtocol::Https => Duration::from_secs(5),
        HealthProtocol::Tcp => Duration::from_secs(10),
    };
    let interval = c.duration("interval", &h.interval, Duration::from_secs(30));
    let timeout = c.duration("timeout", &h.timeout, default_timeout.min(interval));
    // ALB's own floors are 5 s and 2 s; ours are lower so fast failover and fast tests work.
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(300) {
        c.fail_at("interval", "must be between 100ms and 300s");
    }
    if timeout < Duration::from_millis(50) || timeout > interval {
        c.fail_at(
            "timeout",
            "must be at least 50ms and no longer than the interval",
        );
    }
    // A check may speak another version than the group's traffic, e.g. HTTP/1.1 to a
    // health port next to an HTTP/2 one.
    let version = c.one_of(
        "protocol_version",
        &h.protocol_version,
        version,
        PROTOCOL_VERSIONS,
    );
    let grpc = version == ProtocolVersion::Grpc && protocol != HealthProtocol::Tcp;
    let default_path = if grpc { "/AWS.ALB/healthcheck" } else { "/" };
    let path = h.path.clone().unwrap_or_else(|| default_path.into());
    if !path.starts_with('/')
        || path.len() > 1024
        || http::uri::PathAndQuery::try_from(path.as_str()).is_err()
    {
        c.fail_at("path", format!("invalid path {path:?}: must start with /"));
    }
    if protocol == HealthProtocol::Tcp
        && (h.path.is_some()
            || h.matcher.is_some()
            || h.host.is_some()
            || h.protocol_version.is_some())
    {
        c.fail(
            "path, matcher, host and protocol_version apply to http and https health checks only",
        );
    }
    let port = match &h.port {
        None => None,
        Some(PortFile::Text(t)) if t == "traffic-port" => None,
        Some(PortFile::Number(n)) if (1..=65535).contains(n) => Some(*n as u16),
        Some(PortFile::Text(t)) => match t.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                c.fail_at(
                    "port",
                    format!("invalid port {t:?}: \"traffic-port\" or 1..=65535"),
                );
                None
            }
        },
        Some(PortFile::Number(n)) => {
            c.fail_at("port", format!("{n} is out of range 1..=65535"));
            None
        }
    };
    let (bounds, default, example) = if grpc {
        (
            Matcher::GRPC,
            12,
            "gRPC codes and ranges 0-99, e.g. \"0\" or \"0-99\"",
        )
    } else {
        (
            Matcher::HTTP,
            200,
            "codes and ranges 100-599, e.g. \"200,202,300-399\"",
        )
    };
    let matcher = match &h.matcher {
        None => Matcher(vec![(default, default)]),
        Some(text) => Matcher::parse(text, bounds).unwrap_or_else(|| {
            c.fail_at("matcher", format!("invalid matcher {text:?}: {example}"));
            Matcher(vec![(default, default)])
        }),
    };
    if let Some(host) = &h.host {
        if http::HeaderValue::from_str(host).is_err() || host.is_empty() {
            c.fail_at("host", format!("invalid host {host:?}"));
        }
    }
    Some(HealthCheck {
        protocol,
        path,
        port,
        interval,
        timeout,
        healthy_threshold: count(c, "healthy_threshold", h.healthy_threshold, 5, (1, 10)),
        unhealthy_threshold: count(c, "unhealthy_threshold", h.unhealthy_threshold, 2, (1, 10)),
        matcher,
        version,
        host: h.host.clone(),
    })
}

fn outlier_detection(c: &mut Check, o: &OutlierDetectionFile) -> OutlierDetection {
    let base_ejection_time = c.duration(
        "base_ejection_time",
        &o.base_ejection_time,
        Duration::from_secs(30),
    );
    let max_ejection_time = c.duration(
        "max_ejection_time",
        &o.max_ejection_time,
        Duration::from_secs(300),
    );
    if max_ejection_time < base_ejection_time {
        c.fail_at(
            "max_ejection_time",
            "must not be shorter than base_ejection_time",
        );
    }
    OutlierDetection {
        consecutive_errors: count(c, "consecutive_errors", o.consecutive_errors, 5, (1, 1000)),
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: count(
            c,
            "max_ejection_percent",
            o.max_ejection_percent,
            50,
            (0, 100),
        ),
    }
}

fn stickiness(c: &mut Check, s: &StickinessFile) -> Option<Stickiness> {
    let duration = c.duration("duration", &s.duration, Duration::from_secs(86_400));
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(7 * 86_400) {
        c.fail_at("duration", "must be between 1s and 7d");
    }
    match s.kind.as_deref() {
        Some("lb_cookie") => {
            if s.cookie_name.is_some() {
                c.fail_at("cookie_name", "only app_cookie stickiness names a cookie");
            }
            Some(Stickiness::LbCookie { duration })
        }
        Some("app_cookie") => {
            let name = c.required("cookie_name", &s.cookie_name)?;
            let reserved = ["AWSALB", "AWSALBAPP", "AWSALBTG"]
                .iter()
                .any(|r| name.starts_with(r));
            if name.is_empty()
                || reserved
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            {
                c.fail_at(
                    "cookie_name",
                    format!("invalid cookie name {name:?} (AWSALB* names are reserved)"),
                );
            }
            Some(Stickiness::AppCookie {
                cookie_name: name.clone(),
                duration,
            })
        }
        Some(other) => {
            c.fail_at(
                "type",
                format!("unknown value {other:?}; expected one of lb_cookie, app_cookie"),
            );
            None
        }
        None => {
            c.fail_at("type", "missing (required): lb_cookie or app_cookie");
            None
        }
    }
}

fn discovery(c: &mut Check, d: Option<&DiscoveryFile>) -> Discovery {
    let Some(d) = d else {
        c.fail("missing (required): e.g. discovery = { static = [\"127.0.0.1:3000\"] }");
        return Discovery::Static(Vec::new());
    };
    let sources = [d.fixed.is_some(), d.ecs.is_some(), d.cloud_map.is_some()];
    if sources.iter().filter(|&&s| s).count() != 1 {
        c.fail("exactly one discovery source is required: static, ecs or cloud_map");
        return Discovery::Static(Vec::new());
    }
    if let Some(ecs) = &d.ecs {
        return c.key("ecs", |c| ecs_discovery(c, ecs));
    }
    if let Some(cm) = &d.cloud_map {
        return c.key("cloud_map", |c| cloud_map_discovery(c, cm));
    }
    let Some(list) = &d.fixed else {
        return Discovery::Static(Vec::new());
    };
    let addrs = c.key("static", |c| {
        list.iter()
            .enumerate()
            .filter_map(|(i, a)| {
                c.at(Segment::Index(i), |c| match a.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        c.fail(format!(
                            "invalid address {a:?}; write ip:port, e.g. \"127.0.0.1:3000\""
                        ));
                        None
                    }
                })
            })
            .collect()
    });
    Discovery::Static(addrs)
}

fn refresh(c: &mut Check, key: &str, value: &Option<String>, default: Duration) -> Duration {
    let d = c.duration(key, value, default);
    if d < Duration::from_millis(100) {
        c.fail_at(key, "must be at least 100ms");
    }
    d
}

fn ecs_discovery(c: &mut Check, e: &EcsFile) -> Discovery {
    let cluster = c
        .required("cluster", &e.cluster)
        .cloned()
        .unwrap_or_default();
    let container = c
        .required("container", &e.container)
        .cloned()
        .unwrap_or_default();
    let port = match c.required("port", &e.port) {
        Some(&p) if (1..=65535).contains(&p) => p as u16,
        Some(&p) => {
            c.fail_at("port", format!("{p} is out of range 1..=65535"));
            0
        }
        None => 0,
    };
    let filters = [
        e.service.clone().map(EcsTasks::Service),
        e.family.clone().map(EcsTasks::Family),
        e.started_by.clone().map(EcsTasks::StartedBy),
    ];
    let mut given = filters.into_iter().flatten();
    let tasks = match (given.next(), given.next()) {
        (Some(tasks), None) => tasks,
        _ => {
            c.fail("exactly one of service, family, started_by is required");
            EcsTasks::Service(String::new())
        }
    };
    let refresh_every = refresh(c, "refresh", &e.refresh, Duration::from_secs(10));
    let full_refresh = refresh(c, "full_refresh", &e.full_refresh, refresh_every * 6);
    Discovery::Ecs(EcsDiscovery {
        cluster,
        tasks,
        container,
        port,
        refresh: refresh_every,
        full_refresh,
        healthy_tasks_only: e.healthy_tasks_only.unwrap_or(false),
    })
}

fn cloud_map_discovery(c: &mut Check, m: &CloudMapFile) -> Discovery {
    let namespace = c
        .required("namespace", &m.namespace)
        .cloned()
        .unwrap_or_default();
    let service = c
        .required("service", &m.service)
        .cloned()
        .unwrap_or_default();
    let health_status = m.health_status.clone().unwrap_or_else(|| "HEALTHY".into());
    if !["HEALTHY", "UNHEALTHY", "ALL", "HEALTHY_OR_ELSE_ALL"].contains(&health_status.as_str()) {
        c.fail_at(
            "health_status",
            format!("unknown value {health_status:?}; expected one of HEALTHY, UNHEALTHY, ALL, HEALTHY_OR_ELSE_ALL"),
        );
    }
    Discovery::CloudMap(CloudMapDiscovery {
        namespace,
        service,
        health_status,
        query_parameters: m.query_parameters.clone(),
        refresh: refresh(c, "refresh", &m.refresh, Duration::from_secs(10)),
    })
}

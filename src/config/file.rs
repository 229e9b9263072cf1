//! The serde mirror of the TOML file: every field optional or defaulted, values kept as
//! the strings the user wrote, so validation can report each problem with its field.
//!
//! Unknown keys are not rejected here: [`super::load`] collects every one of them with
//! `serde_ignored`, so they are all reported at once.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConfigFile {
    pub(crate) admin: Option<AdminFile>,
    pub(crate) shutdown: Option<ShutdownFile>,
    pub(crate) metrics: Option<MetricsFile>,
    pub(crate) access_log: Option<AccessLogFile>,
    pub(crate) aws: Option<AwsFile>,
    #[serde(default)]
    pub(crate) listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub(crate) target_groups: BTreeMap<String, TargetGroupFile>,
    /// The config file's directory: relative certificate paths start there.
    #[serde(skip)]
    pub(crate) base_dir: std::path::PathBuf,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AdminFile {
    pub(crate) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AwsFile {
    pub(crate) api_rate: Option<f64>,
    pub(crate) api_burst: Option<f64>,
    pub(crate) api_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AccessLogFile {
    pub(crate) output: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct MetricsFile {
    pub(crate) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ShutdownFile {
    pub(crate) timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListenerFile {
    pub(crate) name: Option<String>,
    pub(crate) bind: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) default_action: Option<ActionFile>,
    #[serde(default)]
    pub(crate) rules: Vec<RuleFile>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) client_keep_alive: Option<String>,
    pub(crate) desync_mitigation_mode: Option<String>,
    pub(crate) max_header_bytes: Option<u64>,
    pub(crate) max_headers: Option<u64>,
    pub(crate) max_uri_bytes: Option<u64>,
    pub(crate) certificates: Option<Vec<CertificateFile>>,
    pub(crate) tls_policy: Option<String>,
    pub(crate) alpn_policy: Option<String>,
    pub(crate) mutual_tls: Option<MutualTlsFile>,
    pub(crate) accept_proxy_protocol: Option<bool>,
    pub(crate) xff_header_processing: Option<String>,
    pub(crate) xff_client_port: Option<bool>,
    pub(crate) x_amzn_tls_version_and_cipher_suite: Option<bool>,
    pub(crate) drop_invalid_header_fields: Option<bool>,
    pub(crate) response_headers: Option<ResponseHeadersFile>,
}

/// ALB's response header attributes (`routing.http.response.*.header_value`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ResponseHeadersFile {
    pub(crate) strict_transport_security: Option<String>,
    pub(crate) content_security_policy: Option<String>,
    pub(crate) x_content_type_options: Option<String>,
    pub(crate) x_frame_options: Option<String>,
    pub(crate) access_control_allow_origin: Option<String>,
    pub(crate) access_control_allow_methods: Option<String>,
    pub(crate) access_control_allow_headers: Option<String>,
    pub(crate) access_control_allow_credentials: Option<String>,
    pub(crate) access_control_expose_headers: Option<String>,
    pub(crate) access_control_max_age: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CertificateFile {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct MutualTlsFile {
    pub(crate) mode: Option<String>,
    pub(crate) trust_store: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RuleFile {
    pub(crate) priority: Option<i64>,
    pub(crate) conditions: Option<ConditionsFile>,
    pub(crate) action: Option<ActionFile>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConditionsFile {
    #[serde(default)]
    pub(crate) host: Vec<String>,
    #[serde(default)]
    pub(crate) path: Vec<String>,
    #[serde(default)]
    pub(crate) http_header: Vec<HeaderConditionFile>,
    #[serde(default)]
    pub(crate) method: Vec<String>,
    #[serde(default)]
    pub(crate) query: Vec<QueryConditionFile>,
    #[serde(default)]
    pub(crate) source_ip: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HeaderConditionFile {
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) values: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueryConditionFile {
    pub(crate) key: Option<String>,
    pub(crate) value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ActionFile {
    pub(crate) forward: Option<ForwardFile>,
    pub(crate) stickiness: Option<String>,
    pub(crate) redirect: Option<RedirectFile>,
    pub(crate) fixed_response: Option<FixedResponseFile>,
}

/// `forward = "group"` or `forward = [{ group = "a", weight = 90 }, ...]`.
#[derive(Debug)]
pub(crate) enum ForwardFile {
    One(String),
    Weighted(Vec<WeightedGroupFile>),
}

impl<'de> Deserialize<'de> for ForwardFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ForwardVisitor;
        impl<'de> Visitor<'de> for ForwardVisitor {
            type Value = ForwardFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a target group name or a list of { group, weight }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ForwardFile::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                // Delegating keeps the (serde_ignored-wrapped) access, so unknown keys
                // inside the entries are still reported.
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(ForwardFile::Weighted)
            }
        }
        deserializer.deserialize_any(ForwardVisitor)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WeightedGroupFile {
    pub(crate) group: Option<String>,
    pub(crate) weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RedirectFile {
    pub(crate) protocol: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) query: Option<String>,
    pub(crate) status: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FixedResponseFile {
    pub(crate) status: Option<i64>,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TargetGroupFile {
    pub(crate) protocol: Option<String>,
    pub(crate) tls: Option<UpstreamTlsFile>,
    pub(crate) proxy_protocol_v2: Option<bool>,
    pub(crate) algorithm: Option<String>,
    pub(crate) protocol_version: Option<String>,
    pub(crate) response_timeout: Option<String>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) deregistration_delay: Option<String>,
    pub(crate) stickiness: Option<StickinessFile>,
    pub(crate) slow_start: Option<String>,
    pub(crate) health_check: Option<HealthCheckFile>,
    pub(crate) outlier_detection: Option<OutlierDetectionFile>,
    pub(crate) discovery: Option<DiscoveryFile>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpstreamTlsFile {
    pub(crate) verify: Option<bool>,
    pub(crate) ca: Option<String>,
    pub(crate) server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct HealthCheckFile {
    pub(crate) enabled: Option<bool>,
    pub(crate) protocol: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) port: Option<PortFile>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) healthy_threshold: Option<i64>,
    pub(crate) unhealthy_threshold: Option<i64>,
    pub(crate) matcher: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) protocol_version: Option<String>,
}

/// `port = "traffic-port"` or `port = 8081`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum PortFile {
    Number(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct OutlierDetectionFile {
    pub(crate) consecutive_errors: Option<i64>,
    pub(crate) base_ejection_time: Option<String>,
    pub(crate) max_ejection_time: Option<String>,
    pub(crate) max_ejection_percent: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StickinessFile {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) duration: Option<String>,
    pub(crate) cookie_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DiscoveryFile {
    #[serde(rename = "static")]
    pub(crate) fixed: Option<Vec<String>>,
    pub(crate) ecs: Option<EcsFile>,
    pub(crate) cloud_map: Option<CloudMapFile>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EcsFile {
    pub(crate) cluster: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) family: Option<String>,
    pub(crate) started_by: Option<String>,
    pub(crate) container: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) refresh: Option<String>,
    pub(crate) full_refresh: Option<String>,
    pub(crate) healthy_tasks_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CloudMapFile {
    pub(crate) namespace: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) health_status: Option<String>,
    #[serde(default)]
    pub(crate) query_parameters: BTreeMap<String, String>,
    pub(crate) refresh: Option<String>,
}

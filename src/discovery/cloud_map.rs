//! Cloud Map discovery: `DiscoverInstances` of one service, each instance's
//! `AWS_INSTANCE_IPV4` (or `AWS_INSTANCE_IPV6`) and `AWS_INSTANCE_PORT`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use aws_sdk_servicediscovery::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_servicediscovery::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_servicediscovery::types::HealthStatusFilter;

use super::limiter::Limiter;
use super::{Error, Member};
use crate::config::CloudMapDiscovery;

/// Polls one Cloud Map service.
#[derive(Debug)]
pub(crate) struct CloudMap {
    client: aws_sdk_servicediscovery::Client,
    settings: CloudMapDiscovery,
    limiter: Arc<Limiter>,
}

impl CloudMap {
    pub(crate) fn new(
        sdk: &aws_config::SdkConfig,
        settings: CloudMapDiscovery,
        limiter: Arc<Limiter>,
    ) -> Self {
        let config = aws_sdk_servicediscovery::config::Builder::from(sdk)
            .interceptor(DataPrefixOnIpEndpoints)
            .build();
        Self {
            client: aws_sdk_servicediscovery::Client::from_conf(config),
            settings,
            limiter,
        }
    }

    /// The instances' addresses; `count` is told of each API call.
    pub(crate) async fn poll(
        &mut self,
        count: &(dyn Fn(&'static str) + Sync),
    ) -> Result<Vec<Member>, Error> {
        self.limiter.acquire().await;
        count("ServiceDiscovery.DiscoverInstances");
        let s = &self.settings;
        let out = self
            .client
            .discover_instances()
            .namespace_name(&s.namespace)
            .service_name(&s.service)
            .health_status(HealthStatusFilter::from(s.health_status.as_str()))
            .set_query_parameters(
                (!s.query_parameters.is_empty())
                    .then(|| s.query_parameters.clone().into_iter().collect()),
            )
            .max_results(1000)
            .send()
            .await
            .map_err(|e| {
                Error::Aws(aws_sdk_servicediscovery::error::DisplayErrorContext(e).to_string())
            })?;
        let mut addrs: Vec<SocketAddr> = out
            .instances()
            .iter()
            .filter_map(|i| {
                let attrs = i.attributes()?;
                let ip: IpAddr = attrs
                    .get("AWS_INSTANCE_IPV4")
                    .or_else(|| attrs.get("AWS_INSTANCE_IPV6"))?
                    .parse()
                    .ok()?;
                let port: u16 = attrs.get("AWS_INSTANCE_PORT")?.parse().ok()?;
                Some(SocketAddr::new(ip, port))
            })
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs
            .into_iter()
            .map(|addr| Member { addr, ecs: None })
            .collect())
    }
}

/// `DiscoverInstances` is modelled with the host prefix `data-`: against an endpoint
/// override such as `http://127.0.0.1:5000` the SDK would call `data-127.0.0.1`, which
/// does not resolve, and no setting turns the prefix off. This strips it when the rest
/// is an IP literal or `localhost`, and leaves real endpoints alone.
#[derive(Debug)]
struct DataPrefixOnIpEndpoints;

impl Intercept for DataPrefixOnIpEndpoints {
    fn name(&self) -> &'static str {
        "DataPrefixOnIpEndpoints"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_servicediscovery::error::BoxError> {
        let request = context.request_mut();
        let uri = request.uri().to_owned();
        if let Some(fixed) = strip_data_prefix(&uri) {
            request.set_uri(fixed)?;
        }
        Ok(())
    }
}

fn strip_data_prefix(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let host_end = rest.find(['/', ':', '?']).unwrap_or(rest.len());
    let host = rest[..host_end].strip_prefix("data-")?;
    (host == "localhost" || host.parse::<IpAddr>().is_ok())
        .then(|| format!("{scheme}://{host}{}", &rest[host_end..]))
}

#[cfg(test)]
mod tests {
    use super::strip_data_prefix;

    #[test]
    fn the_data_prefix_goes_only_from_ip_and_localhost_endpoints() {
        assert_eq!(
            strip_data_prefix("http://data-127.0.0.1:5000/"),
            Some("http://127.0.0.1:5000/".into())
        );
        assert_eq!(
            strip_data_prefix("http://data-localhost:5000"),
            Some("http://localhost:5000".into())
        );
        assert_eq!(
            strip_data_prefix("https://data-servicediscovery.us-east-1.amazonaws.com/"),
            None
        );
        assert_eq!(strip_data_prefix("http://127.0.0.1:5000/"), None);
    }
}

//! The one EC2 call ECS discovery needs: `DescribeInstances` for the private IPs of
//! container instances (bridge and host tasks). Made here with SigV4 signing and the
//! HTTP client already in the tree rather than with `aws-sdk-ec2`, whose build needs
//! about 8 GB of RAM and 13 CPU-minutes for this single call.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Error;

/// Private IPv4 of each instance in `ids` that EC2 knows.
pub(crate) async fn private_ips(
    sdk: &aws_config::SdkConfig,
    ids: &[String],
) -> Result<Vec<(String, Ipv4Addr)>, Error> {
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = sdk
        .endpoint_url()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
    let mut body = String::from("Action=DescribeInstances&Version=2016-11-15");
    for (i, id) in ids.iter().enumerate() {
        body.push_str(&format!("&InstanceId.{}={id}", i + 1));
    }
    let credentials = sdk
        .credentials_provider()
        .ok_or_else(|| Error::Aws("no AWS credentials".into()))?
        .provide_credentials()
        .await
        .map_err(|e| Error::Aws(format!("credentials: {e}")))?;
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("ec2")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Error::Aws(format!("signing: {e}")))?
        .into();
    let uri: Uri = endpoint
        .parse()
        .map_err(|_| Error::Aws(format!("invalid endpoint {endpoint}")))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let headers = [("host", host.as_str()), ("content-type", content_type)];
    let signable = SignableRequest::new(
        "POST",
        format!("{}/", endpoint.trim_end_matches('/')),
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| Error::Aws(format!("signing: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| Error::Aws(format!("signing: {e}")))?
        .into_parts();
    let mut req = Request::post("/")
        .header("host", &host)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Aws(format!("request: {e}")))?;
    instructions.apply_to_request_http1x(&mut req);
    // The same per-attempt limit as the SDK's calls (`[aws] api_timeout`).
    let limit = sdk
        .timeout_config()
        .and_then(|t| t.operation_attempt_timeout())
        .unwrap_or(Duration::from_secs(10));
    let text = tokio::time::timeout(limit, send(&uri, req))
        .await
        .map_err(|_| Error::Aws(format!("EC2 DescribeInstances: no answer in {limit:?}")))??;
    Ok(parse(&text))
}

async fn send(uri: &Uri, req: Request<Full<Bytes>>) -> Result<String, Error> {
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or("").to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let io_error = |e: std::io::Error| Error::Aws(format!("EC2 endpoint {host}:{port}: {e}"));
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(io_error)?;
    let (status, body) = if https {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Aws(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Error::Aws(format!("tls: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(io_error)?;
        exchange(TokioIo::new(tls), req).await?
    } else {
        exchange(TokioIo::new(stream), req).await?
    };
    if !status.is_success() {
        return Err(Error::Aws(format!(
            "EC2 DescribeInstances: {status}: {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    Ok(body)
}

async fn exchange<T>(io: T, req: Request<Full<Bytes>>) -> Result<(http::StatusCode, String), Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| Error::Aws(format!("EC2 DescribeInstances: {e}"));
    let (mut sender, conn) = http1::handshake(io).await.map_err(failed)?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(failed)?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(failed)?.to_bytes();
    driver.abort(); // one request per connection; the connection has served it
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Instance ids and primary private IPs from a `DescribeInstancesResponse` (EC2's XML):
/// each `<instanceId>` is followed, within its item, by the instance's own
/// `<privateIpAddress>` before any network interface's.
fn parse(xml: &str) -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some((id, after)) = element(rest, "instanceId") {
        let next_instance = after.find("<instanceId>").unwrap_or(after.len());
        if let Some((ip, _)) = element(&after[..next_instance], "privateIpAddress") {
            if let Ok(ip) = ip.parse() {
                out.push((id.to_owned(), ip));
            }
        }
        rest = after;
    }
    out
}

fn element<'a>(text: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some((text[start..end].trim(), &text[end + close.len()..]))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn instances_and_their_primary_private_ips_are_read_from_the_xml() {
        let xml = r#"<DescribeInstancesResponse><reservationSet><item><instancesSet>
            <item><instanceId>i-1</instanceId><privateIpAddress>127.0.0.21</privateIpAddress>
              <networkInterfaceSet><item><privateIpAddress>10.9.9.9</privateIpAddress></item></networkInterfaceSet></item>
            <item><instanceId>i-2</instanceId><privateIpAddress>127.0.0.22</privateIpAddress></item>
            <item><instanceId>i-3</instanceId></item>
            </instancesSet></item></reservationSet></DescribeInstancesResponse>"#;
        assert_eq!(
            parse(xml),
            vec![
                ("i-1".to_owned(), "127.0.0.21".parse().unwrap()),
                ("i-2".to_owned(), "127.0.0.22".parse().unwrap())
            ]
        );
    }
}

//! HTTP desync mitigation, as ALB does it: every HTTP/1 request is classified by AWS's
//! `http_desync_guardian` (Compliant, Acceptable, Ambiguous, Severe) and the listener's
//! mode decides what happens:
//!
//! | tier       | monitor | defensive                 | strictest |
//! |------------|---------|---------------------------|-----------|
//! | compliant  | forward | forward                   | forward   |
//! | acceptable | forward | forward                   | 400       |
//! | ambiguous  | forward | forward, then close both  | 400       |
//! | severe     | forward | 400                       | 400       |
//!
//! A blocked request gets 400 and its connection is closed. hyper parses the request
//! first, so what it cannot parse at all never gets here: it is answered 400 by hyper.

use http::{Request, Version};
use http_desync_guardian::request_analyzer::{HttpHeader, HttpRequestData};
use http_desync_guardian::{ClassificationReason, RequestSafetyTier};
use smallvec::SmallVec;

use crate::config::DesyncMode;

/// What to do with a classified request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward as usual.
    Forward,
    /// Forward, then close the client connection and do not reuse the target connection.
    ForwardAndClose,
    /// Answer 400 and close the connection.
    Block(ClassificationReason),
}

/// Classifies an HTTP/1 request (HTTP/2 requests are compliant by construction).
pub fn classify<B>(req: &Request<B>) -> (RequestSafetyTier, ClassificationReason) {
    let version: &[u8] = match req.version() {
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_11 => b"HTTP/1.1",
        Version::HTTP_09 => b"",
        _ => {
            return (
                RequestSafetyTier::Compliant,
                ClassificationReason::Compliant,
            )
        }
    };
    let uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut data = HttpRequestData {
        method: req.method().as_str().as_bytes(),
        version,
        uri: uri.as_bytes(),
        headers: req
            .headers()
            .iter()
            .map(|(name, value)| HttpHeader::new(name.as_str().as_bytes(), value.as_bytes()))
            .collect::<SmallVec<_>>(),
    };
    let result = data.analyze_parsed_request();
    (result.tier, result.reason)
}

/// The listener mode's decision for a request of this tier.
pub fn verdict(mode: DesyncMode, tier: RequestSafetyTier, reason: ClassificationReason) -> Verdict {
    use RequestSafetyTier::*;
    match (mode, tier) {
        (_, Compliant) | (DesyncMode::Monitor, _) => Verdict::Forward,
        (DesyncMode::Defensive, Acceptable) => Verdict::Forward,
        (DesyncMode::Defensive, Ambiguous) => Verdict::ForwardAndClose,
        (DesyncMode::Defensive, Severe) | (DesyncMode::Strictest, _) => Verdict::Block(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/foo");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    // Cases taken from the crate's own test tables (tests/*.yaml in http_desync_guardian).
    #[test]
    fn requests_are_classified_into_alb_tiers() {
        use RequestSafetyTier::*;
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            RequestSafetyTier,
        );
        let cases: &[Case] = &[
            ("GET", &[("host", "a")], Compliant),
            ("POST", &[("content-length", "10")], Compliant),
            ("POST", &[("transfer-encoding", "chunked")], Compliant),
            ("GET", &[("content-length", "0")], Acceptable),
            (
                "POST",
                &[("content-length", "10"), ("transfer-encoding", "chunked")],
                Ambiguous,
            ),
            (
                "POST",
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                Severe,
            ),
            (
                "POST",
                &[("content-length", "1000"), ("content-length", "100")],
                Severe,
            ),
            ("POST", &[("content-length", "1000,1000")], Severe),
            ("POST", &[("transfer-encoding", "xchunked")], Severe),
            ("POST", &[("transfer_encoding", "chunked")], Ambiguous),
        ];
        for (method, headers, want) in cases {
            let (tier, reason) = classify(&request(method, headers));
            assert_eq!(tier, *want, "{method} {headers:?} ({reason:?})");
        }
    }

    #[test]
    fn modes_act_on_tiers_as_alb_documents() {
        use DesyncMode::*;
        use RequestSafetyTier::*;
        let r = ClassificationReason::Compliant;
        let table = [
            (
                Monitor,
                [
                    Verdict::Forward,
                    Verdict::Forward,
                    Verdict::Forward,
                    Verdict::Forward,
                ],
            ),
            (
                Defensive,
                [
                    Verdict::Forward,
                    Verdict::Forward,
                    Verdict::ForwardAndClose,
                    Verdict::Block(r),
                ],
            ),
            (
                Strictest,
                [
                    Verdict::Forward,
                    Verdict::Block(r),
                    Verdict::Block(r),
                    Verdict::Block(r),
                ],
            ),
        ];
        for (mode, verdicts) in table {
            for (tier, want) in [Compliant, Acceptable, Ambiguous, Severe]
                .into_iter()
                .zip(verdicts)
            {
                assert_eq!(verdict(mode, tier, r), want, "{mode:?} {tier:?}");
            }
        }
    }
}

//! Route lookup cost with 10, 100 and 1,000 listener rules.
//!
//! Rules mix indexed path forms (`/svc{i}/*`, exact paths), exact hosts (indexed too)
//! and wildcard paths and hosts with header conditions (a quarter, not indexable); the looked-up request matches a rule near the end, the worst
//! case for priority order.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ecslb::config::Config;
use ecslb::routing::{Request, RouteTable};

fn config(rules: usize) -> Config {
    let mut toml = String::from(
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\ndefault_action = { forward = \"g\" }\n",
    );
    for i in 0..rules {
        let conditions = match i % 4 {
            0 => format!("{{ path = [\"/svc{i}/*\"] }}"),
            1 => format!("{{ path = [\"/exact/{i}\"], method = [\"GET\"] }}"),
            2 => format!("{{ host = [\"h{i}.example.com\", \"www.h{i}.example.org\"] }}"),
            _ => format!("{{ path = [\"/img{i}/*.png\"], host = [\"*.h{i}.example.net\"], http_header = [{{ name = \"x-env\", values = [\"prod*\"] }}] }}"),
        };
        toml.push_str(&format!(
            "[[listeners.rules]]\npriority = {}\nconditions = {conditions}\naction = {{ forward = \"g\" }}\n",
            i + 1
        ));
    }
    toml.push_str("[target_groups.g]\ndiscovery = { static = [\"127.0.0.1:3000\"] }\n");
    Config::parse(Path::new("bench.toml"), &toml).expect("valid bench config")
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for rules in [10usize, 100, 1000] {
        let table = RouteTable::build(&config(rules), None);
        let headers = http::HeaderMap::new();
        let last_prefix = (rules - 1) / 4 * 4;
        let path = format!("/svc{last_prefix}/users/42");
        let req = Request {
            host: Some("www.example.com"),
            path: &path,
            query: Some("a=1"),
            method: &http::Method::GET,
            headers: &headers,
            source_ip: [127, 0, 0, 1].into(),
        };
        let listener = table.listener(0);
        assert!(
            listener.route(&req).1.is_some(),
            "the request matches a rule"
        );
        group.bench_with_input(
            BenchmarkId::new("match_last_prefix", rules),
            &req,
            |b, req| b.iter(|| black_box(listener.route(black_box(req)))),
        );
        let miss = Request {
            path: "/nothing/here",
            ..req
        };
        group.bench_with_input(
            BenchmarkId::new("default_action", rules),
            &miss,
            |b, req| b.iter(|| black_box(listener.route(black_box(req)))),
        );
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);

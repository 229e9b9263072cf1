//! The integration tests, built as one binary: each file of `tests/` is a module here,
//! and `support` is the kit they share. One binary links the proxy and the test kit once
//! instead of once per file, which keeps a clean build's disk use and link time down
//! (21 test binaries of ~120 MB each before). Run one file's tests with
//! `cargo test --test it http_proxy::`.

mod support;

mod access_log;
mod balancing;
mod config;
mod desync;
mod discovery_ecs;
mod draining;
mod grpc;
mod health;
mod health_https;
mod http_errors;
mod http_proxy;
mod metrics;
mod nginx_target;
mod prometheus;
mod reload;
mod rules;
mod shutdown;
mod smoke;
mod tcp_proxy;
mod tls;
mod upstream;

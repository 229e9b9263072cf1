//! Balancer pick cost for each algorithm over 3 and 100 targets.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ecslb::balance::{Algorithm, Balancer};
use ecslb::target::{Health, TargetSet};

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_pick");
    for targets in [3u16, 100] {
        let set = TargetSet::build(
            (1..=targets).map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            None,
            Health::Unused,
        );
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastOutstandingRequests,
            Algorithm::WeightedRandom,
        ] {
            let balancer = Balancer::new(algorithm, set.clone());
            group.bench_function(BenchmarkId::new(format!("{algorithm:?}"), targets), |b| {
                b.iter(|| black_box(balancer.pick().map(|t| t.begin())))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);

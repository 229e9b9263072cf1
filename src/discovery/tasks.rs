//! ECS tasks to targets: pure functions, no AWS calls.
//!
//! - awsvpc (Fargate and EC2): the task ENI's private IPv4 and the container port;
//! - bridge and host (EC2): the named container's host port bound to that container
//!   port, on the container instance's private IP (looked up by the caller).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aws_sdk_ecs::types::{HealthStatus, Task};

/// Whether the task should take traffic: RUNNING and meant to stay running, and not
/// UNHEALTHY (with `healthy_only`: HEALTHY).
pub(crate) fn is_serving(task: &Task, healthy_only: bool) -> bool {
    let running = task.last_status() == Some("RUNNING") && task.desired_status() == Some("RUNNING");
    let health = task.health_status();
    let healthy = if healthy_only {
        health == Some(&HealthStatus::Healthy)
    } else {
        health != Some(&HealthStatus::Unhealthy)
    };
    running && healthy
}

/// The task's addresses for `container`:`port`. `instance_ip` resolves a container
/// instance ARN to its private IP (bridge and host tasks); `None` means not known yet.
pub(crate) fn targets(
    task: &Task,
    container: &str,
    port: u16,
    instance_ip: impl Fn(&str) -> Option<Ipv4Addr>,
) -> Vec<SocketAddr> {
    if let Some(ip) = eni_ip(task) {
        let runs_container = task
            .containers()
            .iter()
            .any(|c| c.name() == Some(container));
        return if runs_container || task.containers().is_empty() {
            vec![SocketAddr::new(IpAddr::V4(ip), port)]
        } else {
            Vec::new()
        };
    }
    let Some(host) = task.container_instance_arn().and_then(&instance_ip) else {
        return Vec::new();
    };
    let mut out: Vec<SocketAddr> = task
        .containers()
        .iter()
        .filter(|c| c.name() == Some(container))
        .flat_map(|c| c.network_bindings())
        .filter(|b| b.container_port() == Some(i32::from(port)))
        .filter_map(|b| u16::try_from(b.host_port()?).ok())
        .filter(|&p| p != 0)
        .map(|p| SocketAddr::new(IpAddr::V4(host), p))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The private IPv4 of the task's ENI (awsvpc network mode).
fn eni_ip(task: &Task) -> Option<Ipv4Addr> {
    task.attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Attachment, Container, KeyValuePair, NetworkBinding};

    fn task(last: &str, desired: &str) -> aws_sdk_ecs::types::builders::TaskBuilder {
        Task::builder()
            .task_arn("arn:aws:ecs:us-east-1:1:task/c/t1")
            .last_status(last)
            .desired_status(desired)
    }

    fn eni(ip: &str) -> Attachment {
        Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(
                KeyValuePair::builder()
                    .name("subnetId")
                    .value("subnet-1")
                    .build(),
            )
            .details(
                KeyValuePair::builder()
                    .name("privateIPv4Address")
                    .value(ip)
                    .build(),
            )
            .build()
    }

    fn container(name: &str, bindings: &[(i32, i32)]) -> Container {
        let mut c = Container::builder().name(name);
        for &(container_port, host_port) in bindings {
            c = c.network_bindings(
                NetworkBinding::builder()
                    .container_port(container_port)
                    .host_port(host_port)
                    .build(),
            );
        }
        c.build()
    }

    fn no_instances(_: &str) -> Option<Ipv4Addr> {
        None
    }

    #[test]
    fn awsvpc_tasks_use_the_eni_address_and_the_container_port() {
        let t = task("RUNNING", "RUNNING")
            .attachments(eni("127.16.1.4"))
            .containers(container("app", &[]))
            .containers(container("sidecar", &[]))
            .build();
        assert_eq!(
            targets(&t, "app", 8080, no_instances),
            vec!["127.16.1.4:8080".parse().unwrap()]
        );
        assert!(
            targets(&t, "other", 8080, no_instances).is_empty(),
            "the container must run in the task"
        );
    }

    #[test]
    fn bridge_tasks_use_the_host_port_on_the_instance_address() {
        let t = task("RUNNING", "RUNNING")
            .container_instance_arn("ci-1")
            .containers(container("app", &[(8080, 32768), (9090, 32769)]))
            .containers(container("sidecar", &[(8080, 32770)]))
            .build();
        let ip = |arn: &str| (arn == "ci-1").then(|| Ipv4Addr::new(127, 0, 0, 21));
        assert_eq!(
            targets(&t, "app", 8080, ip),
            vec!["127.0.0.21:32768".parse().unwrap()]
        );
        assert_eq!(
            targets(&t, "app", 9090, ip),
            vec!["127.0.0.21:32769".parse().unwrap()]
        );
        assert_eq!(
            targets(&t, "sidecar", 8080, ip),
            vec!["127.0.0.21:32770".parse().unwrap()]
        );
        assert!(targets(&t, "app", 7070, ip).is_empty());
        assert!(
            targets(&t, "app", 8080, no_instances).is_empty(),
            "instance address unknown yet"
        );
    }

    #[test]
    fn host_mode_tasks_bind_the_container_port_itself() {
        let t = task("RUNNING", "RUNNING")
            .container_instance_arn("ci-2")
            .containers(container("app", &[(8080, 8080)]))
            .build();
        let ip = |_: &str| Some(Ipv4Addr::new(127, 0, 0, 22));
        assert_eq!(
            targets(&t, "app", 8080, ip),
            vec!["127.0.0.22:8080".parse().unwrap()]
        );
    }

    #[test]
    fn bindings_not_yet_assigned_give_no_target() {
        let t = task("PENDING", "RUNNING")
            .container_instance_arn("ci-1")
            .containers(container("app", &[(8080, 0)]))
            .build();
        assert!(targets(&t, "app", 8080, |_| Some(Ipv4Addr::LOCALHOST)).is_empty());
    }

    #[test]
    fn only_running_tasks_that_are_not_unhealthy_serve() {
        let cases = [
            ("RUNNING", "RUNNING", None, false, true),
            ("RUNNING", "STOPPED", None, false, false),
            ("PENDING", "RUNNING", None, false, false),
            ("STOPPED", "STOPPED", None, false, false),
            (
                "RUNNING",
                "RUNNING",
                Some(HealthStatus::Unhealthy),
                false,
                false,
            ),
            (
                "RUNNING",
                "RUNNING",
                Some(HealthStatus::from("UNKNOWN")),
                false,
                true,
            ),
            (
                "RUNNING",
                "RUNNING",
                Some(HealthStatus::from("UNKNOWN")),
                true,
                false,
            ),
            (
                "RUNNING",
                "RUNNING",
                Some(HealthStatus::Healthy),
                true,
                true,
            ),
        ];
        for (last, desired, health, healthy_only, want) in cases {
            let t = task(last, desired)
                .set_health_status(health.clone())
                .build();
            assert_eq!(
                is_serving(&t, healthy_only),
                want,
                "{last} {desired} {health:?} {healthy_only}"
            );
        }
    }
}

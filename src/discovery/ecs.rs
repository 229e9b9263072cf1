//! ECS discovery: the tasks of a service (or family, or `startedBy`), polled economically.
//!
//! Each refresh makes one `ListTasks` call per page (`desiredStatus=RUNNING`) and
//! `DescribeTasks` only for task ARNs not seen before (batches of 100); every
//! `full_refresh` all known tasks are described again to pick up status and health
//! changes. A task whose desired status turns STOPPED leaves the list at once, so its
//! target starts draining before ECS stops its containers.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use aws_sdk_ecs::types::{DesiredStatus, Task, TaskField};
use tokio::time::Instant;

use super::limiter::Limiter;
use super::{tasks, Error, Member};
use crate::config::{EcsDiscovery, EcsTasks};
use crate::target::EcsLabels;

/// Polls one ECS task set.
#[derive(Debug)]
pub(crate) struct Ecs {
    sdk: aws_config::SdkConfig,
    client: aws_sdk_ecs::Client,
    settings: EcsDiscovery,
    limiter: Arc<Limiter>,
    /// Described tasks by ARN.
    known: HashMap<String, Task>,
    last_full: Option<Instant>,
    /// Container instance ARN → private IP (bridge and host tasks); instances rarely change.
    instances: HashMap<String, Ipv4Addr>,
}

impl Ecs {
    pub(crate) fn new(
        sdk: &aws_config::SdkConfig,
        settings: EcsDiscovery,
        limiter: Arc<Limiter>,
    ) -> Self {
        Self {
            sdk: sdk.clone(),
            client: aws_sdk_ecs::Client::new(sdk),
            settings,
            limiter,
            known: HashMap::new(),
            last_full: None,
            instances: HashMap::new(),
        }
    }

    /// The targets of the serving tasks; `count` is told of each API call. On error
    /// nothing is returned: the caller keeps the last good set.
    pub(crate) async fn poll(
        &mut self,
        count: &(dyn Fn(&'static str) + Sync),
    ) -> Result<Vec<Member>, Error> {
        let arns = self.list_tasks(count).await?;
        let full = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.settings.full_refresh);
        let wanted: Vec<String> = arns
            .iter()
            .filter(|arn| full || !self.known.contains_key(*arn))
            .cloned()
            .collect();
        for batch in wanted.chunks(100) {
            for task in self.describe_tasks(batch, count).await? {
                if let Some(arn) = task.task_arn() {
                    self.known.insert(arn.to_owned(), task);
                }
            }
        }
        if full {
            self.last_full = Some(Instant::now());
        }
        self.known.retain(|arn, _| arns.contains(arn));
        self.resolve_instances(count).await?;
        let s = &self.settings;
        let mut members: Vec<Member> = self
            .known
            .values()
            .filter(|t| self.selected(t) && tasks::is_serving(t, s.healthy_tasks_only))
            .flat_map(|t| {
                let labels = EcsLabels {
                    task: t
                        .task_arn()
                        .and_then(|a| a.rsplit('/').next())
                        .unwrap_or("")
                        .to_owned(),
                    service: t
                        .group()
                        .and_then(|g| g.strip_prefix("service:"))
                        .map(str::to_owned),
                };
                let addrs = tasks::targets(t, &s.container, s.port, |arn| {
                    self.instances.get(arn).copied()
                });
                addrs.into_iter().map(move |addr| Member {
                    addr,
                    ecs: Some(labels.clone()),
                })
            })
            .collect();
        members.sort_unstable_by_key(|m| m.addr);
        members.dedup_by_key(|m| m.addr);
        Ok(members)
    }

    /// ECS filters `ListTasks` by service itself; emulators may not, and the group
    /// check is harmless against ECS.
    fn selected(&self, task: &Task) -> bool {
        match &self.settings.tasks {
            EcsTasks::Service(name) => task.group().is_none_or(|g| g == format!("service:{name}")),
            EcsTasks::Family(_) | EcsTasks::StartedBy(_) => true,
        }
    }

    async fn list_tasks(
        &self,
        count: &(dyn Fn(&'static str) + Sync),
    ) -> Result<Vec<String>, Error> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.limiter.acquire().await;
            count("ECS.ListTasks");
            let mut call = self
                .client
                .list_tasks()
                .cluster(&self.settings.cluster)
                .desired_status(DesiredStatus::Running)
                .set_next_token(token.take());
            call = match &self.settings.tasks {
                EcsTasks::Service(name) => call.service_name(name),
                EcsTasks::Family(family) => call.family(family),
                EcsTasks::StartedBy(by) => call.started_by(by),
            };
            let page = call.send().await.map_err(aws_error)?;
            arns.extend(page.task_arns().iter().cloned());
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(arns),
            }
        }
    }

    async fn describe_tasks(
        &self,
        arns: &[String],
        count: &(dyn Fn(&'static str) + Sync),
    ) -> Result<Vec<Task>, Error> {
        self.limiter.acquire().await;
        count("ECS.DescribeTasks");
        let out = self
            .client
            .describe_tasks()
            .cluster(&self.settings.cluster)
            .set_tasks(Some(arns.to_vec()))
            .include(TaskField::Tags)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out.tasks().to_vec())
    }

    /// Looks up the private IPs of container instances not seen before (bridge and host
    /// tasks): `DescribeContainerInstances`, then EC2 `DescribeInstances`.
    async fn resolve_instances(
        &mut self,
        count: &(dyn Fn(&'static str) + Sync),
    ) -> Result<(), Error> {
        let mut missing: Vec<String> = self
            .known
            .values()
            .filter(|t| {
                t.attachments()
                    .iter()
                    .all(|a| a.r#type() != Some("ElasticNetworkInterface"))
            })
            .filter_map(|t| t.container_instance_arn())
            .filter(|arn| !self.instances.contains_key(*arn))
            .map(str::to_owned)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        for batch in missing.chunks(100) {
            self.limiter.acquire().await;
            count("ECS.DescribeContainerInstances");
            let out = self
                .client
                .describe_container_instances()
                .cluster(&self.settings.cluster)
                .set_container_instances(Some(batch.to_vec()))
                .send()
                .await
                .map_err(aws_error)?;
            let by_instance: HashMap<String, String> = out
                .container_instances()
                .iter()
                .filter_map(|ci| {
                    Some((
                        ci.ec2_instance_id()?.to_owned(),
                        ci.container_instance_arn()?.to_owned(),
                    ))
                })
                .collect();
            if by_instance.is_empty() {
                continue;
            }
            let ids: Vec<String> = by_instance.keys().cloned().collect();
            self.limiter.acquire().await;
            count("EC2.DescribeInstances");
            for (id, ip) in super::ec2::private_ips(&self.sdk, &ids).await? {
                if let Some(arn) = by_instance.get(&id) {
                    self.instances.insert(arn.clone(), ip);
                }
            }
        }
        Ok(())
    }
}

fn aws_error<E: std::error::Error + 'static>(e: E) -> Error {
    Error::Aws(aws_sdk_ecs::error::DisplayErrorContext(e).to_string())
}

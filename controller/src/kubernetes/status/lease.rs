//! The Lease that says which replica writes status.

use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::{
    api::{ObjectMeta, PostParams},
    Api,
};

use super::Settings;

/// Holds (or tries to hold) the status Lease.
pub(super) struct LeaseHolder {
    pub(super) api: Api<Lease>,
    pub(super) settings: Settings,
}

impl LeaseHolder {
    /// Takes the Lease if it is free or expired, renews it if held: true while this replica
    /// holds it. Every write is conditional on the version read, so two replicas racing for
    /// an expired Lease cannot both win.
    pub(super) async fn acquire_or_renew(&self) -> bool {
        match self.try_acquire_or_renew().await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(%error, "cannot read or write the status Lease");
                false
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let me = &self.settings.identity;
        let now = MicroTime(Timestamp::now());
        let seconds = self.settings.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.settings.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != *me {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
            let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
                renewed.0.as_second() + duration < Timestamp::now().as_second()
            });
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(me.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(&self.settings.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

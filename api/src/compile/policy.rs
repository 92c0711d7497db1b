//! TrafficPolicy: validated into [`Resilience`] and a [`Balancer`], and attached to the
//! Services its `targetRefs` name. Runs before routes, so every cluster built for a Service
//! carries its policy.

use std::{sync::Arc, time::Duration};

use super::{created, Context};
use crate::{
    crds::{CircuitBreaker, HealthCheck, LoadBalancer, Retry, TargetRef, TrafficPolicy},
    duration::parse_duration,
    error::Location,
    model::{
        Balancer, BreakerPolicy, HashKey, HealthCheckPolicy, Resilience, RetryOn, RetryPolicy,
        DEFAULT_BUDGET_MIN_PER_SECOND, DEFAULT_BUDGET_RATIO,
    },
    objects::{Object, ObjectKey},
};

/// What a TrafficPolicy gives the Service it targets.
#[derive(Clone, Debug)]
pub(super) struct Attached {
    pub resilience: Arc<Resilience>,
    /// Overrides the Service's load-balancer annotation when set.
    pub balancer: Option<Balancer>,
    /// Creation time and name of the policy: the oldest policy on a Service wins.
    order: (String, String),
}

/// Validates every TrafficPolicy and records it for the Services it targets.
pub(super) fn compile_all(cx: &mut Context<'_>) {
    let policies: Vec<_> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::TrafficPolicy(p) => Some((o.key(), p, l)),
            _ => None,
        })
        .collect();
    for (key, policy, location) in policies {
        let mut v = Validator {
            cx,
            key: &key,
            location,
        };
        let Some(attached) = v.policy(policy) else {
            continue;
        };
        for target in policy.spec.target_refs.iter().filter(|t| is_service(t)) {
            let service = (key.namespace.clone(), target.name.clone());
            if cx.find_service(&service.0, &service.1).is_none() {
                cx.warn(
                    &key,
                    format!(
                        "target Service {}/{} not found; the policy applies once it exists",
                        service.0, service.1
                    ),
                );
            }
            let (winner, loser) = match cx.traffic.get(&service) {
                Some(existing) if existing.order <= attached.order => {
                    (existing.clone(), attached.clone())
                }
                Some(existing) => (attached.clone(), existing.clone()),
                None => {
                    cx.traffic.insert(service, attached.clone());
                    continue;
                }
            };
            let name = |a: &Attached| a.resilience.policy.clone().unwrap_or_default();
            cx.warnings.push(format!(
                "TrafficPolicy {}: ignored for Service {}/{}: TrafficPolicy {} is older and applies",
                name(&loser),
                service.0,
                service.1,
                name(&winner)
            ));
            cx.traffic.insert(service, winner);
        }
    }
}

fn is_service(target: &TargetRef) -> bool {
    target.group.is_empty() && target.kind == "Service"
}

/// Turns one policy's spec into model values, reporting every bad field.
struct Validator<'c, 'a, 'k> {
    cx: &'c mut Context<'a>,
    key: &'k ObjectKey,
    location: &'a Location,
}

impl Validator<'_, '_, '_> {
    fn policy(&mut self, policy: &TrafficPolicy) -> Option<Attached> {
        let errors = self.cx.errors.len();
        let spec = &policy.spec;
        if spec.target_refs.is_empty() {
            self.error("spec.targetRefs", "at least one target is required");
        }
        for (i, target) in spec.target_refs.iter().enumerate() {
            if !is_service(target) {
                self.error(
                    format!("spec.targetRefs[{i}]"),
                    format!(
                        "a TrafficPolicy targets Services (group \"\", kind Service), not {:?}/{:?}",
                        target.group, target.kind
                    ),
                );
            }
        }
        let timeout = spec
            .timeout
            .as_deref()
            .and_then(|t| self.duration("spec.timeout", t));
        let retry = spec.retry.as_ref().map(|r| self.retry(r));
        let breaker = spec.circuit_breaker.as_ref().map(|b| self.breaker(b));
        let health_check = spec.health_check.as_ref().map(|h| self.health_check(h));
        let balancer = spec.load_balancer.as_ref().and_then(|l| self.balancer(l));
        if self.cx.errors.len() > errors {
            return None;
        }
        let name = format!("{}/{}", self.key.namespace, self.key.name);
        Some(Attached {
            resilience: Arc::new(Resilience {
                policy: Some(name.clone()),
                timeout,
                retry,
                breaker,
                health_check,
            }),
            balancer,
            order: (created(&policy.metadata), name),
        })
    }

    fn retry(&mut self, r: &Retry) -> RetryPolicy {
        let attempts = r.attempts.unwrap_or(2);
        if attempts == 0 {
            self.error(
                "spec.retry.attempts",
                "must be at least 1 (the first try counts)",
            );
        }
        let per_try_timeout = r
            .per_try_timeout
            .as_deref()
            .and_then(|t| self.duration("spec.retry.perTryTimeout", t));
        let mut retry_on = RetryOn::default();
        let conditions: Vec<&str> = if r.retry_on.is_empty() {
            vec!["connect-failure", "reset", "gateway-error"]
        } else {
            r.retry_on.iter().map(String::as_str).collect()
        };
        for (i, condition) in conditions.into_iter().enumerate() {
            match condition {
                "connect-failure" => retry_on.connect_failure = true,
                "reset" => retry_on.reset = true,
                "timeout" => retry_on.timeout = true,
                "5xx" => retry_on.any_5xx = true,
                "gateway-error" => retry_on.statuses.extend([502, 503, 504]),
                code => match code.parse::<u16>() {
                    Ok(status) if (100..600).contains(&status) => retry_on.statuses.push(status),
                    _ => self.error(
                        format!("spec.retry.retryOn[{i}]"),
                        format!(
                            "unknown condition {code:?}: use connect-failure, reset, timeout, \
                             5xx, gateway-error or a status code such as \"503\""
                        ),
                    ),
                },
            }
        }
        retry_on.statuses.sort_unstable();
        retry_on.statuses.dedup();
        let backoff = r.backoff.clone().unwrap_or_default();
        let backoff_base = self.duration_or(
            "spec.retry.backoff.base",
            backoff.base.as_deref(),
            Duration::from_millis(25),
        );
        let backoff_max = self.duration_or(
            "spec.retry.backoff.max",
            backoff.max.as_deref(),
            Duration::from_millis(250),
        );
        if backoff_max < backoff_base {
            self.error("spec.retry.backoff.max", "must not be less than base");
        }
        let budget = r.budget.clone().unwrap_or_default();
        let percent = budget.percent.unwrap_or(DEFAULT_BUDGET_RATIO * 100.0);
        if !(0.0..=100.0).contains(&percent) {
            self.error(
                "spec.retry.budget.percent",
                format!("{percent} is not a percentage between 0 and 100"),
            );
        }
        RetryPolicy {
            attempts,
            per_try_timeout,
            retry_on,
            non_idempotent: r.non_idempotent,
            backoff_base,
            backoff_max,
            min_backoff: Duration::ZERO,
            budget_ratio: percent / 100.0,
            budget_min_per_second: budget
                .min_per_second
                .unwrap_or(DEFAULT_BUDGET_MIN_PER_SECOND),
        }
    }

    fn breaker(&mut self, b: &CircuitBreaker) -> BreakerPolicy {
        let consecutive_failures = self.at_least_one(
            "spec.circuitBreaker.consecutiveFailures",
            b.consecutive_failures.unwrap_or(5),
        );
        let max_ejection_percent = b.max_ejection_percent.unwrap_or(50);
        if max_ejection_percent > 100 {
            self.error(
                "spec.circuitBreaker.maxEjectionPercent",
                format!("{max_ejection_percent} is not a percentage between 0 and 100"),
            );
        }
        BreakerPolicy {
            consecutive_failures,
            interval: self.positive_duration_or(
                "spec.circuitBreaker.interval",
                b.interval.as_deref(),
                Duration::from_secs(10),
            ),
            base_ejection_time: self.positive_duration_or(
                "spec.circuitBreaker.baseEjectionTime",
                b.base_ejection_time.as_deref(),
                Duration::from_secs(30),
            ),
            max_ejection_percent,
            half_open_probes: self.at_least_one(
                "spec.circuitBreaker.halfOpenProbes",
                b.half_open_probes.unwrap_or(5),
            ),
            max_pending_requests: self.at_least_one(
                "spec.circuitBreaker.maxPendingRequests",
                b.max_pending_requests.unwrap_or(1024),
            ),
        }
    }

    fn health_check(&mut self, h: &HealthCheck) -> HealthCheckPolicy {
        if !h.path.starts_with('/') {
            self.error(
                "spec.healthCheck.path",
                format!("{:?} must start with /", h.path),
            );
        }
        HealthCheckPolicy {
            path: h.path.clone(),
            interval: self.positive_duration_or(
                "spec.healthCheck.interval",
                h.interval.as_deref(),
                Duration::from_secs(10),
            ),
            timeout: self.positive_duration_or(
                "spec.healthCheck.timeout",
                h.timeout.as_deref(),
                Duration::from_secs(1),
            ),
            unhealthy_threshold: self.at_least_one(
                "spec.healthCheck.unhealthyThreshold",
                h.unhealthy_threshold.unwrap_or(3),
            ),
            healthy_threshold: self.at_least_one(
                "spec.healthCheck.healthyThreshold",
                h.healthy_threshold.unwrap_or(2),
            ),
        }
    }

    fn balancer(&mut self, l: &LoadBalancer) -> Option<Balancer> {
        let algorithm = l.algorithm.as_deref().unwrap_or("ewma");
        if algorithm != "consistentHash" && l.hash_on.is_some() {
            self.error(
                "spec.loadBalancer.hashOn",
                "only applies to algorithm consistentHash",
            );
        }
        Some(match algorithm {
            "ewma" => Balancer::PeakEwma,
            "roundRobin" => Balancer::RoundRobin,
            "leastRequest" => Balancer::LeastRequest,
            "consistentHash" => {
                let hash_on = l.hash_on.clone().unwrap_or_default();
                let keys = [
                    hash_on
                        .header
                        .map(|h| HashKey::Header(h.to_ascii_lowercase())),
                    hash_on.cookie.map(HashKey::Cookie),
                    hash_on.source_ip.then_some(HashKey::SourceIp),
                ];
                let mut keys = keys.into_iter().flatten();
                match (keys.next(), keys.next()) {
                    (Some(key), None) => Balancer::ConsistentHash(key),
                    _ => {
                        self.error(
                            "spec.loadBalancer.hashOn",
                            "consistentHash needs exactly one of header, cookie or sourceIP",
                        );
                        return None;
                    }
                }
            }
            other => {
                self.error(
                    "spec.loadBalancer.algorithm",
                    format!(
                        "unknown algorithm {other:?}: use ewma, roundRobin, leastRequest or \
                         consistentHash"
                    ),
                );
                return None;
            }
        })
    }

    fn duration(&mut self, field: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(field, e);
                None
            }
        }
    }

    fn duration_or(&mut self, field: &str, text: Option<&str>, default: Duration) -> Duration {
        text.and_then(|t| self.duration(field, t))
            .unwrap_or(default)
    }

    fn positive_duration_or(
        &mut self,
        field: &str,
        text: Option<&str>,
        default: Duration,
    ) -> Duration {
        let d = self.duration_or(field, text, default);
        if d.is_zero() {
            self.error(field, "must be longer than zero");
        }
        d
    }

    fn at_least_one(&mut self, field: &str, value: u32) -> u32 {
        if value == 0 {
            self.error(field, "must be at least 1");
        }
        value
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.cx.error(self.location, self.key, field, message);
    }
}

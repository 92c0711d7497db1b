//! AccessPolicy decisions: is this caller (the SPIFFE ID its mTLS certificate proved, or none
//! for plaintext) allowed to do this (method and normalised path for HTTP; only the port for
//! opaque TCP)? A caller named by namespace or ServiceAccount must also be of the mesh's own
//! trust domain, or of the one the policy names: a certificate another trust domain issued
//! (one the mesh federates with) never passes for a local workload of the same name.

use weir_api::model::{AccessRules, Caller, Inbound, Operation};

/// What is being asked for.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The caller's SPIFFE ID; `None` for plaintext.
    pub peer: Option<&'a str>,
    /// Method and normalised path; `None` for opaque TCP.
    pub http: Option<(&'a str, &'a str)>,
    /// The workload port it is for.
    pub port: u16,
    /// The mesh's own trust domain.
    pub trust_domain: &'a str,
}

/// Allowed, or denied by the named AccessPolicy.
pub fn decide<'a>(inbound: &'a Inbound, request: &Request<'_>) -> Result<(), &'a str> {
    if inbound.access.is_empty() {
        return Ok(());
    }
    let allowed = inbound
        .access
        .iter()
        .flat_map(|policy| &policy.rules)
        .any(|rule| {
            rule.from
                .iter()
                .any(|c| caller_matches(c, request.peer, request.trust_domain))
                && (rule.to.is_empty() || rule.to.iter().any(|op| operation_matches(op, request)))
        });
    if allowed {
        return Ok(());
    }
    match inbound.access.iter().find(|p| p.deny_by_default) {
        Some(AccessRules { policy, .. }) => Err(policy),
        None => Ok(()),
    }
}

fn caller_matches(caller: &Caller, peer: Option<&str>, own_domain: &str) -> bool {
    let Some(peer) = peer else {
        return false;
    };
    // spiffe://TRUST_DOMAIN/ns/NS/sa/SA
    let (domain, path) = peer
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_default();
    let (namespace, account) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["ns", namespace, "sa", account] => (*namespace, *account),
        _ => ("", ""),
    };
    let in_domain = |wanted: &Option<String>| domain == wanted.as_deref().unwrap_or(own_domain);
    match caller {
        Caller::Identity(id) => id == peer,
        Caller::Namespace {
            namespace: ns,
            trust_domain,
        } => !namespace.is_empty() && ns == namespace && in_domain(trust_domain),
        Caller::ServiceAccount {
            namespace: ns,
            name,
            trust_domain,
        } => !namespace.is_empty() && ns == namespace && name == account && in_domain(trust_domain),
    }
}

fn operation_matches(op: &Operation, request: &Request<'_>) -> bool {
    if !op.ports.is_empty() && !op.ports.contains(&request.port) {
        return false;
    }
    if op.methods.is_empty() && op.paths.is_empty() {
        return true;
    }
    // Methods and paths say nothing about opaque TCP: such an entry never matches it.
    let Some((method, path)) = request.http else {
        return false;
    };
    (op.methods.is_empty() || op.methods.iter().any(|m| m == method))
        && (op.paths.is_empty()
            || op.paths.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => p == path,
            }))
}

#[cfg(test)]
mod tests {
    use weir_api::model::AccessRule;

    use super::*;

    const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
    const MONITOR: &str = "spiffe://cluster.local/ns/monitoring/sa/prometheus";

    fn policy(name: &str, deny: bool, rules: Vec<AccessRule>) -> AccessRules {
        AccessRules {
            policy: format!("AccessPolicy shop/{name}"),
            deny_by_default: deny,
            rules,
        }
    }

    fn inbound() -> Inbound {
        Inbound {
            access: vec![policy(
                "backend",
                true,
                vec![
                    AccessRule {
                        from: vec![Caller::ServiceAccount {
                            namespace: "shop".into(),
                            name: "frontend".into(),
                            trust_domain: None,
                        }],
                        to: vec![Operation {
                            methods: vec!["GET".into()],
                            paths: vec!["/api/*".into()],
                            ports: vec![],
                        }],
                    },
                    AccessRule {
                        from: vec![Caller::Namespace {
                            namespace: "monitoring".into(),
                            trust_domain: None,
                        }],
                        to: vec![Operation {
                            ports: vec![9090],
                            ..Operation::default()
                        }],
                    },
                ],
            )],
            ..Inbound::default()
        }
    }

    fn http<'a>(peer: Option<&'a str>, method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            peer,
            http: Some((method, path)),
            port: 8080,
            trust_domain: "cluster.local",
        }
    }

    #[test]
    fn a_rule_allows_only_its_callers_and_operations() {
        let inbound = inbound();
        assert_eq!(
            decide(&inbound, &http(Some(FRONTEND), "GET", "/api/x")),
            Ok(())
        );
        let denied = Err("AccessPolicy shop/backend");
        assert_eq!(
            decide(&inbound, &http(Some(FRONTEND), "POST", "/api/x")),
            denied
        );
        assert_eq!(
            decide(&inbound, &http(Some(FRONTEND), "GET", "/admin")),
            denied
        );
        assert_eq!(
            decide(&inbound, &http(None, "GET", "/api/x")),
            denied,
            "plaintext"
        );
        assert_eq!(
            decide(
                &inbound,
                &http(
                    Some("spiffe://cluster.local/ns/other/sa/frontend"),
                    "GET",
                    "/api/x"
                )
            ),
            denied,
            "the same account name in another namespace"
        );
        // Port-only rules apply to opaque TCP too; method/path rules never do.
        let tcp = |peer, port| Request {
            peer: Some(peer),
            http: None,
            port,
            trust_domain: "cluster.local",
        };
        assert_eq!(decide(&inbound, &tcp(MONITOR, 9090)), Ok(()));
        assert_eq!(decide(&inbound, &tcp(MONITOR, 8080)), denied);
        assert_eq!(decide(&inbound, &tcp(FRONTEND, 8080)), denied);
    }

    #[test]
    fn several_policies_any_rule_allows_and_any_default_deny_denies() {
        let mut inbound = inbound();
        assert_eq!(
            decide(&Inbound::default(), &http(None, "GET", "/")),
            Ok(()),
            "no policy"
        );
        inbound.access[0].deny_by_default = false;
        assert_eq!(
            decide(&inbound, &http(None, "DELETE", "/")),
            Ok(()),
            "default allow"
        );
        inbound.access.push(policy(
            "oncall",
            true,
            vec![AccessRule {
                from: vec![Caller::Identity(
                    "spiffe://cluster.local/ns/ops/sa/oncall".into(),
                )],
                to: vec![],
            }],
        ));
        assert_eq!(
            decide(&inbound, &http(None, "DELETE", "/")),
            Err("AccessPolicy shop/oncall")
        );
        assert_eq!(
            decide(
                &inbound,
                &http(
                    Some("spiffe://cluster.local/ns/ops/sa/oncall"),
                    "DELETE",
                    "/"
                )
            ),
            Ok(())
        );
        assert_eq!(
            decide(&inbound, &http(Some(FRONTEND), "GET", "/api/a")),
            Ok(())
        );
    }

    #[test]
    fn namespace_and_service_account_callers_must_be_of_the_trust_domain() {
        let inbound = inbound();
        let denied = Err("AccessPolicy shop/backend");
        // Another trust domain the mesh trusts issued a certificate for the same names.
        let foreign = "spiffe://partner.example/ns/shop/sa/frontend";
        assert_eq!(
            decide(&inbound, &http(Some(foreign), "GET", "/api/x")),
            denied
        );
        let foreign_monitor = "spiffe://partner.example/ns/monitoring/sa/prometheus";
        let tcp = Request {
            peer: Some(foreign_monitor),
            http: None,
            port: 9090,
            trust_domain: "cluster.local",
        };
        assert_eq!(decide(&inbound, &tcp), denied);
        // A policy that names the partner's trust domain lets its caller in, and no other.
        let mut partner = inbound.clone();
        partner.access[0].rules[0].from = vec![Caller::ServiceAccount {
            namespace: "shop".into(),
            name: "frontend".into(),
            trust_domain: Some("partner.example".into()),
        }];
        assert_eq!(
            decide(&partner, &http(Some(foreign), "GET", "/api/x")),
            Ok(())
        );
        assert_eq!(
            decide(&partner, &http(Some(FRONTEND), "GET", "/api/x")),
            denied
        );
    }
}

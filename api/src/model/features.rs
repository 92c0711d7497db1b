//! The restricting features of a sidecar's view: the parts of the model that make a sidecar
//! refuse something it would otherwise let through. A node that does not implement one of
//! them must not serve a view that uses it, because serde skips a field the node does not know
//! and the policy would then fail open.
//!
//! The view says which of them it uses ([`SidecarView::requires`](super::SidecarView)),
//! computed from the view itself when it is encoded ([`Inbound::requires`]), so no controller
//! path can forget the list; a node NACKs a view requiring a feature it does not implement and
//! keeps serving its last good one. Fields that only inform or only widen (`modeFrom`, a
//! Service's name) are not features: a node may ignore them, which keeps the wire forward
//! compatible. Adding a restricting field means adding its name here, to [`Inbound::requires`]
//! and to the sidecar's list of what it enforces.

use std::collections::BTreeSet;

use super::{Caller, Inbound, SidecarView, TlsMode};

/// AccessPolicy: allow rules by caller identity, and `default: deny`.
pub const ACCESS: &str = "access";
/// `AccessPolicy.spec.rules[].to[].methods`.
pub const ACCESS_METHODS: &str = "access.methods";
/// `AccessPolicy.spec.rules[].to[].paths`.
pub const ACCESS_PATHS: &str = "access.paths";
/// `AccessPolicy.spec.rules[].to[].ports`.
pub const ACCESS_PORTS: &str = "access.ports";
/// `AccessPolicy.spec.rules[].from[].trustDomain`: a caller of another trust domain.
pub const ACCESS_TRUST_DOMAIN: &str = "access.trustDomain";
/// MeshTLSPolicy mode `STRICT`: plaintext refused.
pub const MTLS_STRICT: &str = "mtls.strict";

/// Every restricting feature this version of the model can express.
pub const ALL: &[&str] = &[
    ACCESS,
    ACCESS_METHODS,
    ACCESS_PATHS,
    ACCESS_PORTS,
    ACCESS_TRUST_DOMAIN,
    MTLS_STRICT,
];

impl Inbound {
    /// The restricting features this inbound policy uses, in a stable order (the encoding
    /// must stay deterministic).
    pub fn requires(&self) -> BTreeSet<&'static str> {
        let mut used = BTreeSet::new();
        if self.mode == TlsMode::Strict {
            used.insert(MTLS_STRICT);
        }
        if !self.access.is_empty() {
            used.insert(ACCESS);
        }
        for rule in self.access.iter().flat_map(|policy| &policy.rules) {
            for caller in &rule.from {
                if let Caller::Namespace {
                    trust_domain: Some(_),
                    ..
                }
                | Caller::ServiceAccount {
                    trust_domain: Some(_),
                    ..
                } = caller
                {
                    used.insert(ACCESS_TRUST_DOMAIN);
                }
            }
            for operation in &rule.to {
                for (list_used, feature) in [
                    (!operation.methods.is_empty(), ACCESS_METHODS),
                    (!operation.paths.is_empty(), ACCESS_PATHS),
                    (!operation.ports.is_empty(), ACCESS_PORTS),
                ] {
                    if list_used {
                        used.insert(feature);
                    }
                }
            }
        }
        used
    }
}

impl SidecarView {
    /// What this view requires that a node implementing only `enforced` cannot enforce: the
    /// features the view lists, and those its inbound policy can be seen to use (a list
    /// dropped on the way hides nothing the node decoded). Empty: the node may serve it.
    pub fn unenforceable(&self, enforced: &[&str]) -> Vec<String> {
        let used = self.inbound.requires().into_iter().map(str::to_string);
        let mut missing: Vec<String> = self
            .requires
            .iter()
            .cloned()
            .chain(used)
            .filter(|feature| !enforced.contains(&feature.as_str()))
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        model::{AccessRule, AccessRules, Mesh, Operation},
        wire::{decode_view, encode_view, SIDECAR_ENCODING},
    };

    fn inbound(from: Caller, to: Vec<Operation>) -> Inbound {
        Inbound {
            access: vec![AccessRules {
                policy: "AccessPolicy shop/backend".into(),
                deny_by_default: true,
                rules: vec![AccessRule {
                    from: vec![from],
                    to,
                }],
            }],
            ..Inbound::default()
        }
    }

    fn frontend(trust_domain: Option<&str>) -> Caller {
        Caller::ServiceAccount {
            namespace: "shop".into(),
            name: "frontend".into(),
            trust_domain: trust_domain.map(Into::into),
        }
    }

    fn decode(view: &impl serde::Serialize) -> Result<SidecarView, String> {
        decode_view(SIDECAR_ENCODING, SIDECAR_ENCODING, &encode_view(view))
    }

    #[test]
    fn a_policy_requires_exactly_the_features_it_uses() {
        assert!(
            Inbound::default().requires().is_empty(),
            "no policy, nothing"
        );
        let only_who = inbound(frontend(None), vec![]);
        assert_eq!(only_who.requires(), [ACCESS].into());
        let ports = Operation {
            ports: vec![8080],
            ..Operation::default()
        };
        let mut everything = inbound(frontend(Some("other.example")), vec![ports]);
        everything.access[0].rules[0].to.push(Operation {
            methods: vec!["GET".into()],
            paths: vec!["/api/*".into()],
            ports: vec![],
        });
        everything.mode = TlsMode::Strict;
        assert_eq!(everything.requires(), ALL.iter().copied().collect());
    }

    #[test]
    fn an_encoded_view_states_its_requirements() {
        let mesh = Mesh::default();
        let policy = inbound(
            frontend(None),
            vec![Operation {
                ports: vec![8080],
                ..Operation::default()
            }],
        );
        let view = decode(&mesh.view(&policy)).unwrap();
        assert_eq!(view.requires, [ACCESS, ACCESS_PORTS]);
        assert_eq!(view.inbound, policy);
        assert!(view.unenforceable(ALL).is_empty());
        assert_eq!(view.unenforceable(&[ACCESS]), [ACCESS_PORTS]);
    }

    #[test]
    fn a_requirement_the_node_does_not_know_is_named() {
        let view = SidecarView {
            requires: vec!["access.headers".into(), ACCESS.into()],
            ..SidecarView::default()
        };
        assert_eq!(view.unenforceable(ALL), ["access.headers"]);
    }

    #[test]
    fn a_dropped_list_hides_no_feature_the_node_decoded() {
        let view = SidecarView {
            requires: vec![],
            inbound: inbound(frontend(Some("other.example")), vec![]),
            ..SidecarView::default()
        };
        assert_eq!(
            view.unenforceable(&[ACCESS]),
            [ACCESS_TRUST_DOMAIN],
            "the policy shows what it uses"
        );
    }

    /// A view from a newer controller: a restricting field this model lacks, and no list.
    #[test]
    fn an_unknown_field_in_the_policy_is_refused_even_without_the_list() {
        let newer = |operation: serde_json::Value| {
            json!({
                "inbound": {"mode": "PERMISSIVE", "access": [{
                    "policy": "AccessPolicy shop/backend",
                    "denyByDefault": true,
                    "rules": [{"from": [{"namespace": {"namespace": "shop"}}], "to": [operation]}],
                }]},
                "services": [],
                "clusters": {},
                "telemetry": {"sampling": 0.1},
            })
        };
        let known = json!({"methods": ["GET"], "paths": [], "ports": []});
        let view = decode(&newer(known)).expect("an unknown field outside the policy is ignored");
        assert_eq!(view.inbound.requires(), [ACCESS, ACCESS_METHODS].into());

        let unknown =
            json!({"methods": ["GET"], "paths": [], "ports": [], "headers": [["x-admin", "1"]]});
        let err = decode(&newer(unknown)).unwrap_err();
        assert!(err.contains("unknown field `headers`"), "{err}");
    }
}

//! The objects a set of objects refers to by name: the Kubernetes source watches exactly the
//! Secrets and ConfigMaps named here, never every one in the cluster.

use std::collections::BTreeSet;

use gateway_api::apis::standard::gateways::Gateway;

use super::{Object, Objects};

impl Objects {
    /// Every ConfigMap (`namespace`, `name`) these objects refer to, whether it exists or
    /// not: BackendTLSPolicy CA certificates. The Kubernetes source watches exactly these.
    pub fn config_map_refs(&self) -> BTreeSet<(String, String)> {
        let mut refs = BTreeSet::new();
        for (object, _) in self.iter() {
            let namespace = object.metadata().namespace.clone().unwrap_or_default();
            match object {
                Object::BackendTlsPolicy(p) => {
                    let refs_of = p.spec.validation.ca_certificate_refs.iter().flatten();
                    for r in refs_of.filter(|r| r.group.is_empty() && r.kind == "ConfigMap") {
                        refs.insert((namespace.clone(), r.name.clone()));
                    }
                }
                Object::Gateway(g) => {
                    for (kind, ns, name) in frontend_ca_refs(g) {
                        if kind == "ConfigMap" {
                            refs.insert((ns.unwrap_or(namespace.clone()), name));
                        }
                    }
                }
                _ => {}
            }
        }
        refs
    }

    /// Every Secret (`namespace`, `name`) these objects refer to, whether it exists or not:
    /// Ingress TLS, Gateway and ListenerSet listener certificates, AuthPolicy JWKS and API keys. The
    /// Kubernetes source watches exactly these, never every Secret in the cluster.
    pub fn secret_refs(&self) -> BTreeSet<(String, String)> {
        let mut refs = BTreeSet::new();
        for (object, _) in self.iter() {
            let namespace = object.metadata().namespace.clone().unwrap_or_default();
            let mut add = |ns: Option<&String>, name: &str| {
                refs.insert((ns.unwrap_or(&namespace).clone(), name.to_string()));
            };
            match object {
                Object::Ingress(i) => {
                    let tls = i.spec.iter().flat_map(|s| s.tls.iter().flatten());
                    for name in tls.filter_map(|t| t.secret_name.as_deref()) {
                        add(None, name);
                    }
                }
                Object::Gateway(g) => {
                    for (kind, ns, name) in frontend_ca_refs(g) {
                        if kind == "Secret" {
                            add(ns.as_ref(), &name);
                        }
                    }
                    let certs = g.spec.listeners.iter().flat_map(|l| {
                        l.tls
                            .iter()
                            .flat_map(|t| t.certificate_refs.iter().flatten())
                    });
                    for cert in certs.filter(|c| c.kind.as_deref().unwrap_or("Secret") == "Secret")
                    {
                        add(cert.namespace.as_ref(), &cert.name);
                    }
                }
                Object::ListenerSet(set) => {
                    let certs = set.spec.listeners.iter().flat_map(|l| {
                        l.tls
                            .iter()
                            .flat_map(|t| t.certificate_refs.iter().flatten())
                    });
                    for cert in certs.filter(|c| c.kind.as_deref().unwrap_or("Secret") == "Secret")
                    {
                        add(cert.namespace.as_ref(), &cert.name);
                    }
                }
                Object::BackendTlsPolicy(p) => {
                    let refs = p.spec.validation.ca_certificate_refs.iter().flatten();
                    for r in refs.filter(|r| r.group.is_empty() && r.kind == "Secret") {
                        add(None, &r.name);
                    }
                }
                Object::AuthPolicy(p) => {
                    let jwks = p.spec.jwt.iter().flat_map(|j| j.providers.iter());
                    for secret in jwks.filter_map(|p| p.jwks.secret_ref.as_ref()) {
                        add(None, &secret.name);
                    }
                    if let Some(keys) = &p.spec.api_keys {
                        add(None, &keys.secret_ref.name);
                    }
                }
                _ => {}
            }
        }
        refs
    }
}

/// The client CA references of a Gateway's `spec.tls.frontend` (core kind, namespace, name).
fn frontend_ca_refs(g: &Gateway) -> Vec<(String, Option<String>, String)> {
    let Some(frontend) = g.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return Vec::new();
    };
    let default = frontend.default.validation.iter().flat_map(|v| {
        v.ca_certificate_refs
            .iter()
            .filter(|r| r.group.is_empty())
            .map(|r| (r.kind.clone(), r.namespace.clone(), r.name.clone()))
    });
    let per_port = frontend
        .per_port
        .iter()
        .flatten()
        .flat_map(|p| p.tls.validation.iter())
        .flat_map(|v| {
            v.ca_certificate_refs
                .iter()
                .filter(|r| r.group.is_empty())
                .map(|r| (r.kind.clone(), r.namespace.clone(), r.name.clone()))
        });
    default.chain(per_port).collect()
}

//! The index over a snapshot's TLSRoutes: names looked up as the HTTP router looks up hosts
//! (exact, then the most specific wildcard, then any), the older route keeping a name.

use std::{collections::HashMap, sync::Arc};

use weir_api::model::{HostMatch, StreamRoute};

/// The index over a snapshot's TLSRoutes, one for each way a listener takes them.
#[derive(Default)]
pub struct Index {
    passthrough: Names,
    terminate: Names,
}

#[derive(Default)]
struct Names {
    exact: HashMap<String, Arc<StreamRoute>>,
    /// `(suffix, route)`, longest suffix first.
    wildcard: Vec<(String, Arc<StreamRoute>)>,
    any: Option<Arc<StreamRoute>>,
}

impl Index {
    /// Indexes `routes`.
    pub fn new(routes: &[Arc<StreamRoute>]) -> Self {
        let mut sorted: Vec<&Arc<StreamRoute>> = routes.iter().collect();
        // Oldest first, so that the first to claim a name keeps it.
        sorted.sort_by(|a, b| a.order.cmp(&b.order));
        let mut index = Index::default();
        for route in sorted {
            let names = if route.terminate {
                &mut index.terminate
            } else {
                &mut index.passthrough
            };
            for host in &route.hosts {
                match host {
                    HostMatch::Exact(h) => {
                        names.exact.entry(h.clone()).or_insert(route.clone());
                    }
                    HostMatch::Wildcard(suffix) => {
                        if !names.wildcard.iter().any(|(s, _)| s == suffix) {
                            names.wildcard.push((suffix.clone(), route.clone()));
                        }
                    }
                    HostMatch::Any => {
                        names.any.get_or_insert(route.clone());
                    }
                }
            }
        }
        for names in [&mut index.passthrough, &mut index.terminate] {
            names
                .wildcard
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
        index
    }

    /// Whether it holds no route.
    pub fn is_empty(&self) -> bool {
        !self.passes_through() && !self.terminates()
    }

    /// Whether some route passes connections through.
    pub fn passes_through(&self) -> bool {
        let p = &self.passthrough;
        !p.exact.is_empty() || !p.wildcard.is_empty() || p.any.is_some()
    }

    /// Whether some route carries terminated connections.
    pub fn terminates(&self) -> bool {
        let t = &self.terminate;
        !t.exact.is_empty() || !t.wildcard.is_empty() || t.any.is_some()
    }

    /// The route for an SNI name (lowercase; `None`: the ClientHello had none), with how
    /// specifically it names it.
    pub fn route(&self, sni: Option<&str>, terminate: bool) -> Option<(&Arc<StreamRoute>, Rank)> {
        let names = if terminate {
            &self.terminate
        } else {
            &self.passthrough
        };
        let any = names.any.as_ref().map(|r| (r, Rank::Any));
        let Some(sni) = sni else {
            return any;
        };
        if let Some(route) = names.exact.get(sni) {
            return Some((route, Rank::Exact));
        }
        names
            .wildcard
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
            .map(|(suffix, route)| (route, Rank::Wildcard(suffix.len())))
            .or(any)
    }
}

/// How specifically a host match names a host: an exact name, then a wildcard by the length
/// of its suffix, then any host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// A route for any host.
    Any,
    /// `*.` and the suffix's length.
    Wildcard(usize),
    /// The name itself.
    Exact,
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::model::RouteOrder;

    fn route(name: &str, created: &str, hosts: &[HostMatch], terminate: bool) -> Arc<StreamRoute> {
        Arc::new(StreamRoute {
            name: name.into(),
            hosts: hosts.to_vec(),
            listeners: Vec::new(),
            terminate,
            order: RouteOrder {
                created: created.into(),
                object: name.into(),
                rule: 0,
                matcher: 0,
            },
            backends: Vec::new(),
        })
    }

    #[test]
    fn names_are_looked_up_exact_then_wildcard_then_any_and_the_older_route_keeps_a_name() {
        let exact = |h: &str| HostMatch::Exact(h.into());
        let routes = [
            route(
                "newer",
                "2026-02-01T00:00:00Z",
                &[exact("abc.example.com")],
                false,
            ),
            route(
                "older",
                "2026-01-01T00:00:00Z",
                &[exact("abc.example.com")],
                false,
            ),
            route(
                "wild",
                "",
                &[HostMatch::Wildcard(".example.com".into())],
                false,
            ),
            route(
                "deep",
                "",
                &[HostMatch::Wildcard(".b.example.com".into())],
                false,
            ),
            route("ended", "", &[exact("abc.example.com")], true),
        ];
        let index = Index::new(&routes);
        let name = |sni: Option<&str>, terminate| {
            index.route(sni, terminate).map(|(r, _)| r.name.to_string())
        };
        assert_eq!(
            name(Some("abc.example.com"), false).as_deref(),
            Some("older")
        );
        assert_eq!(name(Some("x.example.com"), false).as_deref(), Some("wild"));
        assert_eq!(
            name(Some("a.b.example.com"), false).as_deref(),
            Some("deep")
        );
        assert_eq!(
            name(Some("example.com"), false),
            None,
            "a wildcard needs a label"
        );
        assert_eq!(name(None, false), None, "no SNI, no route for any name");
        assert_eq!(
            name(Some("abc.example.com"), true).as_deref(),
            Some("ended")
        );
        assert!(index.passes_through() && index.terminates());
        assert!(!Index::new(&[]).passes_through());
    }
}

//! The route table: picks the route for a request in the order the Gateway API defines.
//!
//! A route's hostnames decide which requests it may take: routes are indexed by host (exact,
//! wildcard suffix, any), and a request is matched in every bucket that takes its host. Among
//! the matches, the Gateway API precedence: an `Exact` path, then the longest prefix (regular
//! expressions rank with prefixes by the length of their pattern, after a prefix of the same
//! length), then a method match, then more header matches, then more query matches; then the
//! route that names the host more specifically (exact, then the longest wildcard, then none);
//! then the oldest object, then `namespace/name`, then rule and match order. A route attached
//! to a listener does not take the hosts a more specific listener of its Gateway on the same
//! port names (listener isolation: `abc.foo.example.com` is its own listener's, not that of
//! `*.foo.example.com`). So a longer path
//! under `*.example.com` beats `/` under `shop.example.com` (upstream's
//! HTTPRouteMatchingAcrossRoutes), and of two equal matches the exact host's serves.
//!
//! Lookup does a hash probe per path segment boundary rather than scanning routes, so its cost
//! does not grow with the number of routes (see `benches/route_lookup.rs`).

use std::{cmp::Ordering, collections::HashMap, sync::Arc};

use weir_api::model::{HostMatch, PathMatch, Route, Snapshot, StreamRoute};

use crate::stream::Rank;

/// What the router looks at in a request.
pub struct RequestView<'a> {
    /// Lowercase host without port.
    pub host: &'a str,
    /// Normalised path without query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// Request method.
    pub method: &'a http::Method,
    /// Request headers.
    pub headers: &'a http::HeaderMap,
}

/// The index's maps: probed several times per request, with keys the configuration chose, so
/// a fast hash serves better than the default DoS-resistant one.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// An immutable index over a snapshot's routes.
#[derive(Default)]
pub struct Router {
    exact_hosts: FastMap<String, Table>,
    /// `(suffix, table)`, longest suffix first.
    wildcard_hosts: Vec<(String, Table)>,
    any_host: Table,
    fallback: Option<Arc<Route>>,
    /// The TLSRoutes, by SNI name.
    streams: crate::stream::Index,
}

/// Routes of one host bucket.
#[derive(Default)]
struct Table {
    exact: FastMap<String, Vec<Arc<Route>>>,
    prefix: FastMap<String, Vec<Arc<Route>>>,
    /// Regex routes, longest pattern first.
    regex: Vec<Arc<Route>>,
}

impl Router {
    /// Builds the index over every route.
    pub fn new(snapshot: &Snapshot) -> Self {
        Self::serving(snapshot, |_| true, |_| true, true)
    }

    /// Builds the index over the routes and TLSRoutes `route` and `stream` keep, with the
    /// default backend when `fallback` (one port's routes, for a gateway).
    pub fn serving(
        snapshot: &Snapshot,
        route: impl Fn(&Route) -> bool,
        stream: impl Fn(&StreamRoute) -> bool,
        fallback: bool,
    ) -> Self {
        let streams: Vec<Arc<StreamRoute>> = snapshot
            .streams
            .iter()
            .filter(|s| stream(s))
            .cloned()
            .collect();
        let mut router = Router {
            fallback: snapshot.default_route.clone().filter(|_| fallback),
            streams: crate::stream::Index::new(&streams),
            ..Router::default()
        };
        let mut wildcards: FastMap<String, Table> = FastMap::default();
        for route in snapshot.routes.iter().filter(|r| route(r)) {
            let route = route.clone();
            for host in &route.hosts {
                let table = match host {
                    HostMatch::Exact(h) => router.exact_hosts.entry(h.clone()).or_default(),
                    HostMatch::Wildcard(suffix) => wildcards.entry(suffix.clone()).or_default(),
                    HostMatch::Any => &mut router.any_host,
                };
                table.insert(route.clone());
            }
        }
        router.wildcard_hosts = wildcards.into_iter().collect();
        router
            .wildcard_hosts
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        for table in router
            .exact_hosts
            .values_mut()
            .chain(router.wildcard_hosts.iter_mut().map(|(_, t)| t))
            .chain(std::iter::once(&mut router.any_host))
        {
            table.sort();
        }
        router
    }

    /// Whether some TLSRoute passes connections through (then ClientHellos are read ahead).
    pub fn passes_through(&self) -> bool {
        self.streams.passes_through()
    }

    /// The TLSRoute a TLS connection with this SNI is carried by (`terminate`: after the
    /// gateway's TLS, else unopened), if any. A TLSRoute takes a name only when it names it
    /// more specifically than every HTTP route does (HTTP keeps a tie): a tenant's TLSRoute
    /// cannot take over a name an Ingress or an HTTPS route already serves.
    pub fn stream(&self, sni: Option<&str>, terminate: bool) -> Option<&Arc<StreamRoute>> {
        let (route, rank) = self.streams.route(sni, terminate)?;
        let http = match sni {
            Some(host) => self.host_rank(host),
            None => self.any_rank(),
        };
        (http < Some(rank)).then_some(route)
    }

    /// Whether TLS connections naming `host` are carried by a TLSRoute: a request for it over
    /// TLS came on a connection whose SNI named another host.
    pub fn carried(&self, host: &str) -> bool {
        !self.streams.is_empty()
            && (self.stream(Some(host), false).is_some() || self.stream(Some(host), true).is_some())
    }

    /// How specifically the HTTP routes name `host` (`None`: no HTTP route takes it).
    fn host_rank(&self, host: &str) -> Option<Rank> {
        if self.exact_hosts.contains_key(host) {
            return Some(Rank::Exact);
        }
        let wildcard = self
            .wildcard_hosts
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()));
        match wildcard {
            Some((suffix, _)) => Some(Rank::Wildcard(suffix.len())),
            None => self.any_rank(),
        }
    }

    /// `Any` when some HTTP route (or the default backend) takes every host.
    fn any_rank(&self) -> Option<Rank> {
        let any = !self.any_host.is_empty() || self.fallback.is_some();
        any.then_some(Rank::Any)
    }

    /// The route for a request, if any: the best match of each host bucket that takes the
    /// request's host, then the best of those by match, then by how specifically its route
    /// names the host, then the older object.
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        let mut best: Option<(&Arc<Route>, Rank)> = None;
        if let Some(table) = self.exact_hosts.get(req.host) {
            keep_better(&mut best, table.route(req), Rank::Exact);
        }
        for (suffix, table) in &self.wildcard_hosts {
            if req.host.len() > suffix.len() && req.host.ends_with(suffix.as_str()) {
                keep_better(&mut best, table.route(req), Rank::Wildcard(suffix.len()));
            }
        }
        if !self.any_host.is_empty() {
            keep_better(&mut best, self.any_host.route(req), Rank::Any);
        }
        best.map(|(route, _)| route).or(self.fallback.as_ref())
    }
}

impl Table {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }

    fn insert(&mut self, route: Arc<Route>) {
        match &route.matcher.path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(route),
            PathMatch::Prefix(p) => self.prefix.entry(p.clone()).or_default().push(route),
            PathMatch::Regex(_) => self.regex.push(route),
        }
    }

    fn sort(&mut self) {
        for bucket in self.exact.values_mut().chain(self.prefix.values_mut()) {
            bucket.sort_by(|a, b| precedence(a, b));
        }
        self.regex.sort_by(|a, b| {
            regex_len(b)
                .cmp(&regex_len(a))
                .then_with(|| precedence(a, b))
        });
    }

    fn route(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        if let Some(route) = self.exact.get(req.path).and_then(|b| first_match(b, req)) {
            return Some(route);
        }
        // Prefix candidates, longest first: the whole path, then each segment boundary, then "/".
        let path = req.path.trim_end_matches('/');
        let mut regex = self.regex.iter().peekable();
        let mut end = path.len();
        loop {
            let candidate = if end == 0 { "/" } else { &path[..end] };
            // A regex whose pattern is longer than this prefix outranks it.
            while let Some(r) = regex.next_if(|r| regex_len(r) > candidate.len()) {
                if regex_matches(r, req) {
                    return Some(r);
                }
            }
            if let Some(route) = self.prefix.get(candidate).and_then(|b| first_match(b, req)) {
                return Some(route);
            }
            if end == 0 {
                break;
            }
            end = path[..end].rfind('/').unwrap_or(0);
        }
        regex.find(|r| regex_matches(r, req))
    }
}

/// Whether `host` is one that `pattern` names.
fn takes(pattern: &HostMatch, host: &str) -> bool {
    match pattern {
        HostMatch::Exact(h) => h == host,
        HostMatch::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        HostMatch::Any => true,
    }
}

fn regex_len(route: &Route) -> usize {
    match &route.matcher.path {
        PathMatch::Regex(r) => r.as_str().len() - "^(?:)$".len(),
        _ => 0,
    }
}

fn regex_matches(route: &Route, req: &RequestView<'_>) -> bool {
    matches!(&route.matcher.path, PathMatch::Regex(r) if r.is_match(req.path))
        && conditions_hold(route, req)
}

fn first_match<'r>(bucket: &'r [Arc<Route>], req: &RequestView<'_>) -> Option<&'r Arc<Route>> {
    bucket.iter().find(|r| conditions_hold(r, req))
}

/// Method, header and query conditions (the path was matched by the index), and the host
/// not one a more specific listener of the route's Gateway takes.
fn conditions_hold(route: &Route, req: &RequestView<'_>) -> bool {
    if route.excluded_hosts.iter().any(|h| takes(h, req.host)) {
        return false;
    }
    let m = &route.matcher;
    if m.method
        .as_deref()
        .is_some_and(|method| method != req.method.as_str())
    {
        return false;
    }
    let headers_ok = m.headers.iter().all(|h| {
        req.headers
            .get_all(h.name.as_str())
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| h.value.matches(v)))
    });
    headers_ok
        && m.query
            .iter()
            .all(|q| query_value(req.query, &q.name).is_some_and(|v| q.value.matches(&v)))
}

/// The first value of query parameter `name`, percent-decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_encoding::percent_decode_str(k).decode_utf8().ok()?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Keeps `found` (from a bucket naming the host as `host` does) when it outranks what `best`
/// holds: by match, then by host, then the older object.
fn keep_better<'r>(
    best: &mut Option<(&'r Arc<Route>, Rank)>,
    found: Option<&'r Arc<Route>>,
    host: Rank,
) {
    let Some(route) = found else { return };
    let wins = best.is_none_or(|(held, held_host)| {
        let ranked = match_rank(route)
            .cmp(&match_rank(held))
            .then(host.cmp(&held_host))
            .then_with(|| held.order.cmp(&route.order));
        ranked == Ordering::Greater
    });
    if wins {
        *best = Some((route, host));
    }
}

/// How specific a route's match is, in the Gateway API's order: an Exact path over any other,
/// then the longer prefix or regular expression (a prefix first at the same length), then a
/// method match, more header matches, more query matches. Within one host bucket the table
/// finds the best by these already; across buckets they are compared with this.
fn match_rank(route: &Route) -> (u8, usize, bool, bool, usize, usize) {
    let m = &route.matcher;
    let (exact, length, prefix) = match &m.path {
        PathMatch::Exact(p) => (1, p.len(), true),
        PathMatch::Prefix(p) => (0, p.len(), true),
        PathMatch::Regex(_) => (0, regex_len(route), false),
    };
    (
        exact,
        length,
        prefix,
        m.method.is_some(),
        m.headers.len(),
        m.query.len(),
    )
}

/// Gateway API precedence between routes whose paths are equally specific.
fn precedence(a: &Route, b: &Route) -> Ordering {
    let (ma, mb) = (&a.matcher, &b.matcher);
    mb.method
        .is_some()
        .cmp(&ma.method.is_some())
        .then(mb.headers.len().cmp(&ma.headers.len()))
        .then(mb.query.len().cmp(&ma.query.len()))
        .then_with(|| a.order.cmp(&b.order))
}

#[cfg(test)]
mod tests;

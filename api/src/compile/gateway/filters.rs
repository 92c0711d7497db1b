//! HTTPRoute filters: header modifiers, URL rewrites, redirects, mirrors and CORS.

use super::{rules::service_ref, *};

/// A bad filter field: (field path, message).
type FilterError = (String, String);

pub(super) fn apply_filter(
    cx: &mut Context<'_>,
    filter: &HttpRouteRulesFilters,
    key: &ObjectKey,
    forward: &mut Forward,
    redirect: &mut Option<Redirect>,
) -> Result<(), FilterError> {
    let missing = |name: &str| {
        (
            format!(".{name}"),
            format!("type is {name} but the {name} field is missing"),
        )
    };
    let lower = |s: &str| s.to_ascii_lowercase();
    match filter.r#type {
        FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier => {
            let request = filter.r#type == FilterType::RequestHeaderModifier;
            let value = if request {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                serde_json::to_value(m)
            } else {
                let m = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                serde_json::to_value(m)
            };
            // Both modifier types have the same shape; read them through one form.
            let m: HeaderModifierSpec = value
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| (String::new(), "unreadable header modifier".to_string()))?;
            let mut target = HeaderModifier::default();
            for (list, out) in [(&m.set, &mut target.set), (&m.add, &mut target.add)] {
                for h in list {
                    check_header(&h.name, &h.value, request)?;
                    out.push((lower(&h.name), h.value.clone()));
                }
            }
            for name in &m.remove {
                check_header(name, "", request)?;
                target.remove.push(lower(name));
            }
            forward.filters.push(match request {
                true => Filter::RequestHeaderModifier(target),
                false => Filter::ResponseHeaderModifier(target),
            });
        }
        FilterType::RequestRedirect => {
            let r = filter
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            let path = r.path.as_ref().map(|p| match p.r#type {
                RedirectPathType::ReplaceFullPath => {
                    PathRewrite::Full(p.replace_full_path.clone().unwrap_or_default())
                }
                RedirectPathType::ReplacePrefixMatch => {
                    PathRewrite::Prefix(p.replace_prefix_match.clone().unwrap_or_default())
                }
            });
            let port = match r.port {
                None => None,
                Some(p) => Some(u16::try_from(p).map_err(|_| {
                    (
                        ".requestRedirect.port".to_string(),
                        format!("{p} is not a port"),
                    )
                })?),
            };
            let status = u16::try_from(r.status_code.unwrap_or(302)).unwrap_or(0);
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Err((
                    ".requestRedirect.statusCode".into(),
                    "use 301, 302, 303, 307 or 308".into(),
                ));
            }
            let scheme = r
                .scheme
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string));
            *redirect = Some(Redirect {
                scheme,
                hostname: r.hostname.as_deref().map(lower),
                port,
                path,
                status,
            });
        }
        FilterType::UrlRewrite => {
            let r = filter
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            let path = r.path.as_ref().map(|p| match p.r#type {
                RewritePathType::ReplaceFullPath => {
                    PathRewrite::Full(p.replace_full_path.clone().unwrap_or_default())
                }
                RewritePathType::ReplacePrefixMatch => {
                    PathRewrite::Prefix(p.replace_prefix_match.clone().unwrap_or_default())
                }
            });
            if forward.rewrite().is_some() {
                return Err((".type".into(), "a rule has at most one URLRewrite".into()));
            }
            forward.filters.push(Filter::UrlRewrite(UrlRewrite {
                hostname: r.hostname.as_deref().map(lower),
                path,
            }));
        }
        FilterType::RequestMirror => {
            let m = filter
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing("requestMirror"))?;
            let b = &m.backend_ref;
            let port = b.port.ok_or_else(|| {
                (
                    ".requestMirror.backendRef.port".into(),
                    "a port is required".into(),
                )
            })?;
            let per_million = match (&m.percent, &m.fraction) {
                (Some(p), _) if (0..=100).contains(p) => (*p as u32) * 10_000,
                (Some(_), _) => {
                    return Err((
                        ".requestMirror.percent".into(),
                        "must be between 0 and 100".into(),
                    ))
                }
                (None, Some(f)) => {
                    let denominator = f.denominator.unwrap_or(100);
                    if denominator <= 0 || f.numerator < 0 || f.numerator > denominator {
                        return Err((
                            ".requestMirror.fraction".into(),
                            "numerator must be between 0 and a positive denominator".into(),
                        ));
                    }
                    ((f.numerator as u64 * 1_000_000) / denominator as u64) as u32
                }
                (None, None) => 1_000_000,
            };
            let cluster = service_ref(
                cx,
                key,
                b.group.as_deref(),
                b.kind.as_deref(),
                b.namespace.as_deref(),
                &b.name,
                port,
            );
            forward.filters.push(Filter::RequestMirror(Mirror {
                cluster,
                per_million,
            }));
        }
        FilterType::Cors => {
            let c = filter.cors.as_ref().ok_or_else(|| missing("cors"))?;
            if forward.cors().is_some() {
                return Err((".type".into(), "a rule takes one CORS filter".into()));
            }
            forward.filters.push(Filter::Cors(Arc::new(cors(c)?)));
        }
        FilterType::ExtensionRef | FilterType::ExternalAuth => {
            let kind = format!("{:?}", filter.r#type);
            return Err((
                ".type".into(),
                format!("filter type {kind} is not supported by Weir"),
            ));
        }
    }
    Ok(())
}

/// A `CORS` filter, every value checked: origins `scheme://host[:port]` (http or https, a
/// host that may start with `*`), methods and header names as HTTP has them.
fn cors(c: &HttpRouteRulesFiltersCors) -> Result<Cors, FilterError> {
    let mut out = Cors {
        credentials: c.allow_credentials == Some(true),
        max_age: match c.max_age {
            None => 5,
            Some(n) => u32::try_from(n)
                .map_err(|_| (".cors.maxAge".to_string(), format!("{n} is negative")))?,
        },
        ..Cors::default()
    };
    for (i, origin) in c.allow_origins.iter().flatten().enumerate() {
        let field = || format!(".cors.allowOrigins[{i}]");
        if origin == "*" {
            out.any_origin = true;
        } else {
            out.origins
                .push(allowed_origin(origin).map_err(|e| (field(), e))?);
        }
    }
    for (i, method) in c.allow_methods.iter().flatten().enumerate() {
        if method == "*" {
            out.any_method = true;
        } else if http::Method::from_bytes(method.as_bytes()).is_ok() {
            out.methods.push(method.clone());
        } else {
            let field = format!(".cors.allowMethods[{i}]");
            return Err((field, format!("{method:?} is not an HTTP method")));
        }
    }
    let names = |list: &Option<Vec<String>>, name: &str, any: &mut bool| {
        let mut names = Vec::new();
        for (i, header) in list.iter().flatten().enumerate() {
            if header == "*" {
                *any = true;
            } else if http::HeaderName::from_bytes(header.as_bytes()).is_ok() {
                names.push(header.to_ascii_lowercase());
            } else {
                let field = format!(".cors.{name}[{i}]");
                return Err((field, format!("{header:?} is not a header name")));
            }
        }
        Ok(names)
    };
    out.headers = names(&c.allow_headers, "allowHeaders", &mut out.any_header)?;
    out.expose = names(&c.expose_headers, "exposeHeaders", &mut out.expose_any)?;
    Ok(out)
}

fn allowed_origin(origin: &str) -> Result<AllowedOrigin, String> {
    let bad = |why: &str| format!("{origin:?} is not an origin: {why}");
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| bad("scheme://host[:port] expected"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad("the scheme is http or https")),
    };
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad("an origin has no path, query, fragment or user"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            let digits = !port.starts_with('0') && port.bytes().all(|b| b.is_ascii_digit());
            match port.parse::<u16>() {
                Ok(port) if digits => (host, port),
                _ => return Err(bad("the port is 1 to 65535")),
            }
        }
        _ => (rest, default_port),
    };
    // A bracketed IPv6 address, kept in its canonical form (as requests' are compared).
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let address: std::net::Ipv6Addr = inner.parse().map_err(|_| bad("not an IPv6 address"))?;
        return Ok(AllowedOrigin {
            scheme,
            host: format!("[{address}]"),
            port,
        });
    }
    let host = host.to_ascii_lowercase();
    // `*` is a wildcard only at the left of the host; the rest must be a host name: labels of
    // letters, digits and `-`.
    let named = match host.strip_prefix('*') {
        Some("") => None,
        Some(rest) => match rest.strip_prefix('.') {
            Some(rest) => Some(rest),
            None => return Err(bad("`*` stands for whole labels: *.example.com")),
        },
        None => Some(host.as_str()),
    };
    let label =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if named.is_some_and(|name| !name.split('.').all(label)) {
        return Err(bad("the host is not a host name"));
    }
    Ok(AllowedOrigin { scheme, host, port })
}

/// A header a modifier may name. The request's `Host` is not one of them: what the backend is
/// asked for is URLRewrite's `hostname`, and a modifier that set it would be undone there.
fn check_header(name: &str, value: &str, request: bool) -> Result<(), FilterError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err((String::new(), format!("{name:?} is not a header name")));
    }
    if request && name.eq_ignore_ascii_case("host") {
        return Err((
            String::new(),
            "the Host header cannot be modified here: use URLRewrite's hostname".to_string(),
        ));
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err((
            String::new(),
            format!("the value for {name} is not a valid header value"),
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct HeaderModifierSpec {
    #[serde(default)]
    set: Vec<NameValue>,
    #[serde(default)]
    add: Vec<NameValue>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(serde::Deserialize)]
struct NameValue {
    name: String,
    value: String,
}

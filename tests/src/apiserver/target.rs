//! Where a request points.

use super::{
    resources::{Resource, RESOURCES},
    ApiError,
};

/// Where a request points: `/api/v1/...` or `/apis/GROUP/VERSION/...`, then
/// `[namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]]`.
pub(super) struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn parse(path: &str) -> Result<Self, ApiError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::not_found(format!("no such path {path}"))),
        };
        let find = |plural: &str| {
            RESOURCES
                .iter()
                .find(|r| r.group == group && r.version == version && r.plural == plural)
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, plural, rest @ ..] if find(plural).is_some() => {
                (Some(namespace.to_string()), [&[*plural][..], rest].concat())
            }
            _ => (None, rest.to_vec()),
        };
        let (plural, name, subresource) = match rest.as_slice() {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
            _ => return Err(ApiError::not_found(format!("no such path {path}"))),
        };
        let resource = find(plural).ok_or_else(|| {
            ApiError::not_found(format!(
                "the server could not find the requested resource {group}/{version} {plural}"
            ))
        })?;
        if resource.namespaced && namespace.is_none() && name.is_some() {
            return Err(ApiError::not_found(format!(
                "{} is namespaced: use /namespaces/NAMESPACE/{plural}/{}",
                resource.kind,
                name.unwrap_or_default()
            )));
        }
        if !resource.namespaced && namespace.is_some() {
            return Err(ApiError::not_found(format!(
                "{} is cluster-scoped",
                resource.kind
            )));
        }
        Ok(Self {
            resource,
            namespace,
            name,
            subresource,
        })
    }
}

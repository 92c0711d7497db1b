//! The test API server's storage: every version of every object under one revision counter,
//! so lists can be read at a version and watches can replay from one, until compaction.

use std::{collections::BTreeMap, sync::Arc};

use base64::Engine;
use serde_json::{json, Value};

use super::{
    meta::{
        check_type, keep_system_metadata, now, random_suffix, set_or_remove, uid, valid_name,
        without,
    },
    ApiError, Query, Resource, RESOURCES,
};

/// One write, as watches see it.
pub struct Change {
    pub revision: u64,
    resource: &'static Resource,
    namespace: Option<String>,
    kind: &'static str,
    object: Value,
    previous: Option<Value>,
}

impl Change {
    /// The event a watch of `resource` (in `namespace`, with the query's selectors) gets for
    /// this change, if any: an object that starts matching is ADDED, one that stops is DELETED.
    pub fn seen_by(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        query: &Query,
    ) -> Option<(&'static str, Value)> {
        if resource != self.resource
            || namespace.is_some_and(|ns| Some(ns) != self.namespace.as_deref())
        {
            return None;
        }
        let now = query.matches(&self.object);
        let before = self.previous.as_ref().is_some_and(|p| query.matches(p));
        let kind = match (self.kind, before, now) {
            ("MODIFIED", true, true) => "MODIFIED",
            ("MODIFIED", false, true) => "ADDED",
            ("MODIFIED", true, false) => "DELETED",
            ("ADDED" | "DELETED", _, true) => self.kind,
            _ => return None,
        };
        Some((kind, self.object.clone()))
    }
}

type Key = (String, String, String);

fn key(resource: &Resource, namespace: Option<&str>, name: &str) -> Key {
    (
        resource.qualified(),
        namespace.unwrap_or_default().to_string(),
        name.to_string(),
    )
}

/// Every version of every object, and the log watches replay.
#[derive(Default)]
pub struct Store {
    revision: u64,
    compacted: u64,
    objects: BTreeMap<Key, Vec<(u64, Option<Value>)>>,
    log: Vec<Arc<Change>>,
}

impl Store {
    /// The newest revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn current(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)?.last()?.1.as_ref()
    }

    fn at(&self, key: &Key, revision: u64) -> Option<&Value> {
        let versions = self.objects.get(key)?;
        versions
            .iter()
            .rev()
            .find(|(r, _)| *r <= revision)?
            .1
            .as_ref()
    }

    fn not_found(resource: &Resource, name: &str) -> ApiError {
        ApiError::not_found(format!("{} \"{name}\" not found", resource.qualified()))
    }

    pub fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.current(&key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| Self::not_found(resource, name))
    }

    pub fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        query: &Query,
    ) -> Result<Value, ApiError> {
        let (revision, after) = match &query.continue_token {
            Some(token) => {
                let (revision, after) = decode_continue(token)?;
                if revision < self.compacted {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (revision, Some(after))
            }
            None if query.exact => {
                let revision = query.resource_version.unwrap_or(self.revision);
                if revision < self.compacted {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {revision} ({})",
                        self.compacted
                    )));
                }
                (revision, None)
            }
            None => (self.revision, None),
        };
        let qualified = resource.qualified();
        let mut items = Vec::new();
        let mut more = 0;
        for (key, _) in self.objects.iter().filter(|(k, _)| k.0 == qualified) {
            if namespace.is_some_and(|ns| ns != key.1) {
                continue;
            }
            if after
                .as_ref()
                .is_some_and(|a| (&key.1, &key.2) <= (&a.0, &a.1))
            {
                continue;
            }
            let Some(object) = self.at(key, revision) else {
                continue;
            };
            if !query.matches(object) {
                continue;
            }
            if query.limit.is_some_and(|l| items.len() >= l) {
                more += 1;
                continue;
            }
            let mut item = object.clone();
            if resource.builtin() {
                if let Some(map) = item.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
            }
            items.push((key.1.clone(), key.2.clone(), item));
        }
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if more > 0 {
            let (ns, name, _) = items.last().expect("a full page");
            metadata["continue"] = encode_continue(revision, ns, name).into();
            metadata["remainingItemCount"] = more.into();
        }
        Ok(json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items.into_iter().map(|(_, _, i)| i).collect::<Vec<_>>(),
        }))
    }

    /// What a watch starting at `from` must be sent first: the changes after it, or (without
    /// a version) the current objects as ADDED events.
    pub fn since(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        query: &Query,
        from: Option<u64>,
    ) -> Result<Vec<(&'static str, Value)>, ApiError> {
        match from {
            None => {
                let list = self.list(resource, namespace, &Query::default())?;
                Ok(list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|o| query.matches(o))
                    .map(|o| {
                        let mut o = o.clone();
                        o["kind"] = resource.kind.into();
                        o["apiVersion"] = resource.api_version().into();
                        ("ADDED", o)
                    })
                    .collect())
            }
            Some(from) if from < self.compacted => Err(ApiError::gone(format!(
                "too old resource version: {from} ({})",
                self.compacted
            ))),
            Some(from) => Ok(self
                .log
                .iter()
                .filter(|c| c.revision > from)
                .filter_map(|c| c.seen_by(resource, namespace, query))
                .collect()),
        }
    }

    pub fn create(
        &mut self,
        resource: &'static Resource,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<(Value, Vec<Arc<Change>>), ApiError> {
        if resource.namespaced && namespace.is_none() {
            return Err(ApiError::not_found(format!(
                "{} must be created in a namespace",
                resource.kind
            )));
        }
        check_type(resource, &mut object)?;
        let meta = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::invalid(resource.kind, "", "metadata: Required value"))?;
        match (meta.get("namespace").and_then(Value::as_str), namespace) {
            (Some(body), Some(url)) if !body.is_empty() && body != url => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
        if let Some(ns) = namespace {
            meta.insert("namespace".into(), ns.into());
        }
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => {
                    let name = format!("{prefix}{}", random_suffix());
                    meta.insert("name".into(), name.clone().into());
                    name
                }
                None => {
                    return Err(ApiError::invalid(
                        resource.kind,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ))
                }
            },
        };
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                resource.kind,
                &name,
                "metadata.name: Invalid value: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            ));
        }
        if let Some(ns) = namespace {
            let ns_key = key(&RESOURCES[0], None, ns);
            if self.current(&ns_key).is_none() {
                return Err(ApiError::not_found(format!(
                    "namespaces \"{ns}\" not found"
                )));
            }
        }
        let key = key(resource, namespace, &name);
        if self.current(&key).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource.qualified()),
            ));
        }
        meta.insert("uid".into(), uid().into());
        meta.insert("creationTimestamp".into(), now().into());
        if resource.status {
            meta.insert("generation".into(), 1.into());
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        if resource.kind == "Service" {
            allocate_cluster_ip(&mut object);
        }
        let change = self.write(resource, key, Some(object), None);
        Ok((change.object.clone(), vec![change]))
    }

    pub fn update(
        &mut self,
        resource: &'static Resource,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        mut object: Value,
    ) -> Result<(Value, Vec<Arc<Change>>), ApiError> {
        if subresource.is_some() && !resource.status {
            return Err(ApiError::not_found(format!(
                "{} has no status subresource",
                resource.qualified()
            )));
        }
        let key = key(resource, namespace, name);
        let current = self
            .current(&key)
            .cloned()
            .ok_or_else(|| Self::not_found(resource, name))?;
        check_type(resource, &mut object)?;
        let body_name = object.pointer("/metadata/name").and_then(Value::as_str);
        if body_name.is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                body_name.unwrap_or_default()
            )));
        }
        let wanted = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty());
        if wanted.is_some_and(|v| Some(v) != current["metadata"]["resourceVersion"].as_str()) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    resource.qualified()
                ),
            ));
        }
        let next = if subresource == Some("status") {
            let mut next = current.clone();
            set_or_remove(&mut next, "status", object.get("status").cloned());
            next
        } else {
            if resource.status {
                set_or_remove(&mut object, "status", current.get("status").cloned());
            }
            keep_system_metadata(&mut object, &current);
            object
        };
        Ok(self.replace(resource, key, current, next))
    }

    /// Applies a patch to the current object, giving the object to update with.
    pub fn patch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let mut object = self.get(resource, namespace, name)?;
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let patch: Value = match media {
            "application/merge-patch+json" | "application/json-patch+json" => {
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (got {other:?})"),
                ))
            }
        };
        if media == "application/merge-patch+json" {
            json_patch::merge(&mut object, &patch);
        } else {
            let operations: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut object, &operations).map_err(|e| {
                ApiError::invalid(
                    resource.kind,
                    name,
                    &format!("the patch does not apply: {e}"),
                )
            })?;
        }
        Ok(object)
    }

    pub fn delete(
        &mut self,
        resource: &'static Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(Value, Vec<Arc<Change>>), ApiError> {
        let key = key(resource, namespace, name);
        let current = self
            .current(&key)
            .cloned()
            .ok_or_else(|| Self::not_found(resource, name))?;
        let change = self.write(resource, key, None, Some(current));
        Ok((change.object.clone(), vec![change]))
    }

    /// `kubectl apply` for tests: creates, or replaces everything including `status`.
    pub fn apply(
        &mut self,
        resource: &'static Resource,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<Vec<Arc<Change>>, ApiError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let key = key(resource, namespace, &name);
        match self.current(&key).cloned() {
            None => {
                let status = object.get("status").cloned();
                let (_, changes) = self.create(resource, namespace, object)?;
                if status.is_none() {
                    return Ok(changes);
                }
                let created = changes[0].object.clone();
                let mut with_status = created.clone();
                set_or_remove(&mut with_status, "status", status);
                let (_, more) = self.replace(resource, key, created, with_status);
                Ok(changes.into_iter().chain(more).collect())
            }
            Some(current) => {
                check_type(resource, &mut object)?;
                if let Some(ns) = namespace {
                    object["metadata"]["namespace"] = ns.into();
                }
                if object.get("status").is_none() {
                    set_or_remove(&mut object, "status", current.get("status").cloned());
                }
                keep_system_metadata(&mut object, &current);
                Ok(self.replace(resource, key, current, object).1)
            }
        }
    }

    /// Forgets every version but the newest, and the log.
    pub fn compact(&mut self) {
        self.compacted = self.revision;
        self.log.clear();
        self.objects.retain(|_, versions| {
            let last = versions.pop();
            versions.clear();
            match last {
                Some((r, Some(v))) => {
                    versions.push((r, Some(v)));
                    true
                }
                _ => false,
            }
        });
    }

    /// Writes `next` over `current`, unless nothing changed (a no-op write keeps the version).
    fn replace(
        &mut self,
        resource: &'static Resource,
        key: Key,
        current: Value,
        mut next: Value,
    ) -> (Value, Vec<Arc<Change>>) {
        let generation = current["metadata"]["generation"].as_i64();
        if let Some(generation) = generation {
            let moved = without(&current, &["metadata", "status"])
                != without(&next, &["metadata", "status"]);
            next["metadata"]["generation"] = (generation + i64::from(moved)).into();
        }
        let mut compare = next.clone();
        compare["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if compare == current {
            return (current, Vec::new());
        }
        let change = self.write(resource, key, Some(next), Some(current));
        (change.object.clone(), vec![change])
    }

    fn write(
        &mut self,
        resource: &'static Resource,
        key: Key,
        object: Option<Value>,
        previous: Option<Value>,
    ) -> Arc<Change> {
        self.revision += 1;
        let revision = self.revision;
        let (kind, mut shown) = match (&object, &previous) {
            (Some(o), None) => ("ADDED", o.clone()),
            (Some(o), Some(_)) => ("MODIFIED", o.clone()),
            (None, Some(p)) => ("DELETED", p.clone()),
            (None, None) => unreachable!("a write changes something"),
        };
        shown["metadata"]["resourceVersion"] = revision.to_string().into();
        let stored = object.map(|_| shown.clone());
        let namespace = Some(key.1.clone()).filter(|ns| !ns.is_empty());
        self.objects
            .entry(key)
            .or_default()
            .push((revision, stored));
        let change = Arc::new(Change {
            revision,
            resource,
            namespace,
            kind,
            object: shown,
            previous,
        });
        self.log.push(change.clone());
        change
    }
}

fn encode_continue(revision: u64, namespace: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": revision, "ns": namespace, "name": name}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        value["rv"].as_u64().ok_or_else(bad)?,
        (
            value["ns"].as_str().ok_or_else(bad)?.to_string(),
            value["name"].as_str().ok_or_else(bad)?.to_string(),
        ),
    ))
}

/// A Service created without a cluster IP gets one, as the real API server allocates it
/// (`None`, headless, stays).
fn allocate_cluster_ip(service: &mut Value) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("clusterIP").and_then(Value::as_str).is_some() {
        return;
    }
    let n: u16 = fastrand::u16(1..u16::MAX);
    let ip = format!("10.96.{}.{}", n >> 8, n & 0xff);
    spec.insert("clusterIP".into(), ip.clone().into());
    spec.insert("clusterIPs".into(), serde_json::json!([ip]));
}

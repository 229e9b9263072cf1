//! Listener rules compiled for matching: conditions AND-ed, values within a condition
//! OR-ed, rules tried by ascending priority.
//!
//! Exact paths and `/prefix/*` paths are indexed in a `matchit::Router`; of the other
//! rules, those whose host patterns are all exact names are indexed by host; the rest
//! (wildcard paths and hosts, rules on headers, methods, queries or addresses only) go on
//! an unindexed list. A lookup merges the path candidates, the host candidates and the
//! unindexed list, all sorted by priority, and stops at the first rule that matches.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method};
use ipnet::IpNet;

use super::glob::Glob;
use crate::config;

/// The parts of a request rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Host header (or HTTP/2 authority), without the port.
    pub host: Option<&'a str>,
    /// Path, without the query.
    pub path: &'a str,
    /// Query string, without the `?`.
    pub query: Option<&'a str>,
    /// Method.
    pub method: &'a Method,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Client address.
    pub source_ip: IpAddr,
}

/// One compiled rule; `action` indexes the table's actions.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) priority: u32,
    hosts: Vec<Glob>,
    paths: Vec<Glob>,
    headers: Vec<(HeaderName, Vec<Glob>)>,
    methods: Vec<Method>,
    query: Vec<(Option<Glob>, Glob)>,
    source_ip: Vec<IpNet>,
    /// Every path pattern is exact or `/prefix/*`: the path index answers for it.
    path_indexed: bool,
}

impl Rule {
    pub(crate) fn build(rule: &config::Rule) -> Self {
        let c = &rule.conditions;
        let path_indexed = !c.path.is_empty() && c.path.iter().all(|p| indexed_form(p).is_some());
        Self {
            priority: rule.priority,
            hosts: c.host.iter().map(|h| Glob::new(h, true)).collect(),
            paths: c.path.iter().map(|p| Glob::new(p, false)).collect(),
            headers: c
                .http_header
                .iter()
                .filter_map(|h| {
                    let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                    Some((name, h.values.iter().map(|v| Glob::new(v, true)).collect()))
                })
                .collect(),
            methods: c.method.clone(),
            query: c
                .query
                .iter()
                .map(|q| {
                    let key = q.key.as_deref().map(|k| Glob::new(k, true));
                    (key, Glob::new(&q.value, true))
                })
                .collect(),
            source_ip: c.source_ip.clone(),
            path_indexed,
        }
    }

    /// Whether the request meets every condition; `path_known` skips the path, already
    /// matched by the index.
    fn matches(&self, req: &Request<'_>, path_known: bool) -> bool {
        (path_known || self.paths.is_empty() || self.paths.iter().any(|g| g.matches(req.path)))
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && (self.hosts.is_empty()
                || req
                    .host
                    .is_some_and(|h| self.hosts.iter().any(|g| g.matches(h))))
            && self.headers.iter().all(|(name, values)| {
                req.headers.get_all(name).iter().any(|v| {
                    v.to_str()
                        .is_ok_and(|v| values.iter().any(|g| g.matches(v)))
                })
            })
            && (self.query.is_empty() || req.query.is_some_and(|q| self.query_matches(q)))
            && (self.source_ip.is_empty()
                || self.source_ip.iter().any(|n| n.contains(&req.source_ip)))
    }

    fn query_matches(&self, query: &str) -> bool {
        query.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            self.query.iter().any(|(key, value)| {
                key.as_ref().is_none_or(|key| key.matches(k)) && value.matches(v)
            })
        })
    }
}

/// How the index stores a path pattern: exact, or a prefix ending in `/`.
enum Indexed<'a> {
    Exact(&'a str),
    Prefix(&'a str),
}

fn indexed_form(pattern: &str) -> Option<Indexed<'_>> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if Glob::has_wildcards(body) || !pattern.starts_with('/') {
        return None;
    }
    if body.len() < pattern.len() {
        body.ends_with('/').then_some(Indexed::Prefix(body))
    } else {
        Some(Indexed::Exact(body))
    }
}

fn escape(route: &str) -> String {
    route.replace('{', "{{").replace('}', "}}")
}

/// A listener's rules, ready to match.
#[derive(Debug)]
pub(crate) struct Rules {
    /// Sorted by ascending priority; positions are the rule ids used below.
    rules: Vec<Rule>,
    /// Path index: each route leads to every indexed rule whose pattern matches any path
    /// the route matches, sorted by id.
    index: matchit::Router<usize>,
    candidates: Vec<Vec<u32>>,
    /// Host index: lower-cased exact host → rules (not path-indexed) naming it, by id.
    hosts: HashMap<String, Vec<u32>>,
    /// Rules neither index can answer for, sorted by id.
    unindexed: Vec<u32>,
}

impl Rules {
    /// Compiles rules already sorted by priority.
    pub(crate) fn build(rules: &[config::Rule]) -> Self {
        let compiled: Vec<Rule> = rules.iter().map(Rule::build).collect();
        // Route text → (is prefix, matchit route) → rule ids.
        let mut routes: BTreeMap<(String, bool), Vec<u32>> = BTreeMap::new();
        let mut unindexed = Vec::new();
        let mut hosts: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, (rule, conf)) in compiled.iter().zip(rules).enumerate() {
            let exact_hosts = !conf.conditions.host.is_empty()
                && conf.conditions.host.iter().all(|h| !Glob::has_wildcards(h));
            if !rule.path_indexed && exact_hosts {
                for host in &conf.conditions.host {
                    let ids = hosts.entry(host.to_ascii_lowercase()).or_default();
                    if ids.last() != Some(&(id as u32)) {
                        ids.push(id as u32);
                    }
                }
                continue;
            }
            if !rule.path_indexed {
                unindexed.push(id as u32);
                continue;
            }
            for pattern in &conf.conditions.path {
                let key = match indexed_form(pattern) {
                    Some(Indexed::Exact(p)) => (p.to_owned(), false),
                    Some(Indexed::Prefix(p)) => (p.to_owned(), true),
                    None => continue,
                };
                routes.entry(key).or_default().push(id as u32);
            }
        }
        let mut index = matchit::Router::new();
        let mut candidates = Vec::new();
        let mut insert = |route: String, ids: Vec<u32>| {
            if index.insert(route, candidates.len()).is_ok() {
                candidates.push(ids);
            }
        };
        for (text, is_prefix) in routes.keys() {
            // Every path this route matches is also matched by the prefix routes that are
            // prefixes of `text`; an exact route adds its own rules. A prefix route must not
            // take the exact rules of the same text: its catch-all serves `/a/x`, which
            // `/a/` exactly does not match (the bare `/a/` goes to the exact route).
            let mut ids: Vec<u32> = routes
                .iter()
                .filter(|((other, other_prefix), _)| {
                    (*other_prefix && text.starts_with(other.as_str()))
                        || (!*is_prefix && !*other_prefix && other == text)
                })
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if *is_prefix {
                // `/a/*` matches `/a/` itself: matchit's catch-all needs one character,
                // so the bare prefix goes in as an exact route too (unless it is one).
                if !routes.contains_key(&(text.clone(), false)) {
                    insert(escape(text), ids.clone());
                }
                insert(format!("{}{{*rest}}", escape(text)), ids);
            } else {
                insert(escape(text), ids);
            }
        }
        Self {
            rules: compiled,
            index,
            candidates,
            hosts,
            unindexed,
        }
    }

    /// The id of the first rule, by priority, that the request matches.
    pub(crate) fn find(&self, req: &Request<'_>) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let by_path: &[u32] = match self.index.at(req.path) {
            Ok(m) => &self.candidates[*m.value],
            Err(_) => &[],
        };
        let by_host: &[u32] = match req.host {
            Some(host) if !self.hosts.is_empty() => {
                let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(host.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(host)
                };
                self.hosts.get(host.as_ref()).map_or(&[], Vec::as_slice)
            }
            _ => &[],
        };
        // Three lists sorted by id (= priority order); each rule is in at most one.
        let lists = [by_path, by_host, &self.unindexed];
        let mut next = [0usize; 3];
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (l, list) in lists.iter().enumerate() {
                if let Some(&id) = list.get(next[l]) {
                    if best.is_none_or(|(_, b)| id < b) {
                        best = Some((l, id));
                    }
                }
            }
            let (l, id) = best?;
            next[l] += 1;
            if self.rules[id as usize].matches(req, l == 0) {
                return Some(id as usize);
            }
        }
    }

    /// Number of rules.
    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }

    /// Priority of the rule with this id.
    pub(crate) fn priority(&self, id: usize) -> u32 {
        self.rules[id].priority
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rules(toml_rules: &str) -> Rules {
        let text = format!(
            "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\ndefault_action = {{ forward = \"g\" }}\n{toml_rules}\n[target_groups.g]\ndiscovery = {{ static = [] }}\n"
        );
        let config = config::Config::parse(Path::new("t.toml"), &text).unwrap();
        Rules::build(&config.listeners[0].rules)
    }

    fn find(r: &Rules, host: &str, path: &str) -> Option<u32> {
        let headers = HeaderMap::new();
        let req = Request {
            host: Some(host),
            path,
            query: None,
            method: &Method::GET,
            headers: &headers,
            source_ip: [127, 0, 0, 1].into(),
        };
        r.find(&req).map(|id| r.priority(id))
    }

    #[test]
    fn path_host_and_unindexed_rules_are_tried_in_one_priority_order() {
        let r = rules(
            r#"
[[listeners.rules]]
priority = 30
conditions = { path = ["/api/*"] }
action = { forward = "g" }
[[listeners.rules]]
priority = 10
conditions = { host = ["A.example.com"] }
action = { forward = "g" }
[[listeners.rules]]
priority = 20
conditions = { method = ["GET"] }
action = { forward = "g" }
[[listeners.rules]]
priority = 5
conditions = { host = ["*.wild.com"] }
action = { forward = "g" }
"#,
        );
        assert_eq!(find(&r, "a.EXAMPLE.com", "/api/x"), Some(10));
        assert_eq!(find(&r, "b.example.com", "/api/x"), Some(20));
        assert_eq!(find(&r, "x.wild.com", "/api/x"), Some(5));
    }
}

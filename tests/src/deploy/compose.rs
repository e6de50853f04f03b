//! Reading a docker compose file as compose reads it: YAML with anchors and
//! merge keys (`<<`), `${VAR:-default}` interpolation, and the short and long
//! forms of environments, commands, ports and volumes.

use std::collections::BTreeMap;

use yaml_rust2::Yaml;
use yaml_rust2::yaml::Hash;

/// Parses a YAML document and applies its merge keys.
///
/// # Errors
/// When the text is not YAML, or holds no document.
pub fn parse(text: &str) -> Result<Yaml, String> {
    let mut documents = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    if documents.is_empty() {
        return Err("the file holds no YAML document".to_owned());
    }
    Ok(merge_keys(documents.swap_remove(0)))
}

/// Applies `<<: *anchor` and `<<: [*a, *b]` (YAML 1.1 merge keys, which compose
/// honours): a mapping's own keys win over merged ones, and an earlier merged
/// mapping wins over a later one.
fn merge_keys(value: Yaml) -> Yaml {
    match value {
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(merge_keys).collect()),
        Yaml::Hash(hash) => {
            let merge_key = Yaml::String("<<".to_owned());
            let mut own = Hash::new();
            let mut merged = Vec::new();
            for (key, value) in hash {
                let value = merge_keys(value);
                if key == merge_key {
                    match value {
                        Yaml::Array(sources) => merged.extend(sources),
                        source => merged.push(source),
                    }
                } else {
                    own.insert(key, value);
                }
            }
            for source in merged {
                if let Yaml::Hash(source) = source {
                    for (key, value) in source {
                        own.entry(key).or_insert(value);
                    }
                }
            }
            Yaml::Hash(own)
        }
        other => other,
    }
}

/// A scalar as text (numbers and booleans as written), `None` for anything else.
pub fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

/// A mapping's keys and values, keys as text; empty for anything else.
pub fn entries(value: &Yaml) -> Vec<(String, &Yaml)> {
    match value {
        Yaml::Hash(hash) => hash.iter().filter_map(|(k, v)| Some((scalar(k)?, v))).collect(),
        _ => Vec::new(),
    }
}

/// Whether a mapping has `key`.
pub fn has(value: &Yaml, key: &str) -> bool {
    !value[key].is_badvalue()
}

/// Compose's variable substitution, using the defaults written in the file
/// (`${X:-d}` and `${X-d}` give `d`; other forms give an empty string; `$$` is `$`).
pub fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((substituted, after)) = substitution(rest) {
            out.push_str(&substituted);
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `${NAME...}` at the start of `text`: what it stands for, and the rest.
fn substitution(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix("${")?;
    let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
    let name = &inner[..name_len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let after_name = &inner[name_len..];
    let close = after_name.find('}')?;
    let operation = &after_name[..close];
    let rest = &after_name[close + 1..];
    let default = operation.strip_prefix(":-").or_else(|| operation.strip_prefix('-'));
    let valid = operation.is_empty() || default.is_some() || operation.starts_with(":?") || operation.starts_with('?');
    valid.then(|| (default.unwrap_or_default().to_owned(), rest))
}

/// A service's environment (mapping or `KEY=value` list), interpolated.
pub fn environment(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Array(items) => items
            .iter()
            .filter_map(scalar)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), interpolate(v)),
                None => (item, String::new()),
            })
            .collect(),
        value => entries(value).into_iter().map(|(k, v)| (k, interpolate(&scalar(v).unwrap_or_default()))).collect(),
    }
}

/// A service's command as words.
pub fn command(service: &Yaml) -> Vec<String> {
    match &service["command"] {
        Yaml::Array(words) => words.iter().filter_map(scalar).collect(),
        Yaml::String(line) => line.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// A service's `depends_on`: each service it waits for, and the condition
/// (`service_started` when the short list form is used).
pub fn depends_on(service: &Yaml) -> Vec<(String, String)> {
    let depends_on = &service["depends_on"];
    match depends_on {
        Yaml::Array(names) => names.iter().filter_map(scalar).map(|d| (d, "service_started".to_owned())).collect(),
        _ => entries(depends_on)
            .into_iter()
            .map(|(d, spec)| (d, scalar(&spec["condition"]).unwrap_or_else(|| "service_started".to_owned())))
            .collect(),
    }
}

/// One volume of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// A path (bind mount) or a volume name; `None` for an anonymous volume.
    pub source: Option<String>,
    pub target: String,
    pub bind: bool,
}

pub fn volumes(service: &Yaml) -> Vec<Volume> {
    let Yaml::Array(items) = &service["volumes"] else { return Vec::new() };
    items
        .iter()
        .map(|item| {
            if let Yaml::Hash(_) = item {
                return Volume {
                    source: scalar(&item["source"]),
                    target: scalar(&item["target"]).unwrap_or_default(),
                    bind: scalar(&item["type"]).as_deref() == Some("bind"),
                };
            }
            let spec = scalar(item).unwrap_or_default();
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.as_slice() {
                [target] => Volume { source: None, target: (*target).to_owned(), bind: false },
                [source, target, ..] => Volume {
                    source: Some((*source).to_owned()),
                    target: (*target).to_owned(),
                    bind: source.starts_with(['.', '/', '~']),
                },
                [] => Volume { source: None, target: String::new(), bind: false },
            }
        })
        .collect()
}

/// One published port of a service: host address (empty for all), host port, container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: String,
    pub published: String,
    pub target: String,
}

pub fn ports(service: &Yaml) -> Vec<Port> {
    let Yaml::Array(items) = &service["ports"] else { return Vec::new() };
    items
        .iter()
        .map(|item| {
            if let Yaml::Hash(_) = item {
                return Port {
                    host_ip: scalar(&item["host_ip"]).unwrap_or_default(),
                    published: scalar(&item["published"]).unwrap_or_default(),
                    target: scalar(&item["target"]).unwrap_or_default(),
                };
            }
            let spec = scalar(item).unwrap_or_default();
            let spec = spec.split('/').next().unwrap_or_default();
            let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
            let text = |s: &str| s.trim_matches(['[', ']']).to_owned();
            match parts.as_slice() {
                [target, published, host_ip] => {
                    Port { host_ip: text(host_ip), published: (*published).to_owned(), target: (*target).to_owned() }
                }
                [target, published] => {
                    Port { host_ip: String::new(), published: (*published).to_owned(), target: (*target).to_owned() }
                }
                _ => Port { host_ip: String::new(), published: String::new(), target: spec.to_owned() },
            }
        })
        .collect()
}

/// An image reference's repository, tag and digest.
pub fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (image, digest) = match image.split_once('@') {
        Some((image, digest)) => (image, Some(digest)),
        None => (image, None),
    };
    let slash = image.rfind('/');
    match image.rfind(':') {
        Some(colon) if slash.is_none_or(|slash| colon > slash) => (&image[..colon], Some(&image[colon + 1..]), digest),
        _ => (image, None, digest),
    }
}

/// The host and port of a URL or `host:port` address; the port from the
/// scheme when none is written, `None` when unknown, `Some(-1)` when unusable.
pub fn host_port(value: &str) -> (Option<String>, Option<i64>) {
    let (scheme, rest) = value.split_once("://").unwrap_or(("tcp", value));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, after)| after);
    let (host, port) = if let Some(bracketed) = host_and_port.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (bracketed, None),
        }
    } else {
        match host_and_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_and_port, None),
        }
    };
    let port = match port {
        Some("") | None => match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(80),
            "https" => Some(443),
            "nats" => Some(4222),
            "postgres" | "postgresql" => Some(5432),
            _ => None,
        },
        Some(port) => Some(port.parse::<u16>().map_or(-1, i64::from)),
    };
    let host = (!host.is_empty()).then(|| host.to_ascii_lowercase());
    (host, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_takes_the_defaults_written_in_the_file() {
        assert_eq!(interpolate("postgres://u:${PW:-chat}@db/x"), "postgres://u:chat@db/x");
        assert_eq!(interpolate("${A-b} ${C} $$HOME ${D:?set it}"), "b  $HOME ");
    }

    #[test]
    fn merge_keys_keep_a_mappings_own_keys_first() {
        let doc = parse("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 3\n").unwrap();
        let c = &doc["c"];
        assert_eq!(
            (scalar(&c["x"]), scalar(&c["y"]), scalar(&c["z"])),
            (Some("3".into()), Some("1".into()), Some("2".into()))
        );
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(host_port("0.0.0.0:50051"), (Some("0.0.0.0".into()), Some(50051)));
        assert_eq!(host_port("[::]:8080"), (Some("::".into()), Some(8080)));
        assert_eq!(host_port("nats://nats"), (Some("nats".into()), Some(4222)));
        assert_eq!(host_port("postgres://p:pw@postgres:5432/auth"), (Some("postgres".into()), Some(5432)));
        assert_eq!(host_port("http://history:x"), (Some("history".into()), Some(-1)));
    }

    #[test]
    fn images_split_into_repository_tag_and_digest() {
        assert_eq!(split_image("nats:2.15.1-alpine"), ("nats", Some("2.15.1-alpine"), None));
        assert_eq!(split_image("localhost:5000/x"), ("localhost:5000/x", None, None));
        assert_eq!(split_image("x@sha256:ab"), ("x", None, Some("sha256:ab")));
    }
}

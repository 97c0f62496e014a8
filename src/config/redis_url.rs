//! Redis deployment shapes: a single server, a Redis Cluster or a
//! Sentinel-managed primary, each with or without TLS.
//!
//! URL forms (`user:password@` may precede the hosts in every one):
//! - `redis://host:port[/db]`, `rediss://host:port[/db]`: one server;
//! - `redis-cluster://h1:p1,h2:p2,...`, `rediss-cluster://...`: cluster seed
//!   nodes (any subset; the rest is discovered). A cluster has only DB 0;
//! - `redis-sentinel://s1:p1,s2:p2/service[/db]`, `rediss-sentinel://...`:
//!   the sentinels and the name of the service they monitor.

use std::path::PathBuf;

/// Which kind of deployment the store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (`redis://`, `rediss://`).
    Single,
    /// Redis Cluster seed nodes.
    Cluster { nodes: Vec<(String, u16)> },
    /// Sentinels and the monitored service.
    Sentinel { nodes: Vec<(String, u16)>, service: String },
}

impl RedisTopology {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTopology::Cluster { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            RedisTopology::Single => "single",
            RedisTopology::Cluster { .. } => "cluster",
            RedisTopology::Sentinel { .. } => "sentinel",
        }
    }
}

/// TLS settings of an outgoing connection: to Redis (and the sentinels),
/// or to an `https://` backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA(s) to trust; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its key, for servers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only.
    pub insecure_skip_verify: bool,
}

/// The `[redis]` name of the TLS settings.
pub type RedisTls = ClientTls;

/// A parsed Redis URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// For `Single`: the URL without its database path (what fred parses).
    /// Otherwise the URL as given, for display.
    pub url: String,
    pub db: Option<u8>,
    pub topology: RedisTopology,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Parses any of the URL forms in the module doc; `None` when it is none.
pub fn parse_redis_url(s: &str) -> Option<RedisUrl> {
    let (scheme, rest) = s.split_once("://")?;
    let (tls, kind) = match scheme {
        "redis" => (false, 0),
        "rediss" => (true, 0),
        "redis-cluster" => (false, 1),
        "rediss-cluster" => (true, 1),
        "redis-sentinel" => (false, 2),
        "rediss-sentinel" => (true, 2),
        _ => return None,
    };
    if kind == 0 {
        let (url, db) = split_single(s)?;
        let (username, password) = userinfo(rest);
        return Some(RedisUrl {
            url,
            db,
            topology: RedisTopology::Single,
            tls,
            username,
            password,
        });
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (username, password) = userinfo(authority);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let nodes = parse_nodes(hosts.split(','))?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (topology, db) = if kind == 1 {
        // A cluster has DB 0 only: `/0` is allowed, anything else is not.
        match parts.as_slice() {
            [] => (RedisTopology::Cluster { nodes }, None),
            ["0"] => (RedisTopology::Cluster { nodes }, Some(0)),
            _ => return None,
        }
    } else {
        match parts.as_slice() {
            [service] => (
                RedisTopology::Sentinel {
                    nodes,
                    service: service.to_string(),
                },
                None,
            ),
            [service, db] => (
                RedisTopology::Sentinel {
                    nodes,
                    service: service.to_string(),
                },
                Some(db.parse::<u8>().ok()?),
            ),
            _ => return None,
        }
    };
    Some(RedisUrl {
        url: s.to_string(),
        db,
        topology,
        tls,
        username,
        password,
    })
}

/// `host:port` items (IPv6 as `[::1]:7000`); the port is required.
pub fn parse_nodes<'a>(items: impl Iterator<Item = &'a str>) -> Option<Vec<(String, u16)>> {
    let mut nodes = Vec::new();
    for item in items {
        let item = item.trim();
        let (host, port) = item.rsplit_once(':')?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
        if host.is_empty() || host.contains(['/', '@', ',', ' ']) {
            return None;
        }
        nodes.push((host.to_string(), port));
    }
    (!nodes.is_empty()).then_some(nodes)
}

/// `user:password@` of an authority, percent-decoded.
fn userinfo(authority: &str) -> (Option<String>, Option<String>) {
    let authority = authority.split('/').next().unwrap_or("");
    let Some((info, _)) = authority.rsplit_once('@') else {
        return (None, None);
    };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    match info.split_once(':') {
        Some((u, p)) => ((!u.is_empty()).then(|| decode(u)), Some(decode(p))),
        None => ((!info.is_empty()).then(|| decode(info)), None),
    }
}

/// Splits `redis://h:p/3` into (`redis://h:p`, Some(3)).
fn split_single(s: &str) -> Option<(String, Option<u8>)> {
    let rest = s.strip_prefix("redis://").or_else(|| s.strip_prefix("rediss://"))?;
    let scheme_len = s.len() - rest.len();
    match rest.find('/') {
        None => (!rest.is_empty()).then(|| (s.to_string(), None)),
        Some(i) => {
            let (authority, path) = rest.split_at(i);
            let db = path.trim_start_matches('/');
            let db = if db.is_empty() {
                None
            } else {
                Some(db.parse::<u8>().ok()?)
            };
            (!authority.is_empty()).then(|| (format!("{}{}", &s[..scheme_len], authority), db))
        }
    }
}

/// The `tls*` options of `[redis]`: TLS is on when the URL says so
/// (`rediss…://`) or `tls = true`; the file options need it on. Files must
/// be readable now, so that a typo is a config error, not an outage.
pub(super) fn resolve_tls(
    raw: &super::file::RawRedis,
    url_tls: bool,
    at: &dyn Fn(std::ops::Range<usize>, String) -> super::ConfigError,
) -> Result<Option<RedisTls>, super::ConfigError> {
    let on = url_tls || raw.tls.as_ref().is_some_and(|t| *t.get_ref());
    let fields = TlsFields {
        ca_file: &raw.tls_ca_file,
        cert_file: &raw.tls_cert_file,
        key_file: &raw.tls_key_file,
        insecure_skip_verify: &raw.tls_insecure_skip_verify,
    };
    client_tls(fields, (on, "use a rediss:// URL (or tls = true)"), at)
}

/// The `tls_*` keys of a section, as written.
pub(super) struct TlsFields<'a> {
    pub ca_file: &'a Option<toml::Spanned<String>>,
    pub cert_file: &'a Option<toml::Spanned<String>>,
    pub key_file: &'a Option<toml::Spanned<String>>,
    pub insecure_skip_verify: &'a Option<toml::Spanned<bool>>,
}

/// The TLS settings of a client connection, their files checked (they
/// exist and hold PEM certificates or a key) at their place in the file.
/// `on`: whether the connection uses TLS, and what turns it on (for the
/// error a `tls_*` key gets without it).
pub(super) fn client_tls(
    raw: TlsFields<'_>,
    (on, turn_on): (bool, &str),
    at: &dyn Fn(std::ops::Range<usize>, String) -> super::ConfigError,
) -> Result<Option<ClientTls>, super::ConfigError> {
    let file = |f: &Option<toml::Spanned<String>>, what: &str| -> Result<Option<PathBuf>, super::ConfigError> {
        let Some(f) = f else { return Ok(None) };
        if !on {
            return Err(at(f.span(), format!("{what} needs TLS: {turn_on}")));
        }
        let path = PathBuf::from(f.get_ref());
        std::fs::metadata(&path)
            .map_err(|e| at(f.span(), format!("{what} {:?}: {e}", f.get_ref())))
            .map(|_| Some(path))
    };
    let ca_file = file(raw.ca_file, "tls_ca_file")?;
    let cert_file = file(raw.cert_file, "tls_cert_file")?;
    let key_file = file(raw.key_file, "tls_key_file")?;
    match (raw.cert_file, raw.key_file) {
        (Some(c), None) => return Err(at(c.span(), "tls_cert_file needs tls_key_file".into())),
        (None, Some(k)) => return Err(at(k.span(), "tls_key_file needs tls_cert_file".into())),
        _ => {}
    }
    // The PEM contents too: a wrong file is a config error with its place,
    // not a store that never connects.
    for (path, spanned, what) in [
        (&ca_file, raw.ca_file, "tls_ca_file"),
        (&cert_file, raw.cert_file, "tls_cert_file"),
    ] {
        if let (Some(path), Some(s)) = (path, spanned) {
            if super::pem::certificates(path, what).is_err() {
                return Err(at(
                    s.span(),
                    format!("{what} {:?} holds no PEM certificate", s.get_ref()),
                ));
            }
        }
    }
    if let (Some(path), Some(s)) = (&key_file, raw.key_file) {
        if super::pem::private_key(path, "tls_key_file").is_err() {
            return Err(at(
                s.span(),
                format!("tls_key_file {:?} holds no PEM private key", s.get_ref()),
            ));
        }
    }
    let insecure_skip_verify = match raw.insecure_skip_verify {
        Some(v) if *v.get_ref() && !on => {
            return Err(at(v.span(), format!("tls_insecure_skip_verify needs TLS: {turn_on}")))
        }
        Some(v) => *v.get_ref(),
        None => false,
    };
    Ok(on.then_some(ClientTls {
        ca_file,
        cert_file,
        key_file,
        insecure_skip_verify,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_urls() {
        let u = parse_redis_url("redis://h:1/3").unwrap();
        assert_eq!((u.url.as_str(), u.db, u.tls), ("redis://h:1", Some(3), false));
        let u = parse_redis_url("rediss://u:p@h:1").unwrap();
        assert_eq!((u.url.as_str(), u.db, u.tls), ("rediss://u:p@h:1", None, true));
        assert_eq!((u.username.as_deref(), u.password.as_deref()), (Some("u"), Some("p")));
        assert_eq!(parse_redis_url("redis://h:1/").unwrap().db, None);
        assert!(parse_redis_url("http://h").is_none());
        assert!(parse_redis_url("redis://h/x").is_none());
    }

    #[test]
    fn cluster_urls() {
        let u = parse_redis_url("redis-cluster://:pw@a:7000,b:7001").unwrap();
        assert_eq!(
            u.topology,
            RedisTopology::Cluster {
                nodes: vec![("a".into(), 7000), ("b".into(), 7001)]
            }
        );
        assert_eq!((u.username, u.password.as_deref(), u.tls), (None, Some("pw"), false));
        assert!(parse_redis_url("rediss-cluster://[::1]:7000/0").unwrap().tls);
        assert!(parse_redis_url("redis-cluster://a:7000/1").is_none());
        assert!(parse_redis_url("redis-cluster://a").is_none());
        assert!(parse_redis_url("redis-cluster://").is_none());
        assert!(parse_redis_url("redis-cluster://a:7000,,b:1").is_none());
    }

    #[test]
    fn sentinel_urls() {
        let u = parse_redis_url("redis-sentinel://s1:26379,s2:26380/mymaster/2").unwrap();
        assert_eq!(
            u.topology,
            RedisTopology::Sentinel {
                nodes: vec![("s1".into(), 26379), ("s2".into(), 26380)],
                service: "mymaster".into()
            }
        );
        assert_eq!(u.db, Some(2));
        assert!(parse_redis_url("rediss-sentinel://s1:26379/m").unwrap().tls);
        assert!(parse_redis_url("redis-sentinel://s1:26379").is_none());
        assert!(parse_redis_url("redis-sentinel://s1:26379/m/x").is_none());
    }

    fn load(redis: &str) -> Result<crate::config::Config, String> {
        let text = format!("[backend]\nurl = \"http://127.0.0.1:1\"\n\n[redis]\n{redis}\n");
        crate::config::Config::from_toml_str(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn cluster_config_forces_db0_and_prefixes_editions() {
        let c = load("url = \"redis-cluster://127.0.0.1:7000,127.0.0.1:7001\"\ndb = 2\nkey_prefix = \"cg:\"").unwrap();
        let r = c.redis.unwrap();
        assert!(r.topology.is_cluster());
        assert_eq!(r.db, 0);
        assert_eq!(c.cache.key_prefix, "cg:db2:");
        let c = load("cluster = [\"127.0.0.1:7000\"]").unwrap();
        assert!(c.redis.unwrap().topology.is_cluster());
        assert_eq!(c.cache.key_prefix, "");
    }

    #[test]
    fn redis_url_env_takes_every_form() {
        let text = "[backend]\nurl = \"http://127.0.0.1:1\"\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n";
        let load = |url: &str| {
            let url = url.to_string();
            let env = move |name: &str| (name == "REDIS_URL").then(|| url.clone());
            crate::config::Config::from_toml(text, "proxy.toml", &env, &Default::default())
        };
        let r = load("rediss-sentinel://:pw@s1:26379/svc/3").unwrap().redis.unwrap();
        assert_eq!(r.topology.name(), "sentinel");
        assert_eq!((r.db, r.password.as_deref()), (3, Some("pw")));
        assert!(r.tls.is_some());
        let r = load("redis-cluster://a:7000").unwrap().redis.unwrap();
        assert!(r.topology.is_cluster());
        let e = load("redis-sentinel://s1:26379").unwrap_err().to_string();
        assert!(e.contains("environment variable REDIS_URL"), "{e}");
    }

    #[test]
    fn bad_redis_values_point_at_the_file() {
        let e = load("url = \"redis-cluster://a:7000/3\"").unwrap_err();
        assert!(e.starts_with("<inline>:5:7:"), "{e}");
        let e = load("cluster = [\"nope\"]").unwrap_err();
        assert!(e.starts_with("<inline>:5:11:"), "{e}");
        let e = load("url = \"redis://a:1\"\ncluster = [\"a:1\"]").unwrap_err();
        assert!(e.contains("both url and cluster"), "{e}");
        let e = load("url = \"redis://a:1\"\ntls_ca_file = \"/etc/hostname\"").unwrap_err();
        assert!(e.starts_with("<inline>:6:15:") && e.contains("needs TLS"), "{e}");
        let e = load("url = \"rediss://a:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"").unwrap_err();
        assert!(e.starts_with("<inline>:6:15:"), "{e}");
        let e = load("url = \"rediss://a:1\"\ntls_ca_file = \"/etc/hostname\"").unwrap_err();
        assert!(
            e.starts_with("<inline>:6:15:") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = load("url = \"rediss://a:1\"\ntls_cert_file = \"/etc/hostname\"").unwrap_err();
        assert!(e.contains("needs tls_key_file"), "{e}");
        let e = load("url = \"redis://a:1\"\nsentinel_password = \"x\"").unwrap_err();
        assert!(
            e.starts_with("<inline>:6:21:") && e.contains("redis-sentinel://"),
            "{e}"
        );
        let c = load("url = \"redis-sentinel://s:26379/m\"\nsentinel_password = \"x\"").unwrap();
        assert_eq!(c.redis.unwrap().sentinel_password.as_deref(), Some("x"));
        let c = load("url = \"redis://a:1\"\ntls = true\ntls_insecure_skip_verify = true").unwrap();
        assert!(c.redis.unwrap().tls.unwrap().insecure_skip_verify);
    }
}

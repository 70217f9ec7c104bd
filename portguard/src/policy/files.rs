//! The policy files as written: serde types for product files and the site file.
//!
//! Every value that validation can reject is a [`Spanned`], so the diagnostic points at the
//! offending line:col; every struct denies unknown fields, so a typo (`alias-of`, `port`) is an
//! error instead of a silently ignored key.
//!
//! Files are not deserialized in one `toml::from_str` call: serde stops at the first error, and
//! an operator should see every mistake of a file at once. The document is parsed into a spanned
//! tree (recovering from syntax errors), then each top-level key, each table entry and each
//! `[[rules]]` element is deserialized on its own, with its absolute spans.

use std::path::PathBuf;

use serde::{Deserialize, de::DeserializeOwned};
use toml::{
    Spanned,
    de::{DeTable, DeValue, Error as TomlError, ValueDeserializer},
};

/// A string with where it was written.
pub(crate) type Str = Spanned<String>;

/// A `name = value` entry of a table whose keys are ids (roles, features, params).
pub(crate) type Entry<T> = (Str, Spanned<T>);

// ---------------------------------------------------------------------------------------------
// Product files

/// `[product]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductHeader {
    /// Must equal the file stem: the site refers to the product by file name.
    pub(crate) id: Str,
    /// Required provenance; shown to people reading the file, not used by the loader.
    #[expect(
        dead_code,
        reason = "required by the schema; the Policy does not carry it"
    )]
    pub(crate) name: String,
    #[expect(
        dead_code,
        reason = "required by the schema; the Policy does not carry it"
    )]
    pub(crate) document: String,
}

/// `[roles."id"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleDecl {
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) managed: bool,
    pub(crate) alias_of: Option<Str>,
}

/// `[features.name]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeatureDecl {
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) default: bool,
}

/// `[params."name"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParamDecl {
    /// A port spec without `${...}`.
    pub(crate) default: Str,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "for people reading the file; the Policy does not carry params"
    )]
    pub(crate) description: String,
}

/// `proto = ...` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProtoSpec {
    Tcp,
    Udp,
    Sctp,
    #[serde(rename = "tcp+udp")]
    TcpUdp,
    Icmp,
    Icmpv6,
    Igmp,
    Gre,
    Esp,
    Ah,
    Ospf,
    Pim,
    Vrrp,
}

impl ProtoSpec {
    /// The IP protocol number of a portless protocol (IGMP, VRRP...), `None` for the others.
    pub(crate) fn ip_protocol(self) -> Option<u8> {
        let name = match self {
            Self::Igmp => "igmp",
            Self::Gre => "gre",
            Self::Esp => "esp",
            Self::Ah => "ah",
            Self::Ospf => "ospf",
            Self::Pim => "pim",
            Self::Vrrp => "vrrp",
            Self::Tcp | Self::Udp | Self::Sctp | Self::TcpUdp | Self::Icmp | Self::Icmpv6 => {
                return None;
            }
        };
        super::IP_PROTOCOLS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// `[[rules]]`, in a product file or a site file (where `to` defaults to `host` and `doc` to
/// the file and line; product files must give both).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDecl {
    pub(crate) id: Str,
    pub(crate) from: Spanned<Vec<Str>>,
    pub(crate) to: Option<Spanned<Vec<Str>>>,
    pub(crate) proto: Spanned<ProtoSpec>,
    pub(crate) ports: Option<Str>,
    pub(crate) icmp_type: Option<Str>,
    pub(crate) icmp_code: Option<Spanned<u8>>,
    pub(crate) purpose: String,
    pub(crate) doc: Option<String>,
    #[serde(default)]
    pub(crate) when: Vec<Str>,
    pub(crate) note: Option<String>,
}

/// A whole product file. Entries that failed to deserialize are left out (their errors are
/// reported separately), so validation can go on with the rest.
#[derive(Debug, Default)]
pub(crate) struct ProductFile {
    pub(crate) header: Option<Spanned<ProductHeader>>,
    pub(crate) roles: Vec<Entry<RoleDecl>>,
    pub(crate) features: Vec<Entry<FeatureDecl>>,
    pub(crate) params: Vec<Entry<ParamDecl>>,
    pub(crate) rules: Vec<Spanned<RuleDecl>>,
}

// ---------------------------------------------------------------------------------------------
// Site file

/// `mode = ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ModeSpec {
    Enforce,
    Audit,
}

/// `[datapath] broadcast = ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BroadcastSpec {
    Pass,
    Judge,
}

/// `[datapath] non_ip` / `not_for_host`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PassDrop {
    Pass,
    Drop,
}

/// `[failsafe]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailsafeSection {
    #[serde(default)]
    pub(crate) ssh_from: Vec<Str>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostSection {
    pub(crate) roles: Option<Vec<Str>>,
    pub(crate) interfaces: Option<Vec<Str>>,
}

/// `[datapath]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatapathSection {
    pub(crate) broadcast: Option<BroadcastSpec>,
    pub(crate) non_ip: Option<PassDrop>,
    pub(crate) not_for_host: Option<PassDrop>,
}

/// `[audit] sink = ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SinkSpec {
    File,
    Journal,
    Both,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditSection {
    pub(crate) sink: Option<SinkSpec>,
    pub(crate) path: Option<Spanned<PathBuf>>,
    pub(crate) rate: Option<Spanned<u32>>,
    pub(crate) burst: Option<Spanned<u32>>,
    pub(crate) max_bytes: Option<Spanned<u64>>,
    pub(crate) keep: Option<Spanned<u32>>,
}

/// A whole site file; missing tables are their defaults.
#[derive(Debug, Default)]
pub(crate) struct SiteFile {
    pub(crate) products: Vec<Str>,
    pub(crate) features: Vec<Str>,
    pub(crate) disabled_features: Vec<Str>,
    pub(crate) mode: Option<ModeSpec>,
    pub(crate) roles: Vec<Entry<Vec<Str>>>,
    pub(crate) params: Vec<(Str, Str)>,
    pub(crate) failsafe: FailsafeSection,
    pub(crate) host: HostSection,
    pub(crate) datapath: DatapathSection,
    pub(crate) audit: AuditSection,
    /// Site-local rules.
    pub(crate) rules: Vec<Spanned<RuleDecl>>,
    /// Features and rules whose "documented as doubtful" warnings the site has read and
    /// accepts (so `check --strict` passes on a deliberate choice).
    pub(crate) acknowledged: Vec<Str>,
}

impl SiteFile {
    /// Add a drop-in read after this file, the way systemd and firewalld drop-ins combine:
    /// lists grow (products, features, role ranges, failsafe sources, rules, params), and a
    /// setting a later file gives replaces the earlier one (mode, `[host]`, `[datapath]`,
    /// `[audit]` keys). Duplicates (a param set twice, a role mapped twice in one file) are
    /// for validation to report, at both places.
    pub(crate) fn merge(&mut self, later: SiteFile) {
        let SiteFile {
            products,
            features,
            disabled_features,
            mode,
            roles,
            params,
            failsafe,
            host,
            datapath,
            audit,
            rules,
            acknowledged,
        } = later;
        let add_new = |to: &mut Vec<Str>, from: Vec<Str>| {
            for s in from {
                if !to.iter().any(|t| t.get_ref() == s.get_ref()) {
                    to.push(s);
                }
            }
        };
        add_new(&mut self.products, products);
        add_new(&mut self.features, features);
        add_new(&mut self.disabled_features, disabled_features);
        add_new(&mut self.acknowledged, acknowledged);
        self.mode = mode.or(self.mode);
        self.roles.extend(roles);
        self.params.extend(params);
        self.failsafe.ssh_from.extend(failsafe.ssh_from);
        let HostSection { roles, interfaces } = host;
        self.host.roles = roles.or(self.host.roles.take());
        self.host.interfaces = interfaces.or(self.host.interfaces.take());
        let DatapathSection {
            broadcast,
            non_ip,
            not_for_host,
        } = datapath;
        self.datapath.broadcast = broadcast.or(self.datapath.broadcast);
        self.datapath.non_ip = non_ip.or(self.datapath.non_ip);
        self.datapath.not_for_host = not_for_host.or(self.datapath.not_for_host);
        let AuditSection {
            sink,
            path,
            rate,
            burst,
            max_bytes,
            keep,
        } = audit;
        self.audit.sink = sink.or(self.audit.sink);
        self.audit.path = path.or(self.audit.path.take());
        self.audit.rate = rate.or(self.audit.rate.take());
        self.audit.burst = burst.or(self.audit.burst.take());
        self.audit.max_bytes = max_bytes.or(self.audit.max_bytes.take());
        self.audit.keep = keep.or(self.audit.keep.take());
        self.rules.extend(rules);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A problem found while reading: a message and the byte span it is about.
#[derive(Debug)]
pub(crate) struct ReadError {
    pub(crate) span: std::ops::Range<usize>,
    pub(crate) message: String,
    /// A TOML syntax error: what follows it in the file is not what its author meant, so
    /// later problems of that file are likely its echoes.
    pub(crate) syntax: bool,
}

impl From<TomlError> for ReadError {
    fn from(e: TomlError) -> Self {
        Self {
            span: e.span().unwrap_or(0..0),
            message: e.message().trim_end().to_owned(),
            syntax: false,
        }
    }
}

/// Reads a product file, collecting every error.
pub(crate) fn read_product(text: &str) -> (ProductFile, Vec<ReadError>) {
    let mut r = Reader::default();
    let mut file = ProductFile::default();
    let mut header_seen = false;
    for (key, value) in r.document(text) {
        match key.get_ref().as_ref() {
            "product" => {
                header_seen = true;
                file.header = r.value(value);
            }
            "roles" => file.roles = r.entries(value),
            "features" => file.features = r.entries(value),
            "params" => file.params = r.entries(value),
            "rules" => file.rules = r.items(value),
            other => r.unknown(
                &key,
                other,
                &["product", "roles", "features", "params", "rules"],
            ),
        }
    }
    if !header_seen {
        r.errors.push(ReadError {
            span: 0..0,
            message: "missing table `[product]` (id, name, document)".to_owned(),
            syntax: false,
        });
    }
    (file, r.errors)
}

/// Reads a site file, collecting every error.
pub(crate) fn read_site(text: &str) -> (SiteFile, Vec<ReadError>) {
    const KEYS: &[&str] = &[
        "products",
        "features",
        "disabled_features",
        "mode",
        "roles",
        "params",
        "failsafe",
        "host",
        "datapath",
        "audit",
        "rules",
        "acknowledged",
    ];
    let mut r = Reader::default();
    let mut site = SiteFile::default();
    for (key, value) in r.document(text) {
        match key.get_ref().as_ref() {
            "products" => site.products = r.value(value).unwrap_or_default(),
            "features" => site.features = r.value(value).unwrap_or_default(),
            "disabled_features" => site.disabled_features = r.value(value).unwrap_or_default(),
            "mode" => site.mode = r.value(value),
            "roles" => site.roles = r.entries(value),
            "params" => {
                site.params = r
                    .entries(value)
                    .into_iter()
                    .map(|(k, v)| (k, v.into_inner()))
                    .collect();
            }
            "failsafe" => site.failsafe = r.value(value).unwrap_or_default(),
            "host" => site.host = r.value(value).unwrap_or_default(),
            "datapath" => site.datapath = r.value(value).unwrap_or_default(),
            "audit" => site.audit = r.value(value).unwrap_or_default(),
            "rules" => site.rules = r.items(value),
            "acknowledged" => site.acknowledged = r.value(value).unwrap_or_default(),
            other => r.unknown(&key, other, KEYS),
        }
    }
    (site, r.errors)
}

/// Deserializes pieces of a document, keeping the errors.
#[derive(Default)]
struct Reader {
    errors: Vec<ReadError>,
}

type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

impl Reader {
    /// The top-level entries of a document, in file order (the toml map is sorted by key).
    fn document<'i>(&mut self, text: &'i str) -> Vec<(Key<'i>, Spanned<DeValue<'i>>)> {
        let (doc, errors) = DeTable::parse_recoverable(text);
        self.errors.extend(errors.into_iter().map(|e| ReadError {
            syntax: true,
            ..ReadError::from(e)
        }));
        let mut entries: Vec<_> = doc.into_inner().into_iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        entries
    }

    /// One value; `None` (and an error) when it does not fit `T`.
    fn value<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        T::deserialize(ValueDeserializer::from(value))
            .map_err(|e| self.errors.push(e.into()))
            .ok()
    }

    /// The entries of a table whose keys are ids, in file order; bad entries are left out.
    fn entries<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Vec<Entry<T>> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.errors.push(ReadError {
                span,
                message: "expected a table".to_owned(),
                syntax: false,
            });
            return Vec::new();
        };
        let mut out: Vec<Entry<T>> = table
            .into_iter()
            .filter_map(|(k, v)| {
                let key = Spanned::new(k.span(), k.into_inner().into_owned());
                Some((key, self.value(v)?))
            })
            .collect();
        out.sort_by_key(|(k, _)| k.span().start);
        out
    }

    /// The elements of an array (of tables); bad elements are left out.
    fn items<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Vec<T> {
        let span = value.span();
        let DeValue::Array(array) = value.into_inner() else {
            self.errors.push(ReadError {
                span,
                message: "expected an array of tables (`[[rules]]`)".to_owned(),
                syntax: false,
            });
            return Vec::new();
        };
        array.into_iter().filter_map(|v| self.value(v)).collect()
    }

    fn unknown(&mut self, key: &Key<'_>, name: &str, expected: &[&str]) {
        let expected = expected
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        self.errors.push(ReadError {
            span: key.span(),
            message: format!("unknown field `{name}`, expected one of {expected}"),
            syntax: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_error_is_reported() {
        let text = "[product]\nid = \"x\"\nname = \"n\"\ndocument = \"d\"\n\n[[rules]]\nid = \"A\"\nport = \"1\"\n\n[[rules]]\nid = \"B\"\nproto = \"tcpp\"\n";
        let (file, errors) = read_product(text);
        assert!(file.header.is_some());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].message.contains("unknown field `port`"),
            "{errors:?}"
        );
        assert_eq!(&text[errors[0].span.clone()], "port");
        assert!(errors[1].message.contains("tcpp"), "{errors:?}");
    }

    #[test]
    fn unknown_top_level_and_missing_header() {
        let (_, errors) = read_product("[rule]\nid = 1\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("unknown field `rule`"))
        );
        assert!(errors.iter().any(|e| e.message.contains("[product]")));
    }

    #[test]
    fn site_sections() {
        let text = "products = [\"rhv\"]\nmode = \"audit\"\n[roles]\n\"rhv.manager\" = [\"198.18.1.10\"]\n[params]\n\"p\" = \"900-902\"\n[datapath]\nbroadcast = \"judge\"\n[audit]\nrate = 5\n";
        let (site, errors) = read_site(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(site.products.len(), 1);
        assert_eq!(site.mode, Some(ModeSpec::Audit));
        assert_eq!(site.roles[0].0.get_ref(), "rhv.manager");
        assert_eq!(site.params[0].1.get_ref(), "900-902");
        assert_eq!(site.datapath.broadcast, Some(BroadcastSpec::Judge));
        assert_eq!(site.audit.rate.map(Spanned::into_inner), Some(5));
    }

    #[test]
    fn syntax_errors_are_collected() {
        let (_, errors) = read_site("products = [\"rhv\"\nmode = = \"x\"\n");
        assert!(!errors.is_empty());
    }

    #[test]
    fn audit_sinks_and_a_wrong_one_located() {
        let (site, errors) = read_site("[audit]\nsink = \"both\"\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(site.audit.sink, Some(SinkSpec::Both));
        let mut base = read_site("[audit]\nsink = \"journal\"\n").0;
        base.merge(read_site("[audit]\nrate = 1\n").0);
        assert_eq!(
            base.audit.sink,
            Some(SinkSpec::Journal),
            "kept by a later file"
        );
        base.merge(read_site("[audit]\nsink = \"file\"\n").0);
        assert_eq!(
            base.audit.sink,
            Some(SinkSpec::File),
            "a later file overrides"
        );
        let text = "[audit]\nsink = \"syslog\"\n";
        let (_, errors) = read_site(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("syslog"), "{errors:?}");
        assert!(
            text[errors[0].span.clone()].contains("syslog"),
            "{errors:?}"
        );
    }
}

//! Loading: site file + essentials + listed products -> validated [`Policy`].
//!
//! Every check reports into one [`Sink`] and goes on, so a single run lists every mistake of
//! every file, each at its `FILE:LINE:COL`. Only when nothing is wrong is the `Policy` built;
//! the doubtful-but-valid findings (any sources, unused roles, shadowed rules, documented
//! contradictions switched on) become `Policy::warnings`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use toml::Spanned;

use super::{
    AuditSettings, DatapathSettings, HostSettings, Match, Mode, Origin, Policy, Proto, Role, Rule,
    diag::{Diagnostic, Diagnostics, Loc, Severity, SourceFile},
    files::{
        self, AuditSection, BroadcastSpec, DatapathSection, FeatureDecl, ModeSpec, ParamDecl,
        PassDrop, ProductFile, ProtoSpec, RoleDecl, RuleDecl, SiteFile, Str,
    },
    ports::{self, ParamLookup},
};

/// The product every site gets, whatever it lists: PMTU, neighbour discovery, DHCP client.
const ESSENTIALS: &str = "essentials";
/// Built-in source role: every address.
const ANY: &str = "any";
/// Built-in destination role: every managed host.
const HOST: &str = "host";
/// Rules whose direction the product files document as doubtful (see the comments at them in
/// rhv.toml): enabling them is allowed, but should be a conscious choice.
const DOUBTFUL_RULES: &[&str] = &["RHV-H3", "RHV-H4"];
/// Features named after a documented contradiction they work around (`ovn-sb-6442-compat`,
/// `veeam-19000-reverse`): they open ports the documents disagree about.
const DOUBTFUL_FEATURE_WORDS: &[&str] = &["compat", "reverse"];

const DEFAULT_AUDIT_RATE: u32 = 100;
const DEFAULT_AUDIT_BURST: u32 = 200;
const DEFAULT_AUDIT_MAX_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_AUDIT_KEEP: u32 = 5;
/// Linux interface names are at most `IFNAMSIZ - 1` bytes.
const MAX_IFNAME: usize = 15;

/// Reads and validates a site file and the product files it lists (from `policies_dir`,
/// `<id>.toml`, plus `essentials.toml`), resolving roles, features and parameters.
///
/// On failure the [`Diagnostics`] hold every error found (and the warnings found on the way),
/// sorted by file (site first, then products in load order) and position.
pub fn load(site: &Path, policies_dir: &Path) -> Result<Policy, Diagnostics> {
    let mut sink = Sink::default();
    let Some(site_src) = read_source(&mut sink, site, &Loc::start_of(site)) else {
        return Err(sink.finish());
    };
    let site_file = parse_site(&mut sink, &site_src);
    let products = load_products(&mut sink, &site_src, &site_file, policies_dir);
    let catalog = Catalog::build(&mut sink, &products);
    let (features, feature_locs) = features_in_force(&mut sink, &catalog, &site_src, &site_file);
    let params = params_in_force(&mut sink, &catalog, &site_src, &site_file);
    let cx = RuleCx {
        catalog: &catalog,
        params: &params,
        features: &features,
    };
    let rules = build_rules(&mut sink, &cx, &products);
    let site_roles = site_roles(&mut sink, &catalog, &site_src, &site_file);
    let host = host_settings(&mut sink, &catalog, &site_src, &site_file);
    let failsafe_ssh = failsafe(&mut sink, &site_src, &site_file);
    let audit = audit_settings(&mut sink, &site_src, &site_file.audit);
    if sink.has_errors() {
        return Err(sink.finish());
    }
    let mut policy = Policy {
        site_file: site.to_owned(),
        mode: mode(site_file.mode),
        products: products.iter().map(|p| p.id.clone()).collect(),
        features,
        roles: catalog.policy_roles(&site_roles),
        aliases: catalog.aliases(),
        rules,
        failsafe_ssh,
        host,
        datapath: datapath_settings(&site_file.datapath),
        audit,
        warnings: Vec::new(),
    };
    unused_roles(&mut sink, &policy.rules, &site_roles);
    shadowed_rules(&mut sink, &policy.rules);
    doubtful(&mut sink, &policy, &catalog, &feature_locs);
    policy.warnings = sink.finish().0;
    Ok(policy)
}

// ---------------------------------------------------------------------------------------------
// Collecting diagnostics

/// Where diagnostics accumulate while loading.
#[derive(Default)]
struct Sink {
    /// Files in the order they were read: diagnostics are sorted by it.
    files: Vec<PathBuf>,
    diags: Vec<Diagnostic>,
}

impl Sink {
    fn error(&mut self, at: &Loc, message: impl Into<String>) {
        self.diags.push(at.diag(Severity::Error, message.into()));
    }

    fn warn(&mut self, at: &Loc, message: impl Into<String>) {
        self.diags.push(at.diag(Severity::Warning, message.into()));
    }

    fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors toml and serde found while reading `src`.
    fn read_errors(&mut self, src: &SourceFile, errors: Vec<files::ReadError>) {
        for e in errors {
            self.error(&src.loc(&e.span), e.message);
        }
    }

    fn finish(mut self) -> Diagnostics {
        let files = self.files;
        let rank = |file: &Path| files.iter().position(|f| f == file).unwrap_or(usize::MAX);
        self.diags.sort_by_key(|d| (rank(&d.file), d.line, d.col));
        Diagnostics(self.diags)
    }
}

/// Reads a file; an unreadable file is an error at `at` (the line that names it).
fn read_source(sink: &mut Sink, path: &Path, at: &Loc) -> Option<SourceFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            sink.files.push(path.to_owned());
            Some(SourceFile::new(path, text))
        }
        Err(e) => {
            sink.error(at, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

fn parse_site(sink: &mut Sink, src: &SourceFile) -> SiteFile {
    let (site, errors) = files::read_site(&src.text);
    sink.read_errors(src, errors);
    site
}

/// ` (did you mean `x`?)` when a candidate is a small typo away from `name`, else nothing.
fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let limit = 2.max(name.chars().count() / 5);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map_or_else(String::new, |(_, c)| format!(" (did you mean `{c}`?)"))
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Product files

/// One product file, read.
struct Product {
    id: String,
    src: SourceFile,
    file: ProductFile,
}

/// Essentials, then every product the site lists, in site order.
fn load_products(
    sink: &mut Sink,
    site_src: &SourceFile,
    site: &SiteFile,
    dir: &Path,
) -> Vec<Product> {
    let mut out = Vec::new();
    let site_start = Loc::start_of(&site_src.path);
    let essentials = dir.join(format!("{ESSENTIALS}.toml"));
    if essentials.is_file() {
        out.extend(load_product(sink, ESSENTIALS, &essentials, &site_start));
    } else {
        let msg = format!(
            "{} not found: essentials always applies (path MTU discovery, IPv6 neighbour discovery)",
            essentials.display()
        );
        sink.error(&site_start, msg);
    }
    let mut listed: HashMap<&str, Loc> = HashMap::new();
    for name in &site.products {
        let at = site_src.loc(&name.span());
        let id = name.get_ref().as_str();
        if let Some(msg) = product_listing_problem(id, listed.get(id), dir) {
            sink.error(&at, msg);
        } else if id == ESSENTIALS {
            sink.warn(
                &at,
                "`essentials` always applies: listing it changes nothing",
            );
        } else {
            out.extend(load_product(sink, id, &dir.join(format!("{id}.toml")), &at));
        }
        listed.entry(id).or_insert(at);
    }
    out
}

/// Why a `products` entry cannot be loaded: listed twice, not a plain name, no such file.
fn product_listing_problem(id: &str, first: Option<&Loc>, dir: &Path) -> Option<String> {
    if let Some(first) = first {
        return Some(format!("product `{id}` is listed twice (first at {first})"));
    }
    let plain = !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Some(format!(
            "`{id}` is not a product id (a file stem in {})",
            dir.display()
        ));
    }
    if dir.join(format!("{id}.toml")).is_file() {
        return None;
    }
    let known = known_products(dir);
    let hint = did_you_mean(id, known.iter().map(String::as_str));
    Some(format!(
        "unknown product `{id}`: there is no {id}.toml in {}{hint} (available: {})",
        dir.display(),
        known.join(", ")
    ))
}

/// Product ids available in the policies directory, for "unknown product" messages.
fn known_products(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let stem = path.file_stem()?.to_str()?;
            (path.extension()? == "toml" && stem != ESSENTIALS).then(|| stem.to_owned())
        })
        .collect();
    ids.sort();
    ids
}

/// Reads one product file and checks that its `[product] id` is its file stem.
fn load_product(sink: &mut Sink, id: &str, path: &Path, at: &Loc) -> Option<Product> {
    let src = read_source(sink, path, at)?;
    let (file, errors) = files::read_product(&src.text);
    sink.read_errors(&src, errors);
    if let Some(header) = &file.header {
        let written = header.get_ref().id.get_ref();
        if written != id {
            let msg = format!(
                "product id `{written}` differs from the file name: it must be `{id}` (sites list products by file name)"
            );
            sink.error(&src.loc(&header.get_ref().id.span()), msg);
        }
    }
    Some(Product {
        id: id.to_owned(),
        src,
        file,
    })
}

// ---------------------------------------------------------------------------------------------
// Declarations of all loaded products: roles, features, params

/// A role as declared (first declaration; later ones must agree).
struct RoleEntry {
    alias_of: Option<String>,
    managed: bool,
    description: String,
    /// The role's key.
    loc: Loc,
    /// The `alias_of` value, when there is one.
    alias_loc: Option<Loc>,
}

struct FeatureEntry {
    default: bool,
    description: String,
    loc: Loc,
}

struct ParamEntry {
    default: String,
    loc: Loc,
}

/// What a role name stands for.
enum Resolved<'a> {
    /// `any` or `host`.
    Builtin(&'static str),
    /// A declared role, by canonical id (aliases followed).
    Role(&'a str),
    Unknown,
}

/// Every role, feature and parameter the loaded products declare.
#[derive(Default)]
struct Catalog {
    roles: BTreeMap<String, RoleEntry>,
    features: BTreeMap<String, FeatureEntry>,
    params: BTreeMap<String, ParamEntry>,
}

impl Catalog {
    fn build(sink: &mut Sink, products: &[Product]) -> Self {
        let mut catalog = Self::default();
        for p in products {
            for (name, decl) in &p.file.roles {
                catalog.add_role(sink, &p.src, name, decl.get_ref());
            }
            for (name, decl) in &p.file.features {
                catalog.add_feature(sink, &p.src, name, decl.get_ref());
            }
            for (name, decl) in &p.file.params {
                catalog.add_param(sink, &p.src, name, decl.get_ref());
            }
        }
        catalog.check_aliases(sink);
        catalog
    }

    /// Records a role; a name declared by several files must be declared the same way.
    fn add_role(&mut self, sink: &mut Sink, src: &SourceFile, name: &Str, decl: &RoleDecl) {
        let id = name.get_ref();
        let loc = src.loc(&name.span());
        if id == ANY || (id == HOST && decl.alias_of.is_some()) {
            sink.error(
                &loc,
                format!(
                    "`{id}` is a built-in role: it cannot be declared as an alias or redefined"
                ),
            );
            return;
        }
        let entry = RoleEntry {
            alias_of: decl.alias_of.as_ref().map(|a| a.get_ref().clone()),
            managed: decl.managed,
            description: decl.description.clone(),
            loc,
            alias_loc: decl.alias_of.as_ref().map(|a| src.loc(&a.span())),
        };
        match self.roles.get(id) {
            None => {
                self.roles.insert(id.clone(), entry);
            }
            Some(first) => {
                if let Some((at, msg)) = role_conflict(id, first, &entry) {
                    sink.error(at, msg);
                }
            }
        }
    }

    /// A feature may be declared by several files, with the same default.
    fn add_feature(&mut self, sink: &mut Sink, src: &SourceFile, name: &Str, decl: &FeatureDecl) {
        let loc = src.loc(&name.span());
        if let Some(first) = self.features.get(name.get_ref()) {
            if first.default != decl.default {
                let msg = format!(
                    "feature `{name}` is declared again with default = {}, but {} declares default = {}",
                    decl.default, first.loc, first.default
                );
                sink.error(&loc, msg);
            }
            return;
        }
        if name.get_ref().starts_with('!') || name.get_ref().is_empty() {
            sink.error(
                &loc,
                format!("`{name}` is not a feature name (`!` negates a feature in `when`)"),
            );
        }
        let entry = FeatureEntry {
            default: decl.default,
            description: decl.description.clone(),
            loc,
        };
        self.features.insert(name.get_ref().clone(), entry);
    }

    /// A parameter's default must be a valid port spec; several files must agree on it.
    fn add_param(&mut self, sink: &mut Sink, src: &SourceFile, name: &Str, decl: &ParamDecl) {
        let loc = src.loc(&name.span());
        let default = decl.default.get_ref();
        if let Err(e) = ports::parse_param_value(default) {
            sink.error(
                &src.loc(&decl.default.span()),
                format!("bad default \"{default}\" for param `{name}`: {e}"),
            );
        }
        if let Some(first) = self.params.get(name.get_ref()) {
            if first.default != *default {
                let msg = format!(
                    "param `{name}` is declared again with default \"{default}\", but {} says \"{}\"",
                    first.loc, first.default
                );
                sink.error(&loc, msg);
            }
            return;
        }
        self.params.insert(
            name.get_ref().clone(),
            ParamEntry {
                default: default.clone(),
                loc,
            },
        );
    }

    /// `alias_of` must name a declared, canonical role.
    fn check_aliases(&self, sink: &mut Sink) {
        for (id, entry) in &self.roles {
            let (Some(target), Some(at)) = (&entry.alias_of, &entry.alias_loc) else {
                continue;
            };
            let problem = match self.roles.get(target) {
                _ if target == id => Some(format!("role `{id}` is declared as an alias of itself")),
                _ if target == ANY || target == HOST => {
                    Some(format!("alias_of `{target}`: built-in roles cannot be aliased"))
                }
                None => Some(format!(
                    "alias_of `{target}`: no loaded product declares role `{target}`{}",
                    did_you_mean(target, self.roles.keys().map(String::as_str))
                )),
                Some(t) => t.alias_of.as_ref().map(|next| {
                    format!("alias_of `{target}`: `{target}` is itself an alias (of `{next}`); point at `{next}`")
                }),
            };
            if let Some(msg) = problem {
                sink.error(at, msg);
            }
        }
    }

    fn resolve<'a>(&'a self, name: &'a str) -> Resolved<'a> {
        match name {
            ANY => Resolved::Builtin(ANY),
            HOST => Resolved::Builtin(HOST),
            _ => self.roles.get(name).map_or(Resolved::Unknown, |e| {
                Resolved::Role(e.alias_of.as_deref().unwrap_or(name))
            }),
        }
    }

    fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// The canonical roles, with the site's addresses.
    fn policy_roles(&self, site: &BTreeMap<String, SiteRole>) -> BTreeMap<String, Role> {
        self.roles
            .iter()
            .filter(|(_, e)| e.alias_of.is_none())
            .map(|(id, e)| {
                let mapped = site.get(id);
                let role = Role {
                    id: id.clone(),
                    description: e.description.clone(),
                    managed: e.managed,
                    sources: mapped.map(|m| m.sources.clone()).unwrap_or_default(),
                    any: mapped.is_some_and(|m| m.any),
                };
                (id.clone(), role)
            })
            .collect()
    }

    fn aliases(&self) -> BTreeMap<String, String> {
        self.roles
            .iter()
            .filter_map(|(id, e)| Some((id.clone(), e.alias_of.clone()?)))
            .collect()
    }
}

/// Whether a later declaration of a role disagrees with the first one; where and why.
fn role_conflict<'a>(
    id: &str,
    first: &RoleEntry,
    later: &'a RoleEntry,
) -> Option<(&'a Loc, String)> {
    let show = |alias: &Option<String>| {
        alias.as_ref().map_or_else(
            || "none (a role of its own)".to_owned(),
            |a| format!("`{a}`"),
        )
    };
    if first.alias_of != later.alias_of {
        let msg = format!(
            "conflicting declarations of role `{id}`: alias_of {} here, but {} at {} (overlapping-but-conflicting definitions)",
            show(&later.alias_of),
            show(&first.alias_of),
            first.loc
        );
        return Some((later.alias_loc.as_ref().unwrap_or(&later.loc), msg));
    }
    (first.managed != later.managed).then(|| {
        let msg = format!(
            "conflicting declarations of role `{id}`: managed = {} here, but {} at {} (overlapping-but-conflicting definitions)",
            later.managed, first.managed, first.loc
        );
        (&later.loc, msg)
    })
}

// ---------------------------------------------------------------------------------------------
// Site choices: features, params

/// Features in force (declared defaults + site features - disabled features), and where the
/// site switched each one on (for warnings).
fn features_in_force(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> (BTreeSet<String>, BTreeMap<String, Loc>) {
    let mut on: BTreeSet<String> = catalog
        .features
        .iter()
        .filter(|(_, f)| f.default)
        .map(|(n, _)| n.clone())
        .collect();
    let mut switched_on = BTreeMap::new();
    for name in &site.features {
        let at = src.loc(&name.span());
        if check_feature(sink, catalog, &at, name.get_ref()) {
            on.insert(name.get_ref().clone());
            switched_on.insert(name.get_ref().clone(), at);
        }
    }
    for name in &site.disabled_features {
        let at = src.loc(&name.span());
        if !check_feature(sink, catalog, &at, name.get_ref()) {
            continue;
        }
        if switched_on.contains_key(name.get_ref()) {
            sink.error(
                &at,
                format!("feature `{name}` is both in `features` and in `disabled_features`"),
            );
        }
        on.remove(name.get_ref());
    }
    (on, switched_on)
}

/// Reports a feature name no loaded product declares; true when it is declared.
fn check_feature(sink: &mut Sink, catalog: &Catalog, at: &Loc, name: &str) -> bool {
    if catalog.features.contains_key(name) {
        return true;
    }
    let hint = did_you_mean(name, catalog.features.keys().map(String::as_str));
    sink.error(
        at,
        format!("unknown feature `{name}`: no loaded product declares it{hint}"),
    );
    false
}

/// Parameter values: the site's where given, else the declared defaults.
fn params_in_force(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = catalog
        .params
        .iter()
        .map(|(name, p)| (name.clone(), p.default.clone()))
        .collect();
    for (name, value) in &site.params {
        if !catalog.params.contains_key(name.get_ref()) {
            let hint = did_you_mean(name.get_ref(), catalog.params.keys().map(String::as_str));
            sink.error(
                &src.loc(&name.span()),
                format!("unknown param `{name}`: no loaded product declares it{hint}"),
            );
            continue;
        }
        match ports::parse_param_value(value.get_ref()) {
            Ok(_) => {
                values.insert(name.get_ref().clone(), value.get_ref().clone());
            }
            Err(e) => sink.error(
                &src.loc(&value.span()),
                format!("bad value \"{value}\" for param `{name}`: {e}"),
            ),
        }
    }
    values
}

// ---------------------------------------------------------------------------------------------
// Rules

/// What rule validation needs from the rest of the load.
struct RuleCx<'a> {
    catalog: &'a Catalog,
    params: &'a BTreeMap<String, String>,
    features: &'a BTreeSet<String>,
}

/// Which end of a rule a role list is.
#[derive(Clone, Copy)]
enum Side {
    From,
    To,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::From => "from",
            Self::To => "to",
        })
    }
}

/// Every rule of every product, in evaluation order; ids must be unique across all of them.
fn build_rules(sink: &mut Sink, cx: &RuleCx<'_>, products: &[Product]) -> Vec<Rule> {
    let mut first_seen: HashMap<&str, Loc> = HashMap::new();
    let mut rules = Vec::new();
    for product in products {
        for decl in &product.file.rules {
            let id = decl.get_ref().id.get_ref();
            let at = product.src.loc(&decl.get_ref().id.span());
            if let Some(first) = first_seen.get(id.as_str()) {
                let msg = format!(
                    "duplicate rule id `{id}` (first at {first}): counters and audit records are keyed by rule id"
                );
                sink.error(&at, msg);
            } else {
                first_seen.insert(id, at);
            }
            rules.extend(build_rule(sink, cx, product, decl));
        }
    }
    rules
}

/// One rule; `None` when any part of it is wrong (every part is still checked).
fn build_rule(
    sink: &mut Sink,
    cx: &RuleCx<'_>,
    product: &Product,
    decl: &Spanned<RuleDecl>,
) -> Option<Rule> {
    let src = &product.src;
    let rule = decl.get_ref();
    let from = rule_roles(sink, cx.catalog, src, &rule.from, Side::From);
    let to = rule_roles(sink, cx.catalog, src, &rule.to, Side::To);
    let proto_match = rule_match(sink, cx, src, decl);
    let enabled = rule_enabled(sink, cx, src, &rule.when);
    let ((protos, matches), from, to, enabled) = (proto_match?, from?, to?, enabled?);
    Some(Rule {
        id: rule.id.get_ref().clone(),
        product: product.id.clone(),
        from,
        to,
        protos,
        matches,
        purpose: rule.purpose.clone(),
        doc: rule.doc.clone(),
        when: rule.when.iter().map(|w| w.get_ref().clone()).collect(),
        note: rule.note.clone(),
        enabled,
        origin: Origin {
            file: src.path.clone(),
            line: src.loc(&decl.span()).line,
        },
    })
}

/// The roles of `from` or `to`, canonical, without duplicates.
fn rule_roles(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    list: &Spanned<Vec<Str>>,
    side: Side,
) -> Option<Vec<String>> {
    if list.get_ref().is_empty() {
        sink.error(
            &src.loc(&list.span()),
            format!("`{side}` is empty: a rule needs at least one role"),
        );
        return None;
    }
    let mut roles: Vec<String> = Vec::new();
    let mut ok = true;
    for name in list.get_ref() {
        match rule_role(catalog, name.get_ref(), side) {
            Ok(id) if roles.contains(&id) => {}
            Ok(id) => roles.push(id),
            Err(msg) => {
                sink.error(&src.loc(&name.span()), msg);
                ok = false;
            }
        }
    }
    ok.then_some(roles)
}

fn rule_role(catalog: &Catalog, name: &str, side: Side) -> Result<String, String> {
    match (catalog.resolve(name), side) {
        (Resolved::Builtin(ANY), Side::To) => Err(
            "`any` cannot be a destination: rules are enforced on managed hosts (`host` = every managed host)".to_owned(),
        ),
        (Resolved::Builtin(HOST), Side::From) => {
            Err("`host` cannot be a source: it has no addresses; name the roles that connect (or `any`)".to_owned())
        }
        (Resolved::Builtin(id) | Resolved::Role(id), _) => Ok(id.to_owned()),
        (Resolved::Unknown, _) => Err(format!(
            "unknown role `{name}` in `{side}`: no loaded product declares it{}",
            did_you_mean(name, catalog.role_names())
        )),
    }
}

/// Protocols and what they match: ports for tcp/udp/sctp, types (and a code) for ICMP.
fn rule_match(
    sink: &mut Sink,
    cx: &RuleCx<'_>,
    src: &SourceFile,
    decl: &Spanned<RuleDecl>,
) -> Option<(Vec<Proto>, Match)> {
    let lookup = |name: &str| cx.params.get(name).map(String::as_str);
    let proto = *decl.get_ref().proto.get_ref();
    let matches = match proto {
        ProtoSpec::Icmp | ProtoSpec::Icmpv6 => icmp_match(sink, src, decl.get_ref(), &lookup),
        ProtoSpec::Tcp | ProtoSpec::Udp | ProtoSpec::Sctp | ProtoSpec::TcpUdp => {
            port_match(sink, src, decl, &lookup)
        }
    }?;
    let protos = match proto {
        ProtoSpec::Tcp => vec![Proto::Tcp],
        ProtoSpec::Udp => vec![Proto::Udp],
        ProtoSpec::Sctp => vec![Proto::Sctp],
        ProtoSpec::TcpUdp => vec![Proto::Tcp, Proto::Udp],
        ProtoSpec::Icmp => vec![Proto::Icmp],
        ProtoSpec::Icmpv6 => vec![Proto::Icmpv6],
    };
    Some((protos, matches))
}

fn port_match(
    sink: &mut Sink,
    src: &SourceFile,
    decl: &Spanned<RuleDecl>,
    params: ParamLookup<'_>,
) -> Option<Match> {
    let rule = decl.get_ref();
    let proto = proto_name(*rule.proto.get_ref());
    let mut ok = true;
    let icmp_fields = [
        ("icmp_type", rule.icmp_type.as_ref().map(Spanned::span)),
        ("icmp_code", rule.icmp_code.as_ref().map(Spanned::span)),
    ];
    for (field, span) in icmp_fields {
        if let Some(span) = span {
            sink.error(
                &src.loc(&span),
                format!("`{field}` on a {proto} rule: only icmp and icmpv6 rules have ICMP types"),
            );
            ok = false;
        }
    }
    let Some(spec) = &rule.ports else {
        sink.error(
            &src.loc(&decl.span()),
            format!("missing `ports` on a {proto} rule (e.g. ports = \"443\")"),
        );
        return None;
    };
    let ports = ports::parse_ports(spec.get_ref(), params)
        .map_err(|e| {
            sink.error(
                &src.loc(&spec.span()),
                format!("bad port spec \"{spec}\": {e}"),
            );
        })
        .ok()?;
    ok.then_some(Match::Ports(ports))
}

fn icmp_match(
    sink: &mut Sink,
    src: &SourceFile,
    rule: &RuleDecl,
    params: ParamLookup<'_>,
) -> Option<Match> {
    let mut ok = true;
    if let Some(spec) = &rule.ports {
        let msg = format!(
            "`ports` on a {} rule: ICMP has no ports (use icmp_type)",
            proto_name(*rule.proto.get_ref())
        );
        sink.error(&src.loc(&spec.span()), msg);
        ok = false;
    }
    let types = match &rule.icmp_type {
        None => Some(vec![0..=u8::MAX]),
        Some(spec) => ports::parse_icmp_types(spec.get_ref(), params)
            .map_err(|e| {
                sink.error(
                    &src.loc(&spec.span()),
                    format!("bad icmp_type spec \"{spec}\": {e}"),
                );
            })
            .ok(),
    };
    let code = rule.icmp_code.as_ref().map(|c| *c.get_ref());
    if let (Some(written), Some(types)) = (&rule.icmp_code, &types) {
        let single =
            rule.icmp_type.is_some() && matches!(types.as_slice(), [t] if t.start() == t.end());
        if !single {
            sink.error(&src.loc(&written.span()), "`icmp_code` needs exactly one `icmp_type` (a code only means something for one type)");
            ok = false;
        }
    }
    let types = types?;
    ok.then_some(Match::Icmp { types, code })
}

fn proto_name(proto: ProtoSpec) -> &'static str {
    match proto {
        ProtoSpec::Tcp => "tcp",
        ProtoSpec::Udp => "udp",
        ProtoSpec::Sctp => "sctp",
        ProtoSpec::TcpUdp => "tcp+udp",
        ProtoSpec::Icmp => "icmp",
        ProtoSpec::Icmpv6 => "icmpv6",
    }
}

/// Whether the features in force switch the rule on: every `when` entry holds (`!x` = x off).
fn rule_enabled(sink: &mut Sink, cx: &RuleCx<'_>, src: &SourceFile, when: &[Str]) -> Option<bool> {
    let mut ok = true;
    let mut enabled = true;
    for cond in when {
        let (negated, name) = cond
            .get_ref()
            .strip_prefix('!')
            .map_or((false, cond.get_ref().as_str()), |n| (true, n));
        if cx.catalog.features.contains_key(name) {
            enabled &= cx.features.contains(name) != negated;
        } else {
            let hint = did_you_mean(name, cx.catalog.features.keys().map(String::as_str));
            sink.error(
                &src.loc(&cond.span()),
                format!(
                    "`when` names unknown feature `{name}`: no loaded product declares it{hint}"
                ),
            );
            ok = false;
        }
    }
    ok.then_some(enabled)
}

// ---------------------------------------------------------------------------------------------
// Site roles and addresses

/// A role as the site maps it.
struct SiteRole {
    /// The name the site wrote (the canonical id or an alias).
    written: String,
    sources: Vec<IpNet>,
    any: bool,
    loc: Loc,
}

/// `[roles]`, by canonical id. A role may be mapped under its id or an alias, but only once.
fn site_roles(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> BTreeMap<String, SiteRole> {
    let mut out: BTreeMap<String, SiteRole> = BTreeMap::new();
    // Every mapping, even those with bad addresses, so that a second mapping is still caught.
    let mut first_mapping: BTreeMap<String, (&str, Loc)> = BTreeMap::new();
    for (name, list) in &site.roles {
        let at = src.loc(&name.span());
        let Some(id) = site_role_id(sink, catalog, &at, name.get_ref()) else {
            continue;
        };
        if let Some((written, first)) = first_mapping.get(&id) {
            let msg = format!(
                "role `{id}` is mapped twice: as `{written}` at {first} and as `{name}` here (an alias and its target are the same role); map it once"
            );
            sink.error(&at, msg);
            continue;
        }
        first_mapping.insert(id.clone(), (name.get_ref(), at.clone()));
        if list.get_ref().is_empty() {
            let msg = format!(
                "role `{name}` is mapped to an empty list: list its addresses, or remove the line to leave it unmapped"
            );
            sink.error(&at, msg);
            continue;
        }
        let Some((sources, any)) = parse_sources(sink, src, list.get_ref()) else {
            continue;
        };
        if any {
            sink.warn(
                &at,
                format!("role `{name}` is mapped to any: every address counts as `{name}`"),
            );
        }
        out.insert(
            id,
            SiteRole {
                written: name.get_ref().clone(),
                sources,
                any,
                loc: at,
            },
        );
    }
    out
}

/// The canonical id of a role the site names (in `[roles]` or `[host] roles`).
fn site_role_id(sink: &mut Sink, catalog: &Catalog, at: &Loc, name: &str) -> Option<String> {
    match catalog.resolve(name) {
        Resolved::Role(id) => Some(id.to_owned()),
        Resolved::Builtin(id) => {
            sink.error(at, format!("`{id}` is a built-in role (any = every address, host = every managed host): a site does not map it"));
            None
        }
        Resolved::Unknown => {
            let hint = did_you_mean(name, catalog.role_names());
            sink.error(
                at,
                format!("unknown role `{name}`: no loaded product declares it{hint}"),
            );
            None
        }
    }
}

/// A list of CIDRs / addresses, or `["any"]` (`0.0.0.0/0` and `::/0`); the flag says it was `any`.
fn parse_sources(sink: &mut Sink, src: &SourceFile, list: &[Str]) -> Option<(Vec<IpNet>, bool)> {
    if let Some(any) = list.iter().find(|s| s.get_ref() == ANY) {
        if list.len() > 1 {
            sink.error(
                &src.loc(&any.span()),
                "\"any\" must be the only entry (it already covers every address)",
            );
            return None;
        }
        let every = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        let every = every
            .into_iter()
            .filter_map(|a| IpNet::new(a, 0).ok())
            .collect();
        return Some((every, true));
    }
    let mut nets: Vec<IpNet> = Vec::new();
    // A set beside the list: a role may list hundreds of thousands of prefixes.
    let mut seen = std::collections::HashSet::new();
    let mut ok = true;
    for text in list {
        match parse_net(text.get_ref()) {
            Ok(net) if !seen.insert(net) => {}
            Ok(net) => nets.push(net),
            Err(msg) => {
                sink.error(&src.loc(&text.span()), msg);
                ok = false;
            }
        }
    }
    ok.then_some((nets, false))
}

/// `198.18.1.10`, `198.18.1.0/24`, `2001:db8::/64`: bare addresses are /32 or /128; a prefix
/// with host bits set is refused (it is usually a typo for the network or the address).
fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let Ok(net) = text.parse::<IpNet>() else {
        return Err(bad_net(text));
    };
    if net.addr() != net.network() {
        return Err(format!(
            "`{text}` has host bits set: did you mean the network {} (or the single address {}/{})?",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}

/// Why `text` is not an address or CIDR, as precisely as cheaply possible.
fn bad_net(text: &str) -> String {
    let example = "e.g. 198.18.1.10, 198.18.2.0/24, 2001:db8::/64, or \"any\"";
    match text.split_once('/') {
        Some((addr, len)) => match (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            (Err(_), _) => format!("`{text}`: `{addr}` is not an IPv4 or IPv6 address ({example})"),
            (Ok(a), Ok(n)) => {
                let max = if a.is_ipv4() { 32 } else { 128 };
                format!("`{text}`: prefix length /{n} is longer than {max} bits")
            }
            (Ok(_), Err(_)) => format!("`{text}`: `{len}` is not a prefix length"),
        },
        None => format!("`{text}` is not an IPv4/IPv6 address or CIDR ({example})"),
    }
}

/// `[failsafe] ssh_from`.
fn failsafe(sink: &mut Sink, src: &SourceFile, site: &SiteFile) -> Vec<IpNet> {
    let list = &site.failsafe.ssh_from;
    let Some(first) = list.first() else {
        let msg = "no [failsafe] ssh_from: a policy mistake can lock administrators out of SSH";
        sink.warn(&Loc::start_of(&src.path), msg);
        return Vec::new();
    };
    let Some((nets, any)) = parse_sources(sink, src, list) else {
        return Vec::new();
    };
    if any {
        sink.warn(
            &src.loc(&first.span()),
            "failsafe ssh_from is any: tcp/22 is open to every address on every host",
        );
    }
    nets
}

/// `[host]`: roles (canonical) and interface names.
fn host_settings(
    sink: &mut Sink,
    catalog: &Catalog,
    src: &SourceFile,
    site: &SiteFile,
) -> HostSettings {
    let roles = site.host.roles.as_ref().map(|list| {
        let mut ids: Vec<String> = Vec::new();
        for name in list {
            let at = src.loc(&name.span());
            let Some(id) = site_role_id(sink, catalog, &at, name.get_ref()) else {
                continue;
            };
            if catalog.roles.get(&id).is_some_and(|r| !r.managed) {
                sink.warn(&at, format!("role `{name}` is not a managed role: portguard is not expected to run on it"));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    });
    let interfaces = site.host.interfaces.as_ref().map(|list| {
        list.iter()
            .filter(|name| check_interface(sink, src, name))
            .map(|name| name.get_ref().clone())
            .collect()
    });
    HostSettings { roles, interfaces }
}

fn check_interface(sink: &mut Sink, src: &SourceFile, name: &Str) -> bool {
    let text = name.get_ref();
    let valid = !text.is_empty()
        && text.len() <= MAX_IFNAME
        && text != "."
        && text != ".."
        && !text
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if !valid {
        sink.error(
            &src.loc(&name.span()),
            format!(
                "`{text}` is not an interface name (1-{MAX_IFNAME} bytes, no '/', ':' or spaces)"
            ),
        );
    }
    valid
}

fn mode(written: Option<ModeSpec>) -> Mode {
    match written {
        Some(ModeSpec::Audit) => Mode::Audit,
        Some(ModeSpec::Enforce) | None => Mode::Enforce,
    }
}

fn datapath_settings(d: &DatapathSection) -> DatapathSettings {
    DatapathSettings {
        judge_broadcast: d.broadcast == Some(BroadcastSpec::Judge),
        drop_non_ip: d.non_ip == Some(PassDrop::Drop),
        drop_not_for_host: d.not_for_host == Some(PassDrop::Drop),
    }
}

fn audit_settings(sink: &mut Sink, src: &SourceFile, a: &AuditSection) -> AuditSettings {
    let value = |v: Option<&Spanned<u32>>, default| v.map_or(default, |v| *v.get_ref());
    let settings = AuditSettings {
        path: a.path.as_ref().map_or_else(
            || PathBuf::from(crate::paths::AUDIT_LOG),
            |p| p.get_ref().clone(),
        ),
        rate: value(a.rate.as_ref(), DEFAULT_AUDIT_RATE),
        burst: value(a.burst.as_ref(), DEFAULT_AUDIT_BURST),
        max_bytes: a
            .max_bytes
            .as_ref()
            .map_or(DEFAULT_AUDIT_MAX_BYTES, |v| *v.get_ref()),
        keep: value(a.keep.as_ref(), DEFAULT_AUDIT_KEEP),
    };
    if let Some(path) = a.path.as_ref().filter(|p| !p.get_ref().is_absolute()) {
        sink.error(
            &src.loc(&path.span()),
            "audit path must be absolute (the daemon does not run in the site file's directory)",
        );
    }
    if let Some(burst) = a
        .burst
        .as_ref()
        .filter(|b| *b.get_ref() == 0 && settings.rate > 0)
    {
        sink.error(
            &src.loc(&burst.span()),
            "audit burst 0 lets no event through: use at least 1 (or rate = 0 to emit none)",
        );
    }
    if let Some(max) = a.max_bytes.as_ref().filter(|m| *m.get_ref() == 0) {
        sink.error(
            &src.loc(&max.span()),
            "audit max_bytes 0 would rotate on every event",
        );
    }
    settings
}

// ---------------------------------------------------------------------------------------------
// Warnings on a valid policy

/// A site role no enabled rule names: a typo'd feature list, or a leftover.
fn unused_roles(sink: &mut Sink, rules: &[Rule], site: &BTreeMap<String, SiteRole>) {
    let used: BTreeSet<&str> = rules
        .iter()
        .filter(|r| r.enabled)
        .flat_map(|r| r.from.iter().chain(&r.to))
        .map(String::as_str)
        .collect();
    for (id, role) in site {
        if !used.contains(id.as_str()) {
            sink.warn(
                &role.loc,
                format!(
                    "role `{}` is mapped but no enabled rule uses it (is a feature off?)",
                    role.written
                ),
            );
        }
    }
}

/// An enabled rule every packet of which an earlier enabled rule already admits.
fn shadowed_rules(sink: &mut Sink, rules: &[Rule]) {
    let enabled: Vec<&Rule> = rules.iter().filter(|r| r.enabled).collect();
    for (i, later) in enabled.iter().enumerate() {
        if let Some(earlier) = enabled[..i].iter().find(|e| rule_covers(e, later)) {
            let msg = format!(
                "rule `{}` is shadowed by `{}` ({}:{}): that earlier rule already admits all of its traffic, so it never matches first",
                later.id,
                earlier.id,
                earlier.origin.file.display(),
                earlier.origin.line
            );
            sink.warn(&origin_loc(&later.origin), msg);
        }
    }
}

/// Whether `outer` admits everything `inner` admits: protocols, ports/types, sources
/// (`any` covers all) and destinations (`host` covers all).
fn rule_covers(outer: &Rule, inner: &Rule) -> bool {
    let roles = |o: &[String], i: &[String], all: &str| {
        o.iter().any(|r| r == all) || i.iter().all(|r| o.contains(r))
    };
    inner.protos.iter().all(|p| outer.protos.contains(p))
        && match_covers(&outer.matches, &inner.matches)
        && roles(&outer.from, &inner.from, ANY)
        && roles(&outer.to, &inner.to, HOST)
}

fn match_covers(outer: &Match, inner: &Match) -> bool {
    match (outer, inner) {
        (Match::Ports(o), Match::Ports(i)) => ports::covers(o, i),
        (
            Match::Icmp {
                types: ot,
                code: oc,
            },
            Match::Icmp {
                types: it,
                code: ic,
            },
        ) => ports::covers(ot, it) && (oc.is_none() || oc == ic),
        _ => false,
    }
}

fn origin_loc(origin: &Origin) -> Loc {
    Loc {
        file: origin.file.clone(),
        line: origin.line,
        col: 1,
    }
}

/// Documented contradictions switched on: allowed, but worth a second look.
fn doubtful(
    sink: &mut Sink,
    policy: &Policy,
    catalog: &Catalog,
    switched_on: &BTreeMap<String, Loc>,
) {
    for name in &policy.features {
        if !DOUBTFUL_FEATURE_WORDS.iter().any(|w| name.contains(w)) {
            continue;
        }
        let Some(decl) = catalog.features.get(name) else {
            continue;
        };
        let at = switched_on.get(name).unwrap_or(&decl.loc);
        let msg = format!(
            "feature `{name}` is on: it admits traffic the documents contradict each other about ({})",
            decl.description
        );
        sink.warn(at, msg);
    }
    for rule in policy
        .rules
        .iter()
        .filter(|r| r.enabled && DOUBTFUL_RULES.contains(&r.id.as_str()))
    {
        let why = rule
            .note
            .as_deref()
            .unwrap_or("see the comment at the rule");
        sink.warn(
            &origin_loc(&rule.origin),
            format!(
                "rule `{}` is enabled, but its direction is documented as doubtful: {why}",
                rule.id
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_networks() {
        let net = |s: &str| parse_net(s).map(|n| n.to_string());
        assert_eq!(net("198.18.1.10"), Ok("198.18.1.10/32".to_owned()));
        assert_eq!(net("2001:db8::10"), Ok("2001:db8::10/128".to_owned()));
        assert_eq!(net("198.18.2.0/24"), Ok("198.18.2.0/24".to_owned()));
        assert_eq!(net("::/0"), Ok("::/0".to_owned()));
        let host_bits = net("198.18.1.1/24").expect_err("host bits");
        assert!(
            host_bits.contains("198.18.1.0/24") && host_bits.contains("198.18.1.1/32"),
            "{host_bits}"
        );
        assert!(
            net("2001:db8::/129")
                .expect_err("too long")
                .contains("/129")
        );
        assert!(
            net("198.18.2.300/24")
                .expect_err("bad octet")
                .contains("198.18.2.300")
        );
        assert!(
            net("198.18.2.0/x")
                .expect_err("bad prefix")
                .contains("prefix length")
        );
        assert!(net("rhv-manager").is_err());
        assert!(net(" 198.18.1.10").is_err(), "no silent trimming");
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("rhv.manger", "rhv.manager"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            did_you_mean("rhv.manger", ["rhv.host", "rhv.manager"]),
            " (did you mean `rhv.manager`?)"
        );
        assert_eq!(did_you_mean("ovn-typo", ["ovn", "kdump"]), "");
    }
}

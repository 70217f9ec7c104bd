//! Loading: site file + essentials + listed products -> validated [`Policy`].
//!
//! Steps, in order: read the files (here), [`catalog`] of what the products declare, [`site`]
//! choices and addresses, [`rules`] validated, then [`lint`] warnings on the valid result.
//!
//! Every check reports into one [`Sink`] and goes on, so a single run lists every mistake of
//! every file, each at its `FILE:LINE:COL`. Only when nothing is wrong is the `Policy` built;
//! the doubtful-but-valid findings (any sources, unused roles, shadowed rules, documented
//! contradictions switched on) become `Policy::warnings`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::{
    Policy,
    diag::{Diagnostics, Loc, Sink, SourceFile, did_you_mean},
    files::{self, ProductFile, SiteFile},
};

mod access;
mod catalog;
mod lint;
mod rules;
mod site;

use catalog::Catalog;
use rules::RuleCx;

/// The product every site gets, whatever it lists: PMTU, neighbour discovery, DHCP client.
const ESSENTIALS: &str = "essentials";
/// Built-in source role: every address.
pub(super) const ANY: &str = "any";
/// Built-in destination role: every managed host.
pub(super) const HOST: &str = "host";
/// Roles of the site's own, declared by mapping them in `[roles]`.
pub(super) const SITE_ROLE_PREFIX: &str = "site.";
/// The product name of site rules.
pub(super) const SITE_PRODUCT: &str = "site";

/// Reads and validates a site file and the product files it lists (from `policies_dir`,
/// `<id>.toml`, plus `essentials.toml`), resolving roles, features and parameters.
///
/// On failure the [`Diagnostics`] hold every error found (and the warnings found on the way),
/// sorted by file (site first, then products in load order) and position.
pub fn load(site: &Path, policies_dir: &Path) -> Result<Policy, Diagnostics> {
    let mut sink = Sink::default();
    let Some((site_src, site_file)) = read_site(&mut sink, site) else {
        return Err(sink.finish());
    };
    let products = load_products(&mut sink, &site_src, &site_file, policies_dir);
    if sink.has_errors() && products.iter().any(|p| p.syntax_error) {
        // A product file that does not parse would only add echoes of its syntax error.
        return Err(sink.finish());
    }
    let catalog = Catalog::build(&mut sink, &products, &site_src, &site_file);
    let (features, feature_locs) =
        site::features_in_force(&mut sink, &catalog, &site_src, &site_file);
    let params = site::params_in_force(&mut sink, &catalog, &site_src, &site_file);
    let cx = RuleCx {
        catalog: &catalog,
        params: &params,
        features: &features,
    };
    let rules = rules::build_rules(&mut sink, &cx, &products, &site_src, &site_file);
    let site_roles = site::site_roles(&mut sink, &catalog, &site_src, &site_file);
    let host = site::host_settings(&mut sink, &catalog, &site_src, &site_file);
    let failsafe_ssh = site::failsafe(&mut sink, &site_src, &site_file);
    let audit = site::audit_settings(&mut sink, &site_src, &site_file.audit);
    if sink.has_errors() {
        return Err(sink.finish());
    }
    let mut policy = Policy {
        site_file: site.to_owned(),
        mode: site::mode(site_file.mode),
        products: products.iter().map(|p| p.id.clone()).collect(),
        features,
        roles: catalog.policy_roles(&site_roles),
        aliases: catalog.aliases(),
        rules,
        failsafe_ssh,
        host,
        datapath: site::datapath_settings(&site_file.datapath),
        audit,
        warnings: Vec::new(),
    };
    let roles_at = site_file.roles.first().map_or_else(
        || Loc::start_of(site),
        |(name, _)| site_src.loc(&name.span()),
    );
    lint::unmapped_sources(&mut sink, &policy, &roles_at);
    lint::unused_roles(&mut sink, &policy.rules, &site_roles);
    lint::shadowed_rules(&mut sink, &policy.rules);
    let acknowledged = lint::acknowledgements(&mut sink, &site_src, &site_file, &policy, &catalog);
    lint::doubtful(&mut sink, &policy, &catalog, &feature_locs, &acknowledged);
    let diags = sink.finish();
    if diags.has_errors() {
        return Err(diags);
    }
    policy.warnings = diags.0;
    Ok(policy)
}

/// Reads a policy file, refusing one that others than root could have changed; an unreadable
/// file is an error at `at` (the line that names it).
fn read_text(sink: &mut Sink, path: &Path, at: &Loc) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            sink.error(at, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    sink.files.push(path.to_owned());
    if let Some(why) = access::unsafe_file(path) {
        sink.error(&Loc::start_of(path), why);
    }
    Some(text)
}

/// The drop-ins of a site file, `<stem>.d/*.toml` beside it, in name order.
#[must_use]
pub fn drop_ins(site: &Path) -> Vec<PathBuf> {
    let Some(stem) = site.file_stem() else {
        return Vec::new();
    };
    let mut name = stem.to_owned();
    name.push(".d");
    let dir = site.with_file_name(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    files.sort();
    files
}

/// The site file and its drop-ins, read and merged into one (see [`SiteFile::merge`]), with
/// one source whose spans reach into every file. `None` when the main file cannot be read or a
/// file does not parse: nothing after that would be worth reporting.
fn read_site(sink: &mut Sink, site: &Path) -> Option<(SourceFile, SiteFile)> {
    let text = read_text(sink, site, &Loc::start_of(site))?;
    if let Some(dir) = site.parent().filter(|d| !d.as_os_str().is_empty())
        && let Some(why) = access::unsafe_dir(dir)
    {
        sink.error(&Loc::start_of(site), why);
    }
    let mut src = SourceFile::new(site, text);
    let (mut merged, errors) = files::read_site(&src.shifted());
    let mut broken = sink.read_errors(&src, errors);
    let layers = drop_ins(site);
    if let Some(dir) = layers.first().and_then(|p| p.parent())
        && let Some(why) = access::unsafe_dir(dir)
    {
        sink.error(&Loc::start_of(&layers[0]), why);
    }
    for path in layers {
        let Some(text) = read_text(sink, &path, &Loc::start_of(&path)) else {
            continue;
        };
        src.push(&path, text);
        let (layer, errors) = files::read_site(&src.shifted());
        broken |= sink.read_errors(&src, errors);
        merged.merge(layer);
    }
    (!broken).then_some((src, merged))
}

// Product files: essentials, then what the site lists.

/// One product file, read.
struct Product {
    id: String,
    src: SourceFile,
    file: ProductFile,
    /// The file did not parse; its (only) error is reported.
    syntax_error: bool,
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
    let src = SourceFile::new(path, read_text(sink, path, at)?);
    let (file, errors) = files::read_product(&src.shifted());
    let syntax_error = sink.read_errors(&src, errors);
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
        syntax_error,
    })
}

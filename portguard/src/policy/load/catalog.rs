//! Every role, feature and parameter the loaded products declare, checked against each other:
//! a name several files declare must be declared the same way, and `alias_of` must point at a
//! declared, canonical role.

use std::collections::BTreeMap;

use super::{ANY, HOST, Product, SITE_ROLE_PREFIX, site::SiteRole};
use crate::policy::{
    Role,
    diag::{Loc, Sink, SourceFile, did_you_mean},
    files::{FeatureDecl, ParamDecl, RoleDecl, SiteFile, Str},
    ports,
};

/// A role as declared (first declaration; later ones must agree).
pub(super) struct RoleEntry {
    pub(super) alias_of: Option<String>,
    pub(super) managed: bool,
    description: String,
    /// The role's key.
    loc: Loc,
    /// The `alias_of` value, when there is one.
    alias_loc: Option<Loc>,
}

pub(super) struct FeatureEntry {
    pub(super) default: bool,
    pub(super) description: String,
    pub(super) loc: Loc,
}

pub(super) struct ParamEntry {
    pub(super) default: String,
    loc: Loc,
}

/// What a role name stands for.
pub(super) enum Resolved<'a> {
    /// `any` or `host`.
    Builtin(&'static str),
    /// A declared role, by canonical id (aliases followed).
    Role(&'a str),
    Unknown,
}

/// Every role, feature and parameter the loaded products declare.
#[derive(Default)]
pub(super) struct Catalog {
    pub(super) roles: BTreeMap<String, RoleEntry>,
    pub(super) features: BTreeMap<String, FeatureEntry>,
    pub(super) params: BTreeMap<String, ParamEntry>,
}

impl Catalog {
    pub(super) fn build(
        sink: &mut Sink,
        products: &[Product],
        site_src: &SourceFile,
        site: &SiteFile,
    ) -> Self {
        let mut catalog = Self::default();
        catalog.add_site_roles(site_src, site);
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

    /// The site's own roles: every `site.*` name it maps in `[roles]` (no product may declare
    /// such a name). They are managed: a machine in one may run portguard, and site rules may
    /// be enforced on it.
    fn add_site_roles(&mut self, src: &SourceFile, site: &SiteFile) {
        for (name, _) in &site.roles {
            let id = name.get_ref();
            if !id.starts_with(SITE_ROLE_PREFIX) || self.roles.contains_key(id) {
                continue;
            }
            self.roles.insert(
                id.clone(),
                RoleEntry {
                    alias_of: None,
                    managed: true,
                    description: "a role of this site (site file)".to_owned(),
                    loc: src.loc(&name.span()),
                    alias_loc: None,
                },
            );
        }
    }

    /// Records a role; a name declared by several files must be declared the same way.
    fn add_role(&mut self, sink: &mut Sink, src: &SourceFile, name: &Str, decl: &RoleDecl) {
        let id = name.get_ref();
        let loc = src.loc(&name.span());
        if id.starts_with(SITE_ROLE_PREFIX) {
            sink.error(
                &loc,
                format!(
                    "`{id}`: role names starting with `{SITE_ROLE_PREFIX}` belong to site files"
                ),
            );
            return;
        }
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

    pub(super) fn resolve<'a>(&'a self, name: &'a str) -> Resolved<'a> {
        match name {
            ANY => Resolved::Builtin(ANY),
            HOST => Resolved::Builtin(HOST),
            _ => self.roles.get(name).map_or(Resolved::Unknown, |e| {
                Resolved::Role(e.alias_of.as_deref().unwrap_or(name))
            }),
        }
    }

    pub(super) fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// The canonical roles, with the site's addresses.
    pub(super) fn policy_roles(&self, site: &BTreeMap<String, SiteRole>) -> BTreeMap<String, Role> {
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

    pub(super) fn aliases(&self) -> BTreeMap<String, String> {
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

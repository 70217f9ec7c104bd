//! Port and ICMP type specs: `"22"`, `"80,443"`, `"5900-6923"`, `"${param}"`, and lists mixing
//! them (`"111,2049,${rhv.nfs_mountd_port}"`).
//!
//! One grammar serves both ports (1..=65535; port 0 is not a port a service can listen on) and
//! ICMP types (0..=255; type 0 is echo reply). The result is sorted and merged so that the
//! compiler and the shadowing check can compare specs as sets.

use std::{fmt, ops::RangeInclusive};

/// Why a spec was rejected. Displayed as the tail of a diagnostic (`bad port spec "x": ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SpecError {
    /// Nothing between commas, or an empty string.
    Empty,
    /// Something that is neither a number, a range nor a `${param}`.
    Garbage(String),
    /// A value outside the allowed bounds (port 0, port > 65535, type > 255).
    OutOfRange { value: String, min: u32, max: u32 },
    /// `a-b` with `a > b`.
    Reversed(u32, u32),
    /// `${name}` with no such parameter declared by a loaded product.
    UnknownParam(String),
    /// A parameter value that itself contains `${...}`: values are plain specs.
    NestedParam(String),
    /// A parameter value that does not parse; the inner error says why.
    InParam(String, Box<SpecError>),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty entry (nothing between commas?)"),
            Self::Garbage(item) => {
                write!(
                    f,
                    "`{item}` is not a number, a range `A-B` or a `${{param}}`"
                )
            }
            Self::OutOfRange { value, min, max } => {
                write!(f, "{value} is out of range (allowed {min}-{max})")
            }
            Self::Reversed(lo, hi) => write!(f, "reversed range {lo}-{hi} (write {hi}-{lo})"),
            Self::UnknownParam(name) => write!(f, "undefined parameter `${{{name}}}`"),
            Self::NestedParam(name) => {
                write!(
                    f,
                    "parameter values cannot refer to other parameters (`${{{name}}}`)"
                )
            }
            Self::InParam(name, inner) => write!(f, "in the value of `${{{name}}}`: {inner}"),
        }
    }
}

/// Bounds of one kind of spec.
#[derive(Clone, Copy)]
struct Bounds {
    min: u32,
    max: u32,
}

const PORT_BOUNDS: Bounds = Bounds {
    min: 1,
    max: 65_535,
};
const ICMP_BOUNDS: Bounds = Bounds { min: 0, max: 255 };

/// Looks up a parameter's value (a spec without `${...}`). `None` = not declared.
pub(crate) type ParamLookup<'a> = &'a dyn Fn(&str) -> Option<&'a str>;

/// Parses a port spec into sorted, merged ranges.
pub(crate) fn parse_ports(
    spec: &str,
    params: ParamLookup<'_>,
) -> Result<Vec<RangeInclusive<u16>>, SpecError> {
    let ranges = parse_spec(spec, PORT_BOUNDS, Some(params))?;
    Ok(narrow(&ranges))
}

/// Parses a parameter value: a port spec that must not refer to other parameters.
pub(crate) fn parse_param_value(spec: &str) -> Result<Vec<RangeInclusive<u16>>, SpecError> {
    let ranges = parse_spec(spec, PORT_BOUNDS, None)?;
    Ok(narrow(&ranges))
}

/// Parses an ICMP type spec (same grammar, 0..=255) into sorted, merged ranges.
pub(crate) fn parse_icmp_types(
    spec: &str,
    params: ParamLookup<'_>,
) -> Result<Vec<RangeInclusive<u8>>, SpecError> {
    let ranges = parse_spec(spec, ICMP_BOUNDS, Some(params))?;
    Ok(narrow(&ranges))
}

/// Converts ranges already checked against the target type's bounds.
fn narrow<T: TryFrom<u32> + Copy>(ranges: &[RangeInclusive<u32>]) -> Vec<RangeInclusive<T>> {
    ranges
        .iter()
        .filter_map(|r| Some(T::try_from(*r.start()).ok()?..=T::try_from(*r.end()).ok()?))
        .collect()
}

/// The whole grammar. `params = None` means parameters are not allowed here (a parameter's
/// own value).
fn parse_spec(
    spec: &str,
    bounds: Bounds,
    params: Option<ParamLookup<'_>>,
) -> Result<Vec<RangeInclusive<u32>>, SpecError> {
    if spec.trim().is_empty() {
        return Err(SpecError::Empty);
    }
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if let Some(name) = param_name(item)? {
            out.extend(expand_param(name, bounds, params)?);
        } else {
            out.push(parse_item(item, bounds)?);
        }
    }
    Ok(merge(out))
}

/// `Some(name)` for `${name}`; an error for a malformed `${`.
fn param_name(item: &str) -> Result<Option<&str>, SpecError> {
    let Some(rest) = item.strip_prefix("${") else {
        return Ok(None);
    };
    match rest.strip_suffix('}') {
        Some(name) if is_param_name(name) => Ok(Some(name)),
        _ => Err(SpecError::Garbage(item.to_owned())),
    }
}

/// Parameter names are dotted identifiers (`rhv.ovn_sb_port`).
fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn expand_param(
    name: &str,
    bounds: Bounds,
    params: Option<ParamLookup<'_>>,
) -> Result<Vec<RangeInclusive<u32>>, SpecError> {
    let Some(lookup) = params else {
        return Err(SpecError::NestedParam(name.to_owned()));
    };
    let value = lookup(name).ok_or_else(|| SpecError::UnknownParam(name.to_owned()))?;
    parse_spec(value, bounds, None).map_err(|e| SpecError::InParam(name.to_owned(), Box::new(e)))
}

/// One `N` or `A-B`.
fn parse_item(item: &str, bounds: Bounds) -> Result<RangeInclusive<u32>, SpecError> {
    if item.is_empty() {
        return Err(SpecError::Empty);
    }
    let (lo, hi) = if let Some((a, b)) = item.split_once('-') {
        (
            parse_number(a.trim(), item, bounds)?,
            parse_number(b.trim(), item, bounds)?,
        )
    } else {
        let n = parse_number(item, item, bounds)?;
        (n, n)
    };
    if lo > hi {
        return Err(SpecError::Reversed(lo, hi));
    }
    Ok(lo..=hi)
}

/// A decimal number within bounds. Digits only: no sign, no hex, no spaces inside.
fn parse_number(text: &str, item: &str, bounds: Bounds) -> Result<u32, SpecError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::Garbage(item.to_owned()));
    }
    let out_of_range = || SpecError::OutOfRange {
        value: text.to_owned(),
        min: bounds.min,
        max: bounds.max,
    };
    // Digits only, so a parse failure can only be overflow.
    let n: u32 = text.parse().map_err(|_| out_of_range())?;
    if n < bounds.min || n > bounds.max {
        return Err(out_of_range());
    }
    Ok(n)
}

/// Sorts ranges and merges overlapping or adjacent ones.
fn merge(mut ranges: Vec<RangeInclusive<u32>>) -> Vec<RangeInclusive<u32>> {
    ranges.sort_by_key(|r| (*r.start(), *r.end()));
    let mut out: Vec<RangeInclusive<u32>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if *r.start() <= last.end().saturating_add(1) => {
                if r.end() > last.end() {
                    *last = *last.start()..=*r.end();
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// Whether every value of `inner` is in `outer` (both sorted and merged).
pub(crate) fn covers<T: Ord + Copy>(
    outer: &[RangeInclusive<T>],
    inner: &[RangeInclusive<T>],
) -> bool {
    inner.iter().all(|i| {
        outer
            .iter()
            .any(|o| o.start() <= i.start() && i.end() <= o.end())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(name: &str) -> Option<&'static str> {
        match name {
            "rhv.mountd_port" => Some("892"),
            "list" => Some("1000-1002,2000"),
            "nested" => Some("${rhv.mountd_port}"),
            "bad" => Some("0"),
            _ => None,
        }
    }

    fn ports(spec: &str) -> Result<Vec<RangeInclusive<u16>>, SpecError> {
        parse_ports(spec, &params)
    }

    fn types(spec: &str) -> Result<Vec<RangeInclusive<u8>>, SpecError> {
        parse_icmp_types(spec, &params)
    }

    #[test]
    fn single_list_range() {
        assert_eq!(ports("22"), Ok(vec![22..=22]));
        assert_eq!(ports("80,443"), Ok(vec![80..=80, 443..=443]));
        assert_eq!(ports("5900-6923"), Ok(vec![5900..=6923]));
        assert_eq!(ports(" 80 , 443 "), Ok(vec![80..=80, 443..=443]));
        assert_eq!(ports("1-65535"), Ok(vec![1..=65535]));
        assert_eq!(ports("7-7"), Ok(vec![7..=7]));
    }

    #[test]
    fn sorted_and_merged() {
        assert_eq!(ports("443,80,80"), Ok(vec![80..=80, 443..=443]));
        assert_eq!(ports("10-20,15-30,31,40"), Ok(vec![10..=31, 40..=40]));
        assert_eq!(ports("100-200,150"), Ok(vec![100..=200]));
    }

    #[test]
    fn params_mixed() {
        assert_eq!(
            ports("111,2049,${rhv.mountd_port}"),
            Ok(vec![111..=111, 892..=892, 2049..=2049])
        );
        assert_eq!(ports("${list},1003"), Ok(vec![1000..=1003, 2000..=2000]));
        assert_eq!(
            ports("${nope}"),
            Err(SpecError::UnknownParam("nope".into()))
        );
        assert!(
            matches!(ports("${nested}"), Err(SpecError::InParam(_, e)) if *e == SpecError::NestedParam("rhv.mountd_port".into()))
        );
        assert!(matches!(ports("${bad}"), Err(SpecError::InParam(_, _))));
        assert_eq!(ports("${}"), Err(SpecError::Garbage("${}".into())));
        assert_eq!(ports("${open"), Err(SpecError::Garbage("${open".into())));
        assert_eq!(
            parse_param_value("${list}"),
            Err(SpecError::NestedParam("list".into()))
        );
        assert_eq!(parse_param_value("900-902"), Ok(vec![900..=902]));
    }

    #[test]
    fn port_errors() {
        assert!(matches!(ports("0"), Err(SpecError::OutOfRange { .. })));
        assert!(matches!(ports("0-10"), Err(SpecError::OutOfRange { .. })));
        assert!(matches!(ports("65536"), Err(SpecError::OutOfRange { .. })));
        assert!(matches!(
            ports("99999999999999"),
            Err(SpecError::OutOfRange { .. })
        ));
        assert_eq!(ports("6923-5900"), Err(SpecError::Reversed(6923, 5900)));
        assert_eq!(ports(""), Err(SpecError::Empty));
        assert_eq!(ports("  "), Err(SpecError::Empty));
        assert_eq!(ports("80,"), Err(SpecError::Empty));
        assert_eq!(ports("80,,443"), Err(SpecError::Empty));
        for garbage in [
            "http", "-5", "5-", "1-2-3", "+22", "0x16", "22/tcp", "1 2", "٣",
        ] {
            assert!(
                matches!(ports(garbage), Err(SpecError::Garbage(_))),
                "{garbage}"
            );
        }
    }

    #[test]
    fn icmp_types() {
        assert_eq!(types("0"), Ok(vec![0..=0]));
        assert_eq!(types("0-255"), Ok(vec![0..=255]));
        assert_eq!(types("130-132,143"), Ok(vec![130..=132, 143..=143]));
        assert_eq!(types("133,134"), Ok(vec![133..=134]));
        assert!(matches!(types("256"), Err(SpecError::OutOfRange { .. })));
        assert_eq!(types("8-3"), Err(SpecError::Reversed(8, 3)));
        assert_eq!(types(""), Err(SpecError::Empty));
    }

    #[test]
    fn coverage() {
        assert!(covers(&[1u16..=100], &[5..=5, 50..=60]));
        assert!(!covers(&[1u16..=100], &[50..=101]));
        assert!(covers::<u16>(&[1..=2], &[]));
    }

    #[test]
    fn messages() {
        assert_eq!(
            SpecError::Reversed(9, 1).to_string(),
            "reversed range 9-1 (write 1-9)"
        );
        assert_eq!(
            SpecError::UnknownParam("x".into()).to_string(),
            "undefined parameter `${x}`"
        );
    }
}

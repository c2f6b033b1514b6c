//! Path forms for matching: Prefix paths are compared element by element
//! on `/`, so both the rule's path and the request's path are reduced to
//! their elements joined by `/`, which makes element-wise prefix matching
//! a string comparison at `/` boundaries.
//!
//! Pure.

use std::borrow::Cow;

/// `path` with no trailing slash and no empty elements; the root is "".
/// `/foo/`, `/foo` and `//foo` are all `/foo`.
pub(crate) fn normalize(path: &str) -> Cow<'_, str> {
    let clean = !path.contains("//") && !path.ends_with('/');
    if clean && (path.is_empty() || path.starts_with('/')) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for element in path.split('/').filter(|e| !e.is_empty()) {
        out.push('/');
        out.push_str(element);
    }
    Cow::Owned(out)
}

/// How a rule's path matches, after ImplementationSpecific is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathMatch {
    Exact,
    /// Prefix, and ImplementationSpecific: ferry treats it as Prefix, as
    /// ingress-nginx does for paths that are not regular expressions.
    Prefix,
}

impl PathMatch {
    pub fn parse(path_type: &str) -> Option<PathMatch> {
        match path_type {
            "Exact" => Some(PathMatch::Exact),
            "Prefix" | "ImplementationSpecific" => Some(PathMatch::Prefix),
            _ => None,
        }
    }
}

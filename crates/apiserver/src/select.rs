//! Label and field selectors as list and watch requests give them
//! (`labelSelector=app=web,tier!=db,env,!canary,zone in (a,b)`,
//! `fieldSelector=type=kubernetes.io/tls`). Field selectors support the
//! fields the API server supports for the served kinds that ferry's
//! sources use: `metadata.name`, `metadata.namespace`, Secret `type`, Pod
//! `spec.nodeName` and `status.phase`; others are refused as the API server
//! refuses them. Pure.

use ferry_model::Kind;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelTerm {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FieldTerm {
    Eq(String, String),
    Ne(String, String),
}

/// A parsed pair of selectors; the default matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<LabelTerm>,
    fields: Vec<FieldTerm>,
}

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|t| !t.is_empty()).collect()
}

fn set(values: &str) -> Option<Vec<String>> {
    let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn label_term(t: &str) -> Result<LabelTerm, String> {
    if let Some(key) = t.strip_prefix('!') {
        return Ok(LabelTerm::NotExists(key.trim().into()));
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(LabelTerm::Ne(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(LabelTerm::Eq(k.trim().into(), v.trim().into()));
    }
    let words: Vec<&str> = t.splitn(3, ' ').collect();
    match words.as_slice() {
        [key] => Ok(LabelTerm::Exists(key.to_string())),
        [key, "in", values] => set(values)
            .map(|v| LabelTerm::In(key.to_string(), v))
            .ok_or_else(|| format!("labelSelector {t:?}: expected KEY in (V1,V2)")),
        [key, "notin", values] => set(values)
            .map(|v| LabelTerm::NotIn(key.to_string(), v))
            .ok_or_else(|| format!("labelSelector {t:?}: expected KEY notin (V1,V2)")),
        _ => Err(format!("labelSelector {t:?}: not a selector term")),
    }
}

/// The fields a kind can be selected on (beyond metadata.name/namespace).
fn field_supported(kind: Kind, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || (kind == Kind::Secret && field == "type")
        || (kind == Kind::Pod && matches!(field, "spec.nodeName" | "status.phase"))
}

impl Selector {
    /// Parses the two query parameters for a list or watch of `kind`.
    pub fn parse(kind: Kind, labels: Option<&str>, fields: Option<&str>) -> Result<Self, String> {
        let mut out = Selector::default();
        for t in terms(labels.unwrap_or("")) {
            out.labels.push(label_term(t)?);
        }
        for t in terms(fields.unwrap_or("")) {
            let term = if let Some((k, v)) = t.split_once("!=") {
                FieldTerm::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                FieldTerm::Eq(k.trim().into(), v.trim().into())
            } else {
                return Err(format!("fieldSelector {t:?}: expected FIELD=VALUE"));
            };
            let (FieldTerm::Eq(field, _) | FieldTerm::Ne(field, _)) = &term;
            if !field_supported(kind, field) {
                return Err(format!("field label not supported: {field} (for {kind})"));
            }
            out.fields.push(term);
        }
        Ok(out)
    }

    /// Whether an object (as JSON) is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|t| match t {
            LabelTerm::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelTerm::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelTerm::Exists(k) => label(k).is_some(),
            LabelTerm::NotExists(k) => label(k).is_none(),
            LabelTerm::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelTerm::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
        });
        let field = |path: &str| -> String {
            path.split('.')
                .fold(object, |v, part| &v[part])
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        labels_ok
            && self.fields.iter().all(|t| match t {
                FieldTerm::Eq(k, v) => field(k) == *v,
                FieldTerm::Ne(k, v) => field(k) != *v,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_the_api_grammar() {
        let o = json!({"metadata": {"labels": {"app": "web", "zone": "a"}}});
        let m = |s: &str| {
            Selector::parse(Kind::Pod, Some(s), None)
                .unwrap()
                .matches(&o)
        };
        assert!(m("app=web"));
        assert!(m("app==web,zone"));
        assert!(!m("app!=web"));
        assert!(m("!canary"));
        assert!(!m("!zone"));
        assert!(m("zone in (a,b)"));
        assert!(!m("zone notin (a,b)"));
        assert!(m("tier notin (db)"));
        assert!(m(""));
    }

    #[test]
    fn field_selectors_cover_what_the_sources_use_and_refuse_the_rest() {
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls"});
        let s = Selector::parse(Kind::Secret, None, Some("type=kubernetes.io/tls")).unwrap();
        assert!(s.matches(&secret));
        let s = Selector::parse(Kind::Secret, None, Some("type!=kubernetes.io/tls")).unwrap();
        assert!(!s.matches(&secret));
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1"}});
        let s = Selector::parse(Kind::Pod, None, Some("spec.nodeName=node-1")).unwrap();
        assert!(s.matches(&pod));
        let err = Selector::parse(Kind::Service, None, Some("spec.type=NodePort")).unwrap_err();
        assert!(err.contains("field label not supported"), "{err}");
    }
}

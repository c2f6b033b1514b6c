//! Reads manifest text (multi-document YAML or a JSON stream, including
//! `kind: List`) into validated objects, the way `kubectl apply -f` accepts
//! it. Each document fails on its own: one bad document costs only itself.
//!
//! Pure: takes text, returns objects and errors.

use serde_json::Value;

use crate::error::{FieldError, ManifestError, ObjectDesc};
use crate::object::{Kind, Object};
use crate::validate::{ValidationOptions, validate_with};

/// One accepted object and where it came from.
#[derive(Clone, Debug)]
pub struct DecodedObject {
    /// 1-based document index in the file.
    pub document: usize,
    /// Index in `items` for objects from a `kind: List`.
    pub item: Option<usize>,
    pub object: Object,
}

/// The outcome of reading one file.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    pub objects: Vec<DecodedObject>,
    pub errors: Vec<ManifestError>,
    /// Objects of kinds the data plane does not use (Deployments and so on):
    /// not errors, but counted so that `ferry validate` can say so.
    pub skipped: Vec<ObjectDesc>,
    /// Objects that failed validation but whose identity could be read; a
    /// watching source keeps their last good version.
    pub rejected: Vec<ObjectDesc>,
    /// True when the text itself could not be parsed (a YAML or JSON syntax
    /// error): a watching source then keeps the file's last good objects.
    pub syntax_error: bool,
}

/// Decodes `text`, naming `file` in every error, validating as an API
/// server with default flags would.
pub fn decode(file: &str, text: &str) -> Decoded {
    decode_with(file, text, &ValidationOptions::default())
}

/// [`decode`] for an API server started with `options`.
pub fn decode_with(file: &str, text: &str, options: &ValidationOptions) -> Decoded {
    let mut out = Decoded::default();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        decode_json_stream(file, text, options, &mut out);
    } else {
        decode_yaml_stream(file, text, options, &mut out);
    }
    // Duplicates inside one file: the first definition wins.
    let mut seen = std::collections::HashMap::new();
    let mut kept = Vec::with_capacity(out.objects.len());
    for d in std::mem::take(&mut out.objects) {
        let key = d.object.key();
        if let Some(first) = seen.get(&key) {
            out.errors.push(ManifestError {
                file: file.to_string(),
                document: d.document,
                item: d.item,
                line: None,
                object: Some(desc_of(&d.object)),
                field: FieldError::new(
                    "metadata.name",
                    format!("Duplicate value: already defined in document {first}"),
                ),
            });
        } else {
            seen.insert(key, d.document);
            kept.push(d);
        }
    }
    out.objects = kept;
    out
}

/// Every document of `text` as plain JSON, unvalidated and untyped, with
/// `kind: List` items flattened: for a reader that needs a whole object the
/// model keeps slim (the lab reads a bare Pod's containers this way).
/// Documents that do not parse are left out; [`decode`] reports them.
pub fn documents(text: &str) -> Vec<Value> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect()
    } else {
        split_yaml(text)
            .into_iter()
            .filter_map(|(_, chunk)| {
                serde_saphyr::from_str_with_options::<Value>(chunk, yaml_options()).ok()
            })
            .collect()
    };
    values
        .into_iter()
        .flat_map(|v| match v.get("items").and_then(Value::as_array) {
            Some(items) if str_field(&v, &["kind"]).is_some_and(|k| k.ends_with("List")) => {
                items.clone()
            }
            _ => vec![v],
        })
        .filter(Value::is_object)
        .collect()
}

fn decode_json_stream(file: &str, text: &str, options: &ValidationOptions, out: &mut Decoded) {
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    for (i, value) in stream.enumerate() {
        let document = i + 1;
        match value {
            Ok(value) => decode_document(file, document, None, value, options, out),
            Err(e) => {
                out.syntax_error = true;
                out.errors.push(doc_error(
                    file,
                    document,
                    Some(e.line()),
                    format!("invalid JSON: {e}"),
                ));
                return;
            }
        }
    }
}

/// Splits a YAML stream on `---` lines as kubectl's reader does, so that a
/// syntax error stays inside its own document.
fn split_yaml(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(|c| c.is_whitespace());
        if is_separator {
            docs.push((start_line, &text[start..offset]));
            // The separator line itself (which may carry `--- # comment`)
            // starts the next document; a YAML parser accepts it.
            start = offset;
            start_line = n + 1;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

/// Below this size a file is decoded on the calling thread; above it, the
/// documents are shared out over the machine's cores (each document is
/// independent, and the results are joined back in document order).
const PARALLEL_THRESHOLD: usize = 1 << 20;

fn decode_yaml_stream(file: &str, text: &str, options: &ValidationOptions, out: &mut Decoded) {
    let mut docs = Vec::new();
    for (line, chunk) in split_yaml(text) {
        let blank = chunk
            .lines()
            .all(|l| matches!(l.trim(), "" | "---" | "...") || l.trim_start().starts_with('#'));
        if !blank {
            docs.push((docs.len() + 1, line, chunk));
        }
    }
    // Asked only for a large file: the answer reads the cgroup files
    // (about a tenth of a small file's whole reload).
    let workers = if text.len() < PARALLEL_THRESHOLD {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    if workers < 2 || docs.len() < 2 * workers {
        for (document, line, chunk) in docs {
            decode_yaml_document(file, document, line, chunk, options, out);
        }
        return;
    }
    let per = docs.len().div_ceil(workers);
    let parts: Vec<Decoded> = std::thread::scope(|scope| {
        let handles: Vec<_> = docs
            .chunks(per)
            .map(|range| {
                scope.spawn(move || {
                    let mut part = Decoded::default();
                    for &(document, line, chunk) in range {
                        decode_yaml_document(file, document, line, chunk, options, &mut part);
                    }
                    part
                })
            })
            .collect();
        handles
            .into_iter()
            // A worker only panics if decoding panics, which the fuzz target
            // checks never happens; pass such a panic on unchanged.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for part in parts {
        out.objects.extend(part.objects);
        out.errors.extend(part.errors);
        out.skipped.extend(part.skipped);
        out.rejected.extend(part.rejected);
        out.syntax_error |= part.syntax_error;
    }
}

fn decode_yaml_document(
    file: &str,
    document: usize,
    line: usize,
    chunk: &str,
    options: &ValidationOptions,
    out: &mut Decoded,
) {
    match serde_saphyr::from_str_with_options::<Value>(chunk, yaml_options()) {
        Ok(Value::Null) => {}
        Ok(value) => decode_document(file, document, None, value, options, out),
        Err(e) => {
            out.syntax_error = true;
            let message = e.to_string();
            let mut first = message.lines().next().unwrap_or("syntax error");
            // The parser counts lines from the start of the document;
            // the user wants them counted from the start of the file.
            let at = match e.location() {
                Some(loc) if loc.line() > 0 => {
                    if let Some(i) = first.rfind(" at line ") {
                        first = &first[..i];
                    }
                    line + usize::try_from(loc.line()).unwrap_or(1) - 1
                }
                _ => line,
            };
            out.errors.push(doc_error(
                file,
                document,
                Some(at),
                format!("invalid YAML: {first}"),
            ));
        }
    }
}

/// YAML 1.2 core schema: only `true`/`false` are booleans, so `name: n` or
/// `value: yes` stay strings (YAML 1.1 parsers, kubectl's among them, would
/// turn them into booleans and fail later).
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    options
}

fn doc_error(file: &str, document: usize, line: Option<usize>, message: String) -> ManifestError {
    ManifestError {
        file: file.to_string(),
        document,
        item: None,
        line,
        object: None,
        field: FieldError::new("", message),
    }
}

fn str_field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn decode_document(
    file: &str,
    document: usize,
    item: Option<usize>,
    value: Value,
    options: &ValidationOptions,
    out: &mut Decoded,
) {
    let err = |object: Option<ObjectDesc>, path: &str, message: String| ManifestError {
        file: file.to_string(),
        document,
        item,
        line: None,
        object,
        field: FieldError::new(path, message),
    };
    if !value.is_object() {
        out.errors.push(err(
            None,
            "",
            "a manifest document must be an object with apiVersion and kind".into(),
        ));
        return;
    }
    let api_version = str_field(&value, &["apiVersion"]).unwrap_or("").to_string();
    let kind_name = str_field(&value, &["kind"]).unwrap_or("").to_string();
    let kind = Kind::from_type(&api_version, &kind_name);
    let mut desc = ObjectDesc {
        kind: kind_name.clone(),
        namespace: str_field(&value, &["metadata", "namespace"])
            .unwrap_or("")
            .to_string(),
        name: str_field(&value, &["metadata", "name"])
            .unwrap_or("")
            .to_string(),
    };
    if desc.namespace.is_empty() && kind.is_none_or(Kind::namespaced) {
        desc.namespace = "default".into();
    }
    if api_version.is_empty() {
        out.errors
            .push(err(Some(desc), "apiVersion", "Required value".into()));
        return;
    }
    if kind_name.is_empty() {
        out.errors
            .push(err(Some(desc), "kind", "Required value".into()));
        return;
    }
    if item.is_none() && (kind_name == "List" || kind_name.ends_with("List")) {
        let Some(items) = value.get("items").and_then(Value::as_array).cloned() else {
            out.errors.push(err(
                None,
                "items",
                format!("Required value: a {kind_name} needs an items array"),
            ));
            return;
        };
        for (i, v) in items.into_iter().enumerate() {
            decode_document(file, document, Some(i), v, options, out);
        }
        return;
    }
    let Some(kind) = kind else {
        if let Some(known) = Kind::ALL.iter().find(|k| k.as_str() == kind_name) {
            out.errors.push(err(
                Some(desc),
                "apiVersion",
                format!(
                    "{api_version:?} is not served for {kind_name}; use {:?}",
                    known.api_version()
                ),
            ));
        } else {
            out.skipped.push(desc);
        }
        return;
    };
    // The model keeps a slim Pod; its whole spec is checked here, once.
    let whole_spec = if kind == Kind::Pod {
        crate::validate::whole_pod_spec(value.get("spec"))
    } else {
        Vec::new()
    };
    let object = match Object::from_value(kind, value) {
        Ok(o) => o,
        Err((path, message)) => {
            out.errors.push(err(Some(desc.clone()), &path, message));
            out.rejected.push(desc);
            return;
        }
    };
    let object = with_default_namespace(object);
    let mut problems = validate_with(&object, options);
    problems.extend(whole_spec);
    if problems.is_empty() {
        out.objects.push(DecodedObject {
            document,
            item,
            object,
        });
    } else {
        for p in problems {
            out.errors.push(err(Some(desc.clone()), &p.path, p.message));
        }
        out.rejected.push(desc);
    }
}

/// Namespaced objects without a namespace land in `default`, as with kubectl;
/// cluster-scoped ones lose any namespace they were given.
fn with_default_namespace(mut object: Object) -> Object {
    let namespaced = object.kind().namespaced();
    let current = object.metadata().namespace();
    if namespaced && current.is_none_or(str::is_empty) {
        object.metadata_mut().set_namespace(Some("default".into()));
    } else if !namespaced && current.is_some() {
        object.metadata_mut().set_namespace(None);
    }
    object
}

fn desc_of(o: &Object) -> ObjectDesc {
    ObjectDesc::of(&o.key())
}

//! One shared copy of strings that repeat across many objects: namespaces,
//! node names, zones, Pod phases. At issue 13's target case (100,000 Pods
//! and 160,000 endpoints on a few nodes in 20,000 namespaces) each of
//! those was its own allocation in every object and every view made from
//! it; shared, an object holds a pointer and a count is bumped.
//!
//! The table is process-wide (decoding runs on several threads and every
//! source and view shares it). Strings nobody holds any more are swept
//! out when a new string makes the table twice what was in use at the
//! last sweep (at least 4,096): strings dropped since then stay until
//! enough new ones arrive.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

struct Table {
    strings: HashSet<Arc<str>>,
    sweep_at: usize,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

const FIRST_SWEEP: usize = 4096;

/// The shared copy of `s`.
pub fn shared(s: &str) -> Arc<str> {
    let mut guard = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let table = guard.get_or_insert_with(|| Table {
        strings: HashSet::new(),
        sweep_at: FIRST_SWEEP,
    });
    if let Some(found) = table.strings.get(s) {
        return found.clone();
    }
    let new: Arc<str> = Arc::from(s);
    table.strings.insert(new.clone());
    if table.strings.len() >= table.sweep_at {
        table.strings.retain(|s| Arc::strong_count(s) > 1);
        table.strings.shrink_to_fit();
        table.sweep_at = (table.strings.len() * 2).max(FIRST_SWEEP);
    }
    new
}

/// Deserializes a string into its shared copy, without an owned `String`
/// on the way.
pub(crate) fn deserialize<'de, D>(d: D) -> Result<Arc<str>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    d.deserialize_str(SharedStr)
}

struct SharedStr;

impl serde::de::Visitor<'_> for SharedStr {
    type Value = Arc<str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        Ok(shared(v))
    }
}

/// Deserializes an optional string into its shared copy, without an owned
/// `String` on the way.
pub(crate) fn deserialize_opt<'de, D>(d: D) -> Result<Option<Arc<str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{Deserializer, Error, Visitor};
    use std::fmt;

    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Arc<str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(SharedStr).map(Some)
        }
    }

    d.deserialize_option(Opt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy_and_unheld_ones_are_swept() {
        let a = shared("node-intern-test");
        let b = shared(&String::from("node-intern-test"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "node-intern-test");
        // Fill past a sweep with strings nobody keeps: the table stays small.
        for i in 0..3 * FIRST_SWEEP {
            shared(&format!("gone-{i}"));
        }
        let held = TABLE
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |t| t.strings.len());
        assert!(held < 2 * FIRST_SWEEP, "{held}");
        assert!(
            Arc::ptr_eq(&a, &shared("node-intern-test")),
            "held ones stay"
        );
    }

    #[test]
    fn optional_strings_decode_shared_from_yaml_and_json() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "deserialize_opt")]
            a: Option<Arc<str>>,
            #[serde(default, deserialize_with = "deserialize_opt")]
            b: Option<Arc<str>>,
            #[serde(default, deserialize_with = "deserialize_opt")]
            c: Option<Arc<str>>,
        }
        let t: T = serde_json::from_str(r#"{"a": "zone-a", "b": null}"#).unwrap();
        assert_eq!(t.a.as_deref(), Some("zone-a"));
        assert_eq!((t.b, t.c), (None, None));
        let y: T = serde_saphyr::from_str("a: zone-a\nb: ~\n").unwrap();
        assert!(Arc::ptr_eq(y.a.as_ref().unwrap(), &shared("zone-a")));
        assert_eq!(y.b, None);
        assert!(serde_json::from_str::<T>(r#"{"a": 1}"#).is_err());
    }
}

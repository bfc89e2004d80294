//! Reading JSON the way the reference plugins do.
//!
//! Go's `encoding/json` matches object keys to struct fields
//! case-insensitively, lets the last occurrence of a key win, ignores
//! unknown keys and treats `null` as absent. Runtimes and tests depend on
//! that (upstream bridge tests send `"RuntimeConfig"`), so every plugin reads
//! its configuration through these helpers instead of a derived deserializer.

use serde_json::{Map, Value};
use thiserror::Error;

/// A value of the wrong JSON type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot decode {path}: expected {expected}, found {found}")]
pub struct JsonTypeError {
    /// Dotted path of the offending key, e.g. `ipam.ranges[0][1].subnet`.
    pub path: String,
    /// What was expected.
    pub expected: &'static str,
    /// The JSON type found.
    pub found: &'static str,
}

/// The name of a JSON value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value of `name` in `obj`, matching keys case-insensitively (ASCII)
/// with the last match in document order winning; `null` counts as absent.
pub fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut found = None;
    for (k, v) in obj {
        if k.eq_ignore_ascii_case(name) {
            found = Some(v);
        }
    }
    found.filter(|v| !v.is_null())
}

/// A typed view of one JSON object, carrying its path for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Obj<'a> {
    /// Views `map`, found at `path` (empty for the root).
    pub fn new(map: &'a Map<String, Value>, path: &'a str) -> Self {
        Obj { map, path }
    }

    /// Views `v` as an object.
    ///
    /// # Errors
    /// `v` is not an object.
    pub fn of(v: &'a Value, path: &'a str) -> Result<Self, JsonTypeError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(JsonTypeError {
                path: display_path(path),
                expected: "object",
                found: type_name(other),
            }),
        }
    }

    /// The underlying map.
    pub fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// The path of a child key.
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        field(self.map, key)
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> JsonTypeError {
        JsonTypeError {
            path: self.child_path(key),
            expected,
            found: type_name(v),
        }
    }

    /// A string field.
    ///
    /// # Errors
    /// The key holds something other than a string.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, JsonTypeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "string", v)),
        }
    }

    /// A boolean field (absent is `false`).
    ///
    /// # Errors
    /// The key holds something other than a boolean.
    pub fn bool(&self, key: &str) -> Result<bool, JsonTypeError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.wrong(key, "boolean", v)),
        }
    }

    /// An object field.
    ///
    /// # Errors
    /// The key holds something other than an object.
    pub fn obj(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, JsonTypeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.wrong(key, "object", v)),
        }
    }

    /// An array field.
    ///
    /// # Errors
    /// The key holds something other than an array.
    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, JsonTypeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "array", v)),
        }
    }

    /// An array of strings.
    ///
    /// # Errors
    /// The key is not an array, or an element is not a string.
    pub fn str_array(&self, key: &str) -> Result<Vec<&'a str>, JsonTypeError> {
        let Some(items) = self.array(key)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(JsonTypeError {
                    path: format!("{}[{i}]", self.child_path(key)),
                    expected: "string",
                    found: type_name(other),
                }),
            })
            .collect()
    }

    /// An unsigned integer field.
    ///
    /// # Errors
    /// The key holds something other than a non-negative integer.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, JsonTypeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "unsigned integer", v)),
        }
    }
}

fn display_path(p: &str) -> String {
    if p.is_empty() {
        "the configuration".to_string()
    } else {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn case_insensitive_last_wins() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"ipam":1,"IPAM":2,"Ipam":3}"#).unwrap_or_default();
        assert_eq!(field(&m, "ipam"), Some(&json!(3)));
        let m: Map<String, Value> = serde_json::from_str(r#"{"a":1,"a":2}"#).unwrap_or_default();
        assert_eq!(field(&m, "A"), Some(&json!(2)));
    }

    #[test]
    fn null_is_absent() {
        let m = map(json!({"x": null}));
        assert_eq!(field(&m, "x"), None);
    }

    #[test]
    fn typed_errors_name_the_path() {
        let m = map(json!({"ipam": {"dataDir": 5}}));
        let root = Obj::new(&m, "");
        let ipam = root.obj("ipam").ok().flatten();
        assert!(ipam.is_some());
        let ipam = Obj::new(ipam.unwrap_or(&m), "ipam");
        let e = ipam.str("dataDir").err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("cannot decode ipam.dataDir: expected string, found number".into())
        );
    }
}

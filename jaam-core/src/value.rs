//! Attribute values: plain JSON-like data plus `Unknown` (known after apply) and redacted secrets.
//!
//! Desired arguments, recorded attributes and plan values all use [`Value`].
//! A value that depends on a resource not created yet is [`Value::Unknown`] and
//! keeps the template it came from, so a saved plan can resolve it during apply
//! without the spec files.
//!
//! # Serialized form
//! Known values serialize as plain JSON. An unknown serializes as
//! `{"$jaam:unknown": "<template>"}`; the key cannot clash with user data
//! because spec maps reject keys starting with `$`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

const UNKNOWN_KEY: &str = "$jaam:unknown";

/// One attribute value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// Absent or explicitly null.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    String(String),
    /// A list.
    List(Vec<Value>),
    /// A map with sorted keys.
    Map(BTreeMap<String, Value>),
    /// Not known until apply: the template that will produce it.
    Unknown(String),
}

/// The attributes of one resource, keyed by name.
pub type Attrs = BTreeMap<String, Value>;

impl Value {
    /// Whether this value, or anything inside it, is unknown.
    pub fn has_unknown(&self) -> bool {
        match self {
            Value::Unknown(_) => true,
            Value::List(items) => items.iter().any(Value::has_unknown),
            Value::Map(map) => map.values().any(Value::has_unknown),
            _ => false,
        }
    }

    /// Whether this value holds an unknown that carries a template to resolve
    /// (computed placeholders, with an empty template, are skipped).
    pub fn has_unknown_template(&self) -> bool {
        match self {
            Value::Unknown(template) => !template.is_empty(),
            Value::List(items) => items.iter().any(Value::has_unknown_template),
            Value::Map(map) => map.values().any(Value::has_unknown_template),
            _ => false,
        }
    }

    /// The text, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The integer, when this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(number) => Some(*number),
            _ => None,
        }
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type's name as a user reads it in an error.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Unknown(_) => "unknown",
        }
    }

    /// Converts to JSON; unknowns become their marker object.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(map) => {
                J::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Unknown(template) => {
                let mut object = serde_json::Map::new();
                object.insert(UNKNOWN_KEY.to_owned(), J::String(template.clone()));
                J::Object(object)
            }
        }
    }

    /// Converts from JSON, reading unknown markers back.
    pub fn from_json(json: serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => n
                .as_i64()
                .map_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)), Value::Int),
            J::String(s) => Value::String(s),
            J::Array(items) => Value::List(items.into_iter().map(Value::from_json).collect()),
            J::Object(mut object) => {
                if object.len() == 1
                    && let Some(J::String(template)) = object.get(UNKNOWN_KEY)
                {
                    return Value::Unknown(template.clone());
                }
                Value::Map(
                    std::mem::take(&mut object)
                        .into_iter()
                        .map(|(k, v)| (k, Value::from_json(v)))
                        .collect(),
                )
            }
        }
    }

    /// A short single-line rendering for plans and errors: strings quoted, unknowns as
    /// `(known after apply)`.
    pub fn render(&self) -> String {
        match self {
            Value::Unknown(_) => "(known after apply)".to_owned(),
            Value::String(s) => format!("{s:?}"),
            Value::Null => "null".to_owned(),
            Value::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Value::render)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Map(map) if map.is_empty() => "{}".to_owned(),
            Value::Map(map) => {
                let entries: Vec<String> = map
                    .iter()
                    .map(|(key, value)| format!("{key} = {}", value.render()))
                    .collect();
                format!("{{ {} }}", entries.join(", "))
            }
            other => other.to_json().to_string(),
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::String(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::String(text)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Int(number)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Bool(flag)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::String(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, value)?;
                }
                out.end()
            }
            Value::Unknown(template) => {
                let mut out = serializer.serialize_map(Some(1))?;
                out.serialize_entry(UNKNOWN_KEY, template)?;
                out.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = BTreeMap::new();
        while let Some((key, value)) = access.next_entry::<String, Value>()? {
            map.insert(key, value);
        }
        if map.len() == 1
            && let Some(Value::String(template)) = map.get(UNKNOWN_KEY)
        {
            return Ok(Value::Unknown(template.clone()));
        }
        Ok(Value::Map(map))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A list-of-strings argument (`domains`, `values`) as plain strings; anything
/// else (absent, null, unknown) is empty.
pub fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A map-of-strings argument (`tags`, `env`) as a plain map; anything else is empty.
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    match value {
        Some(Value::Map(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A secret: webhook secrets, private keys, tokens.
///
/// `Display` and `Debug` print `(sensitive)`; reading the text needs an explicit
/// [`Secret::expose`]. It does not implement `Serialize`, so it cannot reach a
/// state file or a plan by accident; [`Secret::fingerprint`] is what state keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret text. Call only where the value must leave the process (an API call).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A keyed SHA-256 fingerprint (`sha256:…`) for change detection in state.
    /// `salt` is the stack lineage, so equal secrets in two stacks fingerprint apart.
    pub fn fingerprint(&self, salt: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(salt.as_bytes());
        hasher.update([0u8]);
        hasher.update(self.0.as_bytes());
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(sensitive)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_should_survive_a_json_round_trip() {
        let value = Value::List(vec![
            Value::Unknown("${instance.a.public_ip}".into()),
            3.into(),
        ]);
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, r#"[{"$jaam:unknown":"${instance.a.public_ip}"},3]"#);
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), value);
        assert!(value.has_unknown());
    }

    #[test]
    fn render_should_show_nested_unknowns_readably() {
        let mut map = Attrs::new();
        map.insert("app".into(), "blog".into());
        map.insert("logs".into(), Value::Unknown("${log_group.a.arn}".into()));
        assert_eq!(
            Value::Map(map).render(),
            r#"{ app = "blog", logs = (known after apply) }"#
        );
        assert_eq!(
            Value::List(vec![1.into(), "x".into()]).render(),
            r#"[1, "x"]"#
        );
    }

    #[test]
    fn secret_should_never_display_its_text() {
        let secret = Secret::new("hunter2");
        assert_eq!(
            format!("{secret} {secret:?}"),
            "(sensitive) Secret(sensitive)"
        );
        assert!(!secret.fingerprint("lineage").contains("hunter2"));
        assert_ne!(secret.fingerprint("a"), secret.fingerprint("b"));
    }
}

//! Resource schemas: each kind declares its arguments, computed attributes, which
//! arguments force a replacement, and how a replacement is ordered.
//!
//! The spec loader validates arguments against the schema (unknown field, wrong
//! type, missing required) and the planner diffs by it, so a new kind gets both
//! by declaring a [`Schema`].

use crate::value::Value;

/// The type of an attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// Text.
    String,
    /// An integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// A list of one element type.
    List(Box<Type>),
    /// A map from strings to one value type.
    Map(Box<Type>),
    /// A document of any shape (maps, lists, strings, numbers, bools nested
    /// freely): an IAM policy written as YAML.
    Document,
}

impl Type {
    /// The type's name as a user reads it in an error.
    pub fn describe(&self) -> String {
        match self {
            Type::String => "string".to_owned(),
            Type::Int => "integer".to_owned(),
            Type::Bool => "bool".to_owned(),
            Type::List(inner) => format!("list of {}", inner.describe()),
            Type::Map(inner) => format!("map of {}", inner.describe()),
            Type::Document => "document".to_owned(),
        }
    }

    /// Whether `value` fits this type. Unknown and null values always fit; whether
    /// a null is allowed is the attribute's [`Mode`]'s business.
    pub fn accepts(&self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Unknown(_) | Value::Null) | (Type::Document, _) => true,
            (Type::String, Value::String(_))
            | (Type::Int, Value::Int(_))
            | (Type::Bool, Value::Bool(_)) => true,
            (Type::List(inner), Value::List(items)) => items.iter().all(|item| inner.accepts(item)),
            (Type::Map(inner), Value::Map(map)) => map.values().all(|item| inner.accepts(item)),
            _ => false,
        }
    }
}

/// Who sets an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The user must set it.
    Required,
    /// The user may set it; when unset it is null (or the attribute's default).
    Optional,
    /// The user may set it; when unset the cloud picks, and the plan does not diff it.
    OptionalComputed,
    /// Only the cloud sets it (`id`, `arn`, `public_ip`).
    Computed,
}

/// One attribute of a kind.
#[derive(Clone, Debug)]
pub struct Attribute {
    /// Its name, as written in specs and state.
    pub name: &'static str,
    /// Its type.
    pub ty: Type,
    /// Who sets it.
    pub mode: Mode,
    /// Whether changing it replaces the resource instead of updating it in place.
    pub force_new: bool,
    /// Whether the value is a secret: redacted in output, fingerprinted in state.
    pub sensitive: bool,
    /// The value used when the user leaves an optional argument unset.
    pub default: Option<Value>,
    /// A check of a known value beyond its type (allowed values, ranges); the
    /// message says what is allowed.
    pub check: Option<fn(&Value) -> Result<(), String>>,
    /// For a computed attribute: the arguments whose in-place update changes
    /// it (an instance's `public_ip` after the stop/start of an
    /// `instance_type` change). Such an update plans it as unknown, so
    /// dependents follow in the same apply.
    pub changes_with: &'static [&'static str],
}

impl Attribute {
    /// A required argument.
    pub fn required(name: &'static str, ty: Type) -> Self {
        Self {
            name,
            ty,
            mode: Mode::Required,
            force_new: false,
            sensitive: false,
            default: None,
            check: None,
            changes_with: &[],
        }
    }

    /// An optional argument.
    pub fn optional(name: &'static str, ty: Type) -> Self {
        Self {
            mode: Mode::Optional,
            ..Self::required(name, ty)
        }
    }

    /// An attribute only the cloud sets.
    pub fn computed(name: &'static str, ty: Type) -> Self {
        Self {
            mode: Mode::Computed,
            ..Self::required(name, ty)
        }
    }

    /// Marks a change of this argument as forcing replacement.
    #[must_use]
    pub fn force_new(mut self) -> Self {
        self.force_new = true;
        self
    }

    /// Marks the value as a secret.
    #[must_use]
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// Sets the default used when the argument is unset.
    #[must_use]
    pub fn default_value(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// Adds a value check run when specs are loaded.
    #[must_use]
    pub fn checked(mut self, check: fn(&Value) -> Result<(), String>) -> Self {
        self.check = Some(check);
        self
    }

    /// Marks a computed attribute as changed by an in-place update of any
    /// of `arguments`.
    #[must_use]
    pub fn changes_with(mut self, arguments: &'static [&'static str]) -> Self {
        self.changes_with = arguments;
        self
    }

    /// Whether the user may set it.
    pub fn is_argument(&self) -> bool {
        self.mode != Mode::Computed
    }
}

/// How a replacement is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaceOrder {
    /// Create the new resource, then delete the old one (no gap; needs distinct names).
    CreateThenDelete,
    /// Delete the old resource, then create the new one (the name is reused).
    DeleteThenCreate,
}

/// The schema of one resource kind.
#[derive(Clone, Debug)]
pub struct Schema {
    /// The kind: `log_group`, `instance`, …
    pub kind: &'static str,
    /// Every attribute, arguments and computed.
    pub attributes: Vec<Attribute>,
    /// How a forced replacement is ordered.
    pub replace_order: ReplaceOrder,
    /// Whether a resource created by an interrupted apply can be found again by its
    /// ownership tags or natural key. When true, an intent record need not be durable
    /// before the create call; when false the engine waits for its fsync first.
    pub adoptable: bool,
    /// How long a create interrupted by a crash may still be in flight at the
    /// cloud (a request sent just before the crash can land after the next run's
    /// refresh). When non-zero, the create's intent is made durable before the
    /// call, and the next plan, finding nothing for such an intent, looks again
    /// with backoff for up to this long before planning a new create. Kinds whose
    /// natural key is unique in the cloud (log group names, record sets) need none.
    pub in_flight_grace: std::time::Duration,
}

impl Schema {
    /// The attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|attribute| attribute.name == name)
    }

    /// Replaces every sensitive value in `attributes` by its fingerprint
    /// ([`crate::value::Secret::fingerprint`], salted with `salt`, the stack's lineage).
    /// Values already sealed, nulls and unknowns are left as they are. State,
    /// journal and refresh results go through this, so a secret is never stored.
    pub fn seal(&self, salt: &str, attributes: &mut crate::value::Attrs) {
        for attribute in self.attributes.iter().filter(|a| a.sensitive) {
            if let Some(value) = attributes.get_mut(attribute.name) {
                *value = seal_value(salt, value);
            }
        }
    }

    /// The arguments: attributes a user may set.
    pub fn arguments(&self) -> impl Iterator<Item = &Attribute> {
        self.attributes
            .iter()
            .filter(|attribute| attribute.is_argument())
    }
}

/// The sealed form of one value (see [`Schema::seal`]).
pub fn seal_value(salt: &str, value: &Value) -> Value {
    let is_fingerprint = |text: &str| {
        text.strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    match value {
        Value::Null | Value::Unknown(_) => value.clone(),
        Value::String(text) if is_fingerprint(text) => value.clone(),
        Value::String(text) => {
            Value::String(crate::value::Secret::new(text.clone()).fingerprint(salt))
        }
        other => {
            Value::String(crate::value::Secret::new(other.to_json().to_string()).fingerprint(salt))
        }
    }
}

/// A check that a string value is one of `allowed`; `what` names the set
/// ("a record type jaam manages").
///
/// # Errors
/// The message a spec error shows.
pub fn one_of(value: &Value, allowed: &[&str], what: &str) -> Result<(), String> {
    match value.as_str() {
        Some(text) if allowed.contains(&text) => Ok(()),
        _ => Err(format!(
            "{} is not {what}; use one of {}",
            value.render(),
            allowed.join(", ")
        )),
    }
}

/// The closest of `candidates` to `word`, when one is close enough to suggest.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_should_suggest_close_names_only() {
        let names = ["retention_days", "name", "tags"];
        assert_eq!(did_you_mean("retention_day", names), Some("retention_days"));
        assert_eq!(did_you_mean("colour", names), None);
    }

    #[test]
    fn type_should_accept_unknown_and_reject_mismatch() {
        let tags = Type::Map(Box::new(Type::String));
        assert!(tags.accepts(&Value::Unknown("x".into())));
        assert!(!Type::Int.accepts(&Value::String("14".into())));
        assert!(Type::List(Box::new(Type::String)).accepts(&Value::List(vec!["a".into()])));
    }
}

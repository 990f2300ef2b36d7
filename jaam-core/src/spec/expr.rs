//! String templates with references: `${kind.name.attr}` and `${env.NAME}`.
//!
//! `$${` writes a literal `${`. A string that is exactly one resource reference
//! takes the referenced value's type (a number stays a number); otherwise the
//! parts are joined as text. A reference's name may itself contain dots (the
//! addresses a `site` expands into): the first segment is the kind, the last the
//! attribute, the rest the name.

use crate::addr::ResourceAddr;
use crate::value::Value;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// An attribute of another resource.
    Resource {
        /// The resource.
        addr: ResourceAddr,
        /// Its attribute.
        attribute: String,
    },
    /// An environment variable.
    Env(String),
}

/// A parsed string template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// The source text, kept so an unknown value can be re-resolved at apply time.
    pub source: String,
    /// The pieces in order.
    pub parts: Vec<Part>,
}

/// Why a template does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without a closing `}`.
    #[error("unterminated reference: `${{` without a closing `}}`")]
    Unterminated,
    /// The text between `${` and `}` is not `env.NAME` or `kind.name.attribute`.
    #[error(
        "`${{{0}}}` is not a reference (expected `${{kind.name.attribute}}` or `${{env.NAME}}`)"
    )]
    Malformed(String),
}

impl Template {
    /// Parses `source`.
    ///
    /// # Errors
    /// [`TemplateError`] when a `${…}` is unterminated or malformed.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(start) = rest.find('$') {
            text.push_str(&rest[..start]);
            let after = &rest[start..];
            if let Some(stripped) = after.strip_prefix("$${") {
                text.push_str("${");
                rest = stripped;
            } else if let Some(stripped) = after.strip_prefix("${") {
                let end = stripped.find('}').ok_or(TemplateError::Unterminated)?;
                let inner = stripped[..end].trim();
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(parse_reference(inner)?);
                rest = &stripped[end + 1..];
            } else {
                text.push('$');
                rest = &after[1..];
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// Whether the template has any reference at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|part| matches!(part, Part::Text(_)))
    }

    /// The resources it references.
    pub fn resource_refs(&self) -> impl Iterator<Item = (&ResourceAddr, &str)> {
        self.parts.iter().filter_map(|part| match part {
            Part::Resource { addr, attribute } => Some((addr, attribute.as_str())),
            _ => None,
        })
    }

    /// Evaluates the template. `lookup` answers a resource reference (returning
    /// [`Value::Unknown`] for values known only after apply); `env` answers an
    /// environment variable. A missing answer evaluates to unknown.
    pub fn evaluate(
        &self,
        lookup: &dyn Fn(&ResourceAddr, &str) -> Option<Value>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Value {
        let resolve = |part: &Part| -> Value {
            match part {
                Part::Text(text) => Value::String(text.clone()),
                Part::Resource { addr, attribute } => {
                    lookup(addr, attribute).unwrap_or(Value::Unknown(String::new()))
                }
                Part::Env(name) => env(name).map_or(Value::Unknown(String::new()), Value::String),
            }
        };
        if let [only] = self.parts.as_slice() {
            return match resolve(only) {
                Value::Unknown(_) => Value::Unknown(self.source.clone()),
                value => value,
            };
        }
        let mut out = String::new();
        for part in &self.parts {
            match resolve(part) {
                Value::Unknown(_) => return Value::Unknown(self.source.clone()),
                Value::String(text) => out.push_str(&text),
                Value::Null => {}
                other => out.push_str(&other.to_json().to_string()),
            }
        }
        Value::String(out)
    }
}

fn parse_reference(inner: &str) -> Result<Part, TemplateError> {
    let malformed = || TemplateError::Malformed(inner.to_owned());
    if let Some(name) = inner.strip_prefix("env.") {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return if valid {
            Ok(Part::Env(name.to_owned()))
        } else {
            Err(malformed())
        };
    }
    let (address, attribute) = inner.rsplit_once('.').ok_or_else(malformed)?;
    let addr: ResourceAddr = address.parse().map_err(|_| malformed())?;
    if attribute.is_empty()
        || !attribute
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(malformed());
    }
    Ok(Part::Resource {
        addr,
        attribute: attribute.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_should_split_text_and_references() {
        let template = Template::parse("http://${instance.web.public_ip}:80/$${x}").unwrap();
        assert_eq!(template.parts.len(), 3);
        assert_eq!(template.parts[2], Part::Text(":80/${x}".into()));
        assert!(Template::parse("plain").unwrap().is_literal());
        assert_eq!(
            Template::parse("${oops").unwrap_err(),
            TemplateError::Unterminated
        );
        assert!(matches!(
            Template::parse("${justone}"),
            Err(TemplateError::Malformed(_))
        ));
    }

    #[test]
    fn single_reference_should_keep_its_type_and_unknown_should_keep_source() {
        let template = Template::parse("${log_group.a.retention_days}").unwrap();
        let known = template.evaluate(&|_, _| Some(Value::Int(14)), &|_| None);
        assert_eq!(known, Value::Int(14));
        let joined = Template::parse("x-${log_group.a.arn}").unwrap();
        let unknown = joined.evaluate(&|_, _| Some(Value::Unknown(String::new())), &|_| None);
        assert_eq!(unknown, Value::Unknown("x-${log_group.a.arn}".into()));
    }
}

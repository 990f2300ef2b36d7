//! What a `site`'s arguments may hold, checked at `validate` where each value
//! lands: in user data, in the deploy script (inside single quotes), in an
//! nginx configuration, or on a `git` command line.
//!
//! # Guarantees
//! - No value written into a generated file has a line break, so none can end
//!   a heredoc early or start a line of its own; and none is one of the
//!   heredoc delimiters the generator uses ([`DELIMITERS`]).
//! - Values pasted unquoted (nginx's `server_name`, `root`; the `node_version`
//!   inside package names) are restricted to characters that have no meaning
//!   there.
//! - `repo_url` is a remote `git` fetches over HTTPS or SSH, never an option.
//!
//! Each check returns a message that says what is allowed; the loader adds
//! the file, line and column and the site's address.

use crate::value::Value;

/// The heredoc delimiters of the generated user data.
pub const DELIMITERS: &[&str] = &[
    "JAAM_ENV",
    "JAAM_SECRETS",
    "JAAM_DEPLOY",
    "JAAM_UNIT",
    "JAAM_NGINX",
    "JAAM_HOOK",
    "JAAM_AGENT",
];

/// The site arguments whose values end up in the instance's user data or in a
/// script it runs: `${env.…}` is refused in them (a secret read from jaam's
/// environment would land in user data, state and plan output in clear).
pub const IN_USER_DATA: &[&str] = &[
    "repo",
    "branch",
    "repo_url",
    "repo_token",
    "framework",
    "install",
    "build",
    "start",
    "output_dir",
    "node_version",
    "port",
    "env",
    "secrets",
    "domain",
    "keep_releases",
    "previews",
];

/// A line break or a heredoc delimiter in `text`, described.
fn line_safety(text: &str) -> Result<(), String> {
    if text.contains(['\n', '\r']) {
        return Err(
            "line breaks are not allowed (the value is written into a generated script)".into(),
        );
    }
    if text.contains('\0') {
        return Err("NUL characters are not allowed".into());
    }
    if let Some(delimiter) = DELIMITERS.iter().find(|d| text.trim() == **d) {
        return Err(format!(
            "`{delimiter}` is a delimiter of the generated user data"
        ));
    }
    Ok(())
}

/// Any string that lands in a generated script: one line, no delimiter.
pub fn one_line(value: &Value) -> Result<(), String> {
    value.as_str().map_or(Ok(()), line_safety)
}

/// `owner/name`, with the characters GitHub allows.
pub fn repo(value: &Value) -> Result<(), String> {
    let ok = value.as_str().is_some_and(|repo| {
        repo.split_once('/').is_some_and(|(owner, name)| {
            let part = |p: &str| {
                !p.is_empty()
                    && !p.starts_with(['-', '.'])
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            part(owner) && part(name)
        })
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a repository; write owner/name",
            value.render()
        ))
    }
}

/// A branch name `git check-ref-format` would accept, not an option.
pub fn branch(value: &Value) -> Result<(), String> {
    let Some(branch) = value.as_str() else {
        return Ok(());
    };
    let bad = branch.is_empty()
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("@{")
        || branch.contains("//")
        || !branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+".contains(c));
    if bad {
        Err(format!(
            "{} is not a branch name jaam deploys (letters, digits, `-_./+`, not starting with `-`)",
            value.render()
        ))
    } else {
        Ok(())
    }
}

/// `https://host/path` or `git@host:path`: what `git fetch` is given.
pub fn repo_url(value: &Value) -> Result<(), String> {
    let Some(url) = value.as_str() else {
        return Ok(());
    };
    line_safety(url)?;
    let safe = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~/:@%+".contains(c))
    };
    let ok = if let Some(rest) = url.strip_prefix("https://") {
        let host = rest.split('/').next().unwrap_or_default();
        // Credentials in the URL would land in user data: use `repo_token`.
        !host.contains('@') && safe(rest)
    } else if let Some(rest) = url.strip_prefix("git@") {
        rest.split_once(':')
            .is_some_and(|(host, path)| safe(host) && safe(path) && !path.starts_with('-'))
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a clone URL jaam fetches: write https://host/owner/name.git \
             (no credentials in it; see `repo_token`) or git@host:owner/name.git",
            value.render()
        ))
    }
}

/// A Node.js version: `20`, `20.11` or `20.11.1`.
pub fn node_version(value: &Value) -> Result<(), String> {
    let Some(version) = value.as_str() else {
        return Ok(());
    };
    let parts: Vec<&str> = version.split('.').collect();
    let ok = parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a Node.js version such as 20 or 20.11.1",
            value.render()
        ))
    }
}

/// A relative path inside the build, with no `..` (it goes into nginx's `root`).
pub fn output_dir(value: &Value) -> Result<(), String> {
    let Some(dir) = value.as_str() else {
        return Ok(());
    };
    let ok = !dir.is_empty()
        && !dir.starts_with('/')
        && dir.split('/').all(|part| part != "..")
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a directory inside the build: write a relative path of letters, \
             digits and `-_./`, without `..`",
            value.render()
        ))
    }
}

/// A DNS name (it goes into nginx's `server_name` and the certificate).
pub fn domain(value: &Value) -> Result<(), String> {
    let Some(domain) = value.as_str() else {
        return Ok(());
    };
    let name = domain.strip_suffix('.').unwrap_or(domain);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not a domain name", value.render()))
    }
}

/// An SSM Parameter Store name such as `/blog/api-key`.
pub fn parameter_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with('/')
        && name.len() <= 2048
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an SSM parameter name such as /blog/DATABASE_URL"
        ))
    }
}

/// A port a server app listens on (it and the next one are used).
pub fn port(value: &Value) -> Result<(), String> {
    match value.as_int() {
        Some(port) if (1024..=65534).contains(&port) => Ok(()),
        Some(port) => Err(format!("{port} is not a port between 1024 and 65534")),
        None => Ok(()),
    }
}

/// At least one release is kept.
pub fn keep_releases(value: &Value) -> Result<(), String> {
    match value.as_int() {
        Some(keep) if (1..=100).contains(&keep) => Ok(()),
        Some(keep) => Err(format!("{keep} is not between 1 and 100")),
        None => Ok(()),
    }
}

/// `env`: variable names, one-line values.
pub fn env(value: &Value) -> Result<(), String> {
    let Value::Map(map) = value else {
        return Ok(());
    };
    for (name, item) in map {
        if !is_env_name(name) {
            return Err(format!("`{name}` is not an environment variable name"));
        }
        if let Some(text) = item.as_str() {
            line_safety(text).map_err(|message| format!("`{name}`: {message}"))?;
        }
    }
    Ok(())
}

/// `secrets`: variable names mapped to parameter names.
pub fn secrets(value: &Value) -> Result<(), String> {
    let Value::Map(map) = value else {
        return Ok(());
    };
    for (name, parameter) in map {
        if !is_env_name(name) {
            return Err(format!("`{name}` is not an environment variable name"));
        }
        let parameter = parameter.as_str().unwrap_or_default();
        parameter_name(parameter).map_err(|message| format!("`{name}`: {message}"))?;
    }
    Ok(())
}

/// Whether `text` is an IPv4 or IPv6 CIDR with its prefix length.
pub fn is_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(address, bits)| {
        let bits = bits.parse::<u8>().ok();
        match address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => bits.is_some_and(|b| b <= 32),
            Ok(std::net::IpAddr::V6(_)) => bits.is_some_and(|b| b <= 128),
            Err(_) => false,
        }
    })
}

/// A list of CIDRs (`ssh_from`).
pub fn cidrs(value: &Value) -> Result<(), String> {
    let Value::List(items) = value else {
        return Ok(());
    };
    for item in items.iter().filter_map(Value::as_str) {
        if !is_cidr(item) {
            return Err(format!(
                "`{item}` is not a CIDR such as 203.0.113.7/32 or 2001:db8::/48"
            ));
        }
    }
    Ok(())
}

/// A parameter name (for `repo_token`).
pub fn parameter(value: &Value) -> Result<(), String> {
    value.as_str().map_or(Ok(()), parameter_name)
}

pub(super) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `text` is a commit id: 7 to 64 hexadecimal digits.
pub fn is_commit(text: &str) -> bool {
    (7..=64).contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// A pinned commit: hexadecimal (what the deploy script is given).
pub fn revision(value: &Value) -> Result<(), String> {
    match value.as_str() {
        Some(revision) if !is_commit(revision) => Err(format!(
            "{} is not a commit id (7 to 64 hexadecimal digits); leave `revision` out \
             to deploy the branch head",
            value.render()
        )),
        _ => Ok(()),
    }
}

/// The shortest secret a webhook may have: GitHub signs deliveries with it,
/// and the daemon trusts a delivery only as far as its secret is unguessable.
pub const MIN_SECRET_BYTES: usize = 16;

/// A webhook secret (never shown in the message) of at least
/// [`MIN_SECRET_BYTES`]; used by the `webhook` kind and a site's
/// `webhook_secret`.
pub fn webhook_secret(value: &Value) -> Result<(), String> {
    match value.as_str() {
        Some(secret) if secret.len() < MIN_SECRET_BYTES => Err(format!(
            "a webhook secret must be at least {MIN_SECRET_BYTES} bytes (this one has {}); \
             leave it out and jaam generates one into SSM Parameter Store",
            secret.len()
        )),
        _ => Ok(()),
    }
}

/// The most previews one site may keep (each is a build and, for a server
/// app, a process on the site's instance).
pub const MAX_PREVIEWS: i64 = 20;

/// `previews`: `enabled`, `domain` (a pattern with `{number}` in its first
/// label and optionally `{domain}`), `max` (1 to [`MAX_PREVIEWS`]), `forks`
/// and `secrets` (booleans).
pub fn previews(value: &Value) -> Result<(), String> {
    let Value::Map(map) = value else {
        return if value.is_null() {
            Ok(())
        } else {
            Err("`previews` is a map such as {enabled: true}".into())
        };
    };
    for (key, item) in map {
        match (key.as_str(), item) {
            ("enabled" | "forks" | "secrets", Value::Bool(_)) => {}
            ("enabled" | "forks" | "secrets", other) => {
                return Err(format!(
                    "previews.{key} is {}, not true or false",
                    other.render()
                ));
            }
            ("max", Value::Int(max)) if (1..=MAX_PREVIEWS).contains(max) => {}
            ("max", other) => {
                return Err(format!(
                    "previews.max is {}, not a number from 1 to {MAX_PREVIEWS}",
                    other.render()
                ));
            }
            ("domain", Value::String(pattern)) => preview_domain(pattern)?,
            ("domain", other) => {
                return Err(format!(
                    "previews.domain is {}, not a pattern such as \"pr-{{number}}.{{domain}}\"",
                    other.render()
                ));
            }
            (other, _) => {
                return Err(format!(
                    "previews has no `{other}` (it takes enabled, domain, max, forks and secrets)"
                ));
            }
        }
    }
    Ok(())
}

/// A preview domain pattern: `{number}` inside its first label (the
/// previews share one wildcard record and certificate, `*.<the rest>`).
fn preview_domain(pattern: &str) -> Result<(), String> {
    let hint = "previews.domain must have `{number}` in its first label, such as \
                \"pr-{number}.{domain}\" (the previews share a wildcard record and certificate)";
    let Some((first, _)) = pattern.split_once('.') else {
        return Err(format!("`{pattern}`: {hint}"));
    };
    if first.matches("{number}").count() != 1 || pattern.matches("{number}").count() != 1 {
        return Err(format!("`{pattern}`: {hint}"));
    }
    let sample = pattern
        .replace("{number}", "1")
        .replace("{domain}", "example.com");
    domain(&Value::String(sample)).map_err(|_| {
        format!("`{pattern}` does not make domain names (with {{number}} = 1): {hint}")
    })
}

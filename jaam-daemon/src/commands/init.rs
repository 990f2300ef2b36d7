//! `jaam init`: a starter site spec for a repository, so the first plan is
//! one command away.
//!
//! # Decisions
//! - The framework is detected from the repository's `package.json`, read
//!   through the GitHub API at init time (not at deploy time): the spec then
//!   says what was chosen and the user can change it before the first plan.
//!   The rules are `framework: auto`'s ([`jaam_core::spec::site::detect`]):
//!   `next` → `nextjs`; `vite` → `static` with `output_dir: dist`;
//!   `react-scripts` → `static` with `output_dir: build`; a `start` script →
//!   `node`; otherwise `static`. Writing the result pins it (a site that
//!   says nothing is `auto`, detected again for every commit). Without a token or a readable
//!   `package.json`, `static` is written with a comment saying why.
//! - It writes `<specs>/<name>.yaml` and never overwrites a file.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{Global, InitArgs};

/// What a repository's `package.json` says the site is: framework, and the
/// build output directory for static sites (`framework: auto`'s rules,
/// [`jaam_core::spec::site::detect`]).
pub(crate) fn detect(package_json: &str) -> (&'static str, Option<&'static str>) {
    let detected = jaam_core::spec::site::detect(Some(package_json));
    (detected.framework.name(), detected.output_dir)
}

pub(crate) async fn run(global: &Global, args: &InitArgs) -> anyhow::Result<ExitCode> {
    let repo = args.repo.as_deref().unwrap_or("owner/repo");
    let (owner, name) = repo
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .with_context(|| format!("`{repo}` is not a repository; write owner/name"))?;
    let site = args.name.clone().unwrap_or_else(|| {
        name.to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    });
    let zone = args
        .zone
        .clone()
        .unwrap_or_else(|| "example.com".to_owned());
    let domain = args
        .domain
        .clone()
        .unwrap_or_else(|| format!("{site}.{zone}"));
    let api = jaam_core::providers::github::Api::from_env();
    let read = match &args.repo {
        Some(repo) => api.file(repo, "package.json").await,
        None => Ok(None),
    };
    let (framework, output_dir, note) = match read {
        Ok(None) if args.repo.is_none() => (
            "static",
            None,
            "set `repo` to yours; `jaam init --repo owner/name` detects the framework".to_owned(),
        ),
        Ok(Some(text)) => {
            let (framework, output_dir) = detect(&text);
            (
                framework,
                output_dir,
                format!("detected from {owner}/{name}'s package.json"),
            )
        }
        Ok(None) => ("static", None, format!("{repo} has no package.json")),
        Err(error) => (
            "static",
            None,
            format!(
                "could not read package.json ({}); check GITHUB_TOKEN",
                error.message
            ),
        ),
    };
    let mut spec = format!(
        "# A site built from {repo} and served at https://{domain}.\n\
         # `jaam plan` shows what it creates; see the README for every argument.\n\
         site.{site}:\n  repo: {repo}\n  branch: {branch}\n  framework: {framework}   # {note}\n",
        branch = args.branch,
    );
    if let Some(dir) = output_dir {
        spec.push_str(&format!("  output_dir: {dir}\n"));
    }
    spec.push_str(&format!(
        "  domain: {domain}\n  zone: {zone}              # a Route53 hosted zone you own\n"
    ));
    std::fs::create_dir_all(&global.specs)
        .with_context(|| format!("cannot create `{}`", global.specs.display()))?;
    let path = global.specs.join(format!("{site}.yaml"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot write `{}` (an existing file is never overwritten)",
                path.display()
            )
        })?;
    std::io::Write::write_all(&mut file, spec.as_bytes())?;
    println!(
        "Wrote `{}`: site.{site}, framework {framework} ({note}).\nNext: jaam plan",
        path.display()
    );
    super::success()
}

#[cfg(test)]
mod tests {
    use super::detect;

    #[test]
    fn frameworks_should_be_detected_from_package_json() {
        assert_eq!(
            detect(r#"{"dependencies":{"next":"15"}}"#),
            ("nextjs", None)
        );
        assert_eq!(
            detect(r#"{"devDependencies":{"vite":"6"}}"#),
            ("static", Some("dist"))
        );
        assert_eq!(
            detect(r#"{"dependencies":{"react-scripts":"5"}}"#),
            ("static", Some("build"))
        );
        assert_eq!(
            detect(r#"{"scripts":{"start":"node s.js"}}"#),
            ("node", None)
        );
        assert_eq!(detect("{}"), ("static", None));
        assert_eq!(detect("not json"), ("static", None));
    }
}

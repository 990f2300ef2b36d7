//! Golden tests of the `site` expansion and of what it generates. The shell
//! scripts are linted with shellcheck and run for real in the end-to-end tests.

use std::sync::Arc;

use super::*;
use crate::provider::Registry;
use crate::testing::FakeProvider;

/// A registry with the five primitive kinds' real schemas (fake behaviour).
fn registry() -> Registry {
    let mut registry = Registry::new();
    for schema in [
        crate::providers::aws::logs::schema(),
        crate::providers::aws::ec2::schema(),
        crate::providers::aws::route53::schema(),
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
        &|name| (name == "HOOK_SECRET").then(|| "s3cret-value".to_owned()),
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
fn a_site_should_expand_into_its_five_resources() {
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
}

#[test]
fn a_server_site_without_https_or_webhook_should_expand_into_three() {
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
        ["site.api.instance", "site.api.log_group", "site.api.record"]
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
    let text = user_data.as_str().unwrap();
    assert!(!text.contains("s3cret-value"));
    assert!(
        text.contains("--name /blog/api-key"),
        "fetched on the instance"
    );
    assert!(
        text.contains("PUBLIC_TITLE='My blog'"),
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

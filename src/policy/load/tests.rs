//! Tests of [`super`] (test code only: it is compiled under `#[cfg(test)]`).
#![cfg(test)]

use super::*;
use crate::oci::manifest::Platform;
use crate::oci::names::RepositoryName;

#[test]
fn modes_are_written_as_their_word() {
    crate::vocabulary::assert_serde_agrees::<Mode>();
    assert!("Promote".parse::<Mode>().is_err(), "one spelling");
}

fn repo(s: &str) -> RepositoryName {
    RepositoryName::parse(s).unwrap()
}

#[test]
fn defaults() {
    let d = Policy::default();
    assert_eq!(d.mode, Mode::Promote);
    assert!(!d.delete_orphans);
    assert!(!d.dry_run);
    assert_eq!(d.tag_template.as_str(), crate::policy::template::DEFAULT_TAG_TEMPLATE);
}

#[test]
fn the_example_files_default_section_is_the_built_in_default() {
    // Its header says the values shown are the built-in defaults.
    let text = include_str!("../../../policy.example.toml");
    let set = PolicySet::from_toml(text)
        .and_then(|p| p.with_organizational_units(&OrganizationalUnits::default()))
        .unwrap();
    assert_eq!(set.default, Policy::default());
}

#[test]
fn the_example_file_loads_as_is_and_its_commented_unit_rule_once_uncommented() {
    let text = include_str!("../../../policy.example.toml");
    // As shipped: with no organisational units listed, as a new user has it.
    let set = PolicySet::from_toml(text)
        .and_then(|p| p.with_organizational_units(&OrganizationalUnits::default()))
        .unwrap();
    assert!(!set.rules.is_empty());
    // The unit rule, uncommented, with its unit listed.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with("[[rules]]")
                    || rest.starts_with("name = \"platform-ou")
                    || rest.starts_with("organizational_units")
                    || rest.starts_with("mode = ")
                    || rest.starts_with("repository_tag") =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let units = OrganizationalUnits::parse("ou-ab12-cdef3456=333333333333").unwrap();
    let set = PolicySet::from_toml(&uncommented)
        .unwrap()
        .with_organizational_units(&units)
        .unwrap();
    assert_eq!(
        set.select_for(&repo("any"), Some(&AccountId::parse("333333333333").unwrap()))
            .rule,
        "platform-ou-opt-in"
    );
}

#[test]
fn rules_inherit_default_and_first_match_wins() {
    let set = PolicySet::from_toml(
        r#"
        [default]
        mode = "observe"
        max_deletes = 3

        [[rules]]
        name = "lambdas"
        repositories = ["lambda/**"]
        mode = "promote"
        promote_platform = "linux/arm64"
        delete_orphans = true
        keep_tag = false

        [[rules]]
        repositories = ["lambda/special", "web-*"]
        mode = "strip"
        "#,
    )
    .unwrap();
    let s = set.select(&repo("lambda/orders"));
    assert_eq!(s.rule, "lambdas");
    assert_eq!(s.policy.mode, Mode::Promote);
    assert_eq!(s.policy.max_deletes, 3);
    assert!(s.policy.keep_tag.is_none());
    assert!(s.policy.delete_orphans);
    assert_eq!(set.select(&repo("lambda/special")).rule, "lambdas");
    let w = set.select(&repo("web-frontend"));
    assert_eq!((w.rule, w.policy.mode), ("rules[1]", Mode::Strip));
    let d = set.select(&repo("other"));
    assert_eq!((d.rule, d.policy.mode), ("default", Mode::Observe));
}

fn toml_err(text: &str) -> String {
    PolicySet::from_toml(text).unwrap_err().to_string()
}

#[test]
fn invalid_files_name_the_field() {
    assert!(toml_err("[default]\nmode = \"promot\"").contains("default.mode"));
    assert!(toml_err("[default]\nmodee = \"tag\"").contains("modee"));
    // RuleDoc repeats SettingsDoc's fields on purpose: through serde's
    // `flatten`, unknown keys pass silently and type errors lose the key.
    assert!(toml_err("[[rules]]\nrepositories = [\"a\"]\nkeep_tags = false").contains("keep_tags"));
    assert!(toml_err("[[rules]]\nrepositories = [\"a\"]\nmode = 3").contains("mode"));
    assert!(toml_err("[[rules]]\nrepositories = []\n").contains("rules[0].repositories"));
    assert!(toml_err("[[rules]]\nrepositories = [\"UP\"]\n").contains("rules[0].repositories"));
    assert!(
        toml_err("[[rules]]\nrepositories = [\"a\"]\ntag_template = \"{tag}-x\"").contains("rules[0].tag_template")
    );
    assert!(toml_err("[default]\nkeep_tag = \"{tag}\"").contains("default.keep_tag"));
    assert!(toml_err("[default]\npromote_platform = \"arm64\"").contains("default.promote_platform"));
    assert!(toml_err("[default]\nmax_deletes = 99999").contains("default.max_deletes"));
    assert!(toml_err("[default]\nmax_deletes = -1").contains("max_deletes"));
    assert!(toml_err("[default]\ndry_run = \"yes\"").contains("dry_run"));
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn no_file(_: &str) -> Result<String, std::io::Error> {
    Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
}

#[test]
fn env_configuration() {
    let set = load(
        &env(&[
            (ENV_MODE, "promote"),
            (ENV_KEEP_TAG, "false"),
            (ENV_DELETE_ORPHANS, "TRUE"),
            (ENV_MAX_DELETES, "4"),
            (ENV_PROMOTE_PLATFORM, "linux/arm64"),
            (ENV_DRY_RUN, ""),
            ("UNRELATED", "x"),
        ]),
        no_file,
    )
    .unwrap();
    let p = &set.default;
    assert_eq!(p.mode, Mode::Promote);
    assert!(p.keep_tag.is_none());
    assert!(p.delete_orphans);
    assert_eq!(p.max_deletes, 4);
    assert!(!p.dry_run);
    assert_eq!(load(&env(&[]), no_file).unwrap(), PolicySet::default());
    let e = load(&env(&[(ENV_MODE, "bogus")]), no_file).unwrap_err().to_string();
    assert!(e.contains(ENV_MODE), "{e}");
    let e = load(&env(&[(ENV_DRY_RUN, "maybe")]), no_file).unwrap_err().to_string();
    assert!(e.contains(ENV_DRY_RUN), "{e}");
    let e = load(&env(&[(ENV_MAX_DELETES, "x")]), no_file).unwrap_err().to_string();
    assert!(e.contains(ENV_MAX_DELETES), "{e}");
}

#[test]
fn file_and_variables_are_exclusive() {
    let e = load(&env(&[(ENV_POLICY_FILE, "/p.toml"), (ENV_MODE, "tag")]), no_file)
        .unwrap_err()
        .to_string();
    assert!(e.contains(ENV_POLICY_FILE) && e.contains(ENV_MODE), "{e}");
    let e = load(&env(&[(ENV_POLICY_FILE, "/p.toml")]), no_file).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
    let ok = load(&env(&[(ENV_POLICY_FILE, "/p.toml")]), |_| {
        Ok::<_, std::io::Error>("[default]\nmode = \"strip\"".to_owned())
    })
    .unwrap();
    assert_eq!(ok.default.mode, Mode::Strip);
    let e = load(&env(&[(ENV_POLICY_FILE, "/p.toml")]), |_| {
        Ok::<_, std::io::Error>("[default]\nmode = 1".to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("/p.toml: "), "{e}");
}

#[test]
fn platform_selector() {
    let s = PlatformSelector::parse("linux/arm64").unwrap();
    assert!(s.matches(&Platform::new("linux", "arm64", Some("v8"))));
    assert!(s.matches(&Platform::new("linux", "arm64", None)));
    assert!(!s.matches(&Platform::new("linux", "amd64", None)));
    let v8 = PlatformSelector::parse("linux/arm64/v8").unwrap();
    assert!(v8.matches(&Platform::new("linux", "arm64", None)));
    let v6 = PlatformSelector::parse("linux/arm/v6").unwrap();
    assert!(!v6.matches(&Platform::new("linux", "arm", None)));
    assert!(v6.matches(&Platform::new("linux", "arm", Some("v6"))));
    for bad in ["", "linux", "linux/", "a/b/c/d", "linux/arm 64"] {
        assert!(PlatformSelector::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn rules_can_match_accounts_alone_or_with_repositories() {
    let set = PolicySet::from_toml(
        r#"
        [[rules]]
        name = "team-b-web"
        repositories = ["web/*"]
        accounts = ["222222222222"]
        mode = "strip"

        [[rules]]
        name = "team-b"
        accounts = ["222222222222"]
        mode = "promote"

        [[rules]]
        name = "web"
        repositories = ["web/*"]
        mode = "observe"
        "#,
    )
    .unwrap();
    let repo = |r: &str| RepositoryName::parse(r).unwrap();
    let pick = |r: &str, a: Option<&AccountId>| {
        let s = set.select_for(&repo(r), a);
        (s.rule, s.policy.mode, s.source())
    };
    assert_eq!(
        pick("web/app", Some(&AccountId::parse("222222222222").unwrap())),
        (
            "team-b-web",
            Mode::Strip,
            "repository matched web/* in account 222222222222".into()
        )
    );
    assert_eq!(
        pick("api", Some(&AccountId::parse("222222222222").unwrap())),
        ("team-b", Mode::Promote, "account 222222222222 matched".into())
    );
    assert_eq!(
        pick("web/app", Some(&AccountId::parse("333333333333").unwrap())).0,
        "web"
    );
    assert_eq!(
        pick("web/app", None).0,
        "web",
        "rules with accounts never match an unknown account"
    );
    assert_eq!(pick("api", None).0, "default");
    let err = PolicySet::from_toml("[[rules]]\naccounts = [\"12\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rules[0].accounts"), "{err}");
    let err = PolicySet::from_toml("[[rules]]\nmode = \"tag\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rules[0].repositories"), "{err}");
}

#[test]
fn rules_can_name_organizational_units_from_the_map() {
    let text = r#"
        [[rules]]
        name = "platform-ou"
        organizational_units = ["ou-ab12-platform"]
        mode = "promote"
        repository_tag = "required"
        "#;
    let vars = env(&[
        (ENV_POLICY_FILE, "/p.toml"),
        (ENV_ORGANIZATIONAL_UNITS, "ou-ab12-platform=111111111111,222222222222"),
    ]);
    let set = load(&vars, |_| Ok::<_, std::io::Error>(text.to_owned())).unwrap();
    let s = set.select_for(&repo("api"), Some(&AccountId::parse("222222222222").unwrap()));
    assert_eq!((s.rule, s.policy.mode), ("platform-ou", Mode::Promote));
    assert_eq!(s.policy.repository_tag, RepositoryTagUse::Required);
    assert_eq!(
        s.source(),
        "account 222222222222 (organizational unit ou-ab12-platform) matched"
    );
    assert_eq!(
        set.select_for(&repo("api"), Some(&AccountId::parse("333333333333").unwrap()))
            .rule,
        "default"
    );
    assert_eq!(set.select_for(&repo("api"), None).rule, "default");
    // A unit missing from the map is refused, naming both.
    let e = load(&env(&[(ENV_POLICY_FILE, "/p.toml")]), |_| {
        Ok::<_, std::io::Error>(text.to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("rules[0].organizational_units") && e.contains(ENV_ORGANIZATIONAL_UNITS),
        "{e}"
    );
    let e = load(&env(&[(ENV_ORGANIZATIONAL_UNITS, "ou-x=1")]), no_file)
        .unwrap_err()
        .to_string();
    assert!(e.contains(ENV_ORGANIZATIONAL_UNITS), "{e}");
    assert!(toml_err("[[rules]]\norganizational_units = [\"eng\"]").contains("rules[0].organizational_units"));
    let e = load(&env(&[(ENV_REPOSITORY_TAG, "sometimes")]), no_file)
        .unwrap_err()
        .to_string();
    assert!(e.contains(ENV_REPOSITORY_TAG), "{e}");
    let set = load(&env(&[(ENV_REPOSITORY_TAG, "ignored")]), no_file).unwrap();
    assert_eq!(set.default.repository_tag, RepositoryTagUse::Ignored);
}

#[test]
fn a_grace_period_longer_than_a_week_is_refused_naming_the_field() {
    let text = "[default]\ngrace_period = \"8d\"\n";
    let err = PolicySet::from_toml(text).unwrap_err().to_string();
    assert!(err.contains("grace_period") && err.contains("7d"), "{err}");
    let ok = PolicySet::from_toml("[default]\ngrace_period = \"7d\"\n").unwrap();
    assert_eq!(ok.default.grace_period_s, crate::policy::MAX_GRACE_PERIOD_S);
}

//! docs/configuration.md must list every broker setting and every topic config, so the
//! reference cannot drift from the code.

use strata_broker::config::Config;
use strata_broker::topic_config::DEFS;

#[test]
fn configuration_reference_lists_every_setting() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("read docs/configuration.md");
    let defaults = toml::Table::try_from(Config::default()).expect("serialize defaults");
    let missing: Vec<_> = defaults
        .keys()
        .map(String::as_str)
        .chain(DEFS.iter().map(|d| d.name))
        .filter(|name| !doc.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks rows for: {missing:?}"
    );
}

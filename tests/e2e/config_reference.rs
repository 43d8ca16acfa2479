//! The configuration reference (`docs/configuration.md`) and the parser name the same keys:
//! every key the reference documents is accepted by the parser, and every key the parser
//! accepts is documented.
//!
//! Why probes through `Config::parse` rather than a list of keys kept in the host: the config's
//! types are private and are moving to the modules that own each section, but the public entry
//! point that parses a config from text, and the strict parsing behind it (serde's
//! `deny_unknown_fields`), stay. So for each documented key a minimal config containing it must
//! not be refused as an unknown field (its value, `0`, may well be refused for its type, which
//! says the key is known); and for each documented table, a config with a key no table has is
//! refused with serde's "unknown field `...`, expected one of `...`", which lists every key the
//! parser knows there, each of which must be in the reference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use platform_gateway::config::Config;

/// A key that no table of the config has.
const PROBE: &str = "zz_not_a_key";

/// The reference's keys: for each table (a dotted path, `backends.NAME` for a backend), the
/// keys its rows document.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let path = xtask::root().join("docs/configuration.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut table: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            // `## `[server]`: ...`, `## `[[routes]]`: ...`; a heading without one ends tables.
            section = first_code(heading)
                .filter(|code| code.starts_with('['))
                .map(|code| code.trim_matches(|c| c == '[' || c == ']').to_string());
            table = section.clone();
        } else if let Some(heading) = line.strip_prefix("### ") {
            // `### `limits`` under `[backends.NAME]`.
            table = match (&section, first_code(heading)) {
                (Some(section), Some(sub)) => Some(format!("{section}.{sub}")),
                _ => None,
            };
        } else if let (Some(table), Some(row)) = (&table, line.strip_prefix("| `")) {
            let key = row.split('`').next().unwrap().to_string();
            if key == "Key" {
                continue;
            }
            tables.entry(table.clone()).or_default().insert(key.clone());
            // A table-valued key documented by its inline form, `{ cert = ..., key = ... }`.
            // (`settings` is the plugin's own: its keys are not the gateway's.)
            // A list of tables, `list of `{ method, url, body }``, is probed as `[[...]]`.
            if key != "settings"
                && let Some(inline) = row.split('{').nth(1).and_then(|r| r.split('}').next())
            {
                let keys = inline.split(',').filter_map(|part| {
                    let name = part.split_once('=').map_or(part, |(k, _)| k).trim();
                    let bare = name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                    (!name.is_empty() && bare).then(|| name.to_string())
                });
                let list = row
                    .split('|')
                    .nth(1)
                    .is_some_and(|t| t.trim().starts_with("list of"));
                let suffix = if list { "[]" } else { "" };
                tables
                    .entry(format!("{table}.{key}{suffix}"))
                    .or_default()
                    .extend(keys);
            }
        }
    }
    tables
}

fn first_code(text: &str) -> Option<&str> {
    text.split('`').nth(1)
}

/// A minimal config whose table `table` holds `key = 0`.
fn config_with(table: &str, key: &str) -> String {
    let table = table.replace("NAME", "b");
    let mut text = String::new();
    if table.starts_with("backends.b") {
        text.push_str("[backends.b]\nplugin = \"p.wasm\"\n");
    }
    match table.as_str() {
        "routes" => text.push_str("[[routes]]\n"),
        "backends.b" => {}
        // A list of tables (`[]` in [`documented`]'s names); what it belongs to may need a key.
        list if list.ends_with("[]") => {
            let list = list.trim_end_matches("[]");
            if list == "backends.b.grants.reads" {
                text.push_str("[backends.b.grants]\nhttp = [\"https://example.com\"]\n");
            }
            text.push_str(&format!("[[{list}]]\n"));
        }
        other => text.push_str(&format!("[{other}]\n")),
    }
    text.push_str(&format!("{key} = 0\n"));
    text
}

/// What the parser says about `text`, or "" if it accepts it.
fn parse_error(text: &str) -> String {
    match Config::parse(Path::new("/nonexistent/gateway.toml"), text) {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    }
}

/// The keys serde's unknown-field error lists as expected, or None if `error` is not one.
fn expected_keys(error: &str) -> Option<BTreeSet<String>> {
    let (_, expected) = error.split_once("unknown field")?;
    let (_, expected) = expected.split_once("expected").unwrap_or(("", ""));
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn every_documented_config_key_is_known_to_the_parser() {
    let tables = documented();
    assert!(
        tables.contains_key("server") && tables.contains_key("backends.NAME.limits"),
        "the reference's tables were found: {:?}",
        tables.keys()
    );
    let mut unknown = Vec::new();
    for (table, keys) in &tables {
        for key in keys {
            let config = config_with(table, key);
            let error = parse_error(&config);
            if error.contains("unknown field") {
                unknown.push(format!("{table}.{key}: {error}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the parser refuses as unknown:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_key_the_parser_knows_is_documented() {
    let tables = documented();
    let mut undocumented = Vec::new();
    // The top level: every section the parser reads has a section in the reference.
    let sections: BTreeSet<String> = tables
        .keys()
        .map(|t| t.split('.').next().unwrap().to_string())
        .collect();
    let known = expected_keys(&parse_error(&format!("{PROBE} = 0\n")))
        .expect("an unknown top-level key is refused as an unknown field");
    assert!(known.contains("server"), "{known:?}");
    undocumented.extend(
        known
            .difference(&sections)
            .map(|s| format!("section [{s}]")),
    );
    for (table, documented) in &tables {
        let error = parse_error(&config_with(table, PROBE));
        let Some(known) = expected_keys(&error) else {
            panic!("{table}: an unknown key is not refused as one: {error:?}");
        };
        undocumented.extend(
            known
                .difference(documented)
                .map(|key| format!("{table}.{key}")),
        );
    }
    assert!(
        undocumented.is_empty(),
        "keys the parser accepts that docs/configuration.md does not document:\n{}",
        undocumented.join("\n")
    );
}

#[test]
fn the_reference_check_sees_an_undocumented_key_and_a_refused_one() {
    // The probes themselves: a misspelt key is reported as unknown with the known ones listed,
    // and a known key with a wrong value is not.
    let known = expected_keys(&parse_error(&config_with("server", "lisen")))
        .expect("a misspelt key is an unknown field");
    assert!(
        known.contains("listen") && known.contains("shutdown_grace"),
        "{known:?}"
    );
    let wrong_type = parse_error(&config_with("server", "listen"));
    assert!(
        !wrong_type.is_empty() && expected_keys(&wrong_type).is_none(),
        "{wrong_type}"
    );
}

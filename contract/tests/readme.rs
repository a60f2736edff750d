//! README's "Search records" table documents the column table: the same columns, the same types.

use std::collections::BTreeMap;

use drllm_contract::record::COLUMNS;

/// (column, type) of every row of README's schema table; a row may name several columns.
fn readme_columns() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let text = std::fs::read_to_string(path).expect("README.md next to the workspace");
    let start = text
        .find("### Search records")
        .expect("README has a `### Search records` section");
    let mut out = BTreeMap::new();
    let rows = text[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| column"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        for name in names.split(',').map(|n| n.trim().trim_matches('`')) {
            let before = out.insert(name.to_string(), kind.to_string());
            assert!(before.is_none(), "README lists `{name}` twice");
        }
    }
    out
}

#[test]
fn readme_schema_table_matches_the_column_table() {
    let readme = readme_columns();
    let ours: BTreeMap<String, String> = COLUMNS
        .iter()
        .map(|c| (c.name.to_string(), c.kind.readme_type().to_string()))
        .collect();
    assert_eq!(
        readme, ours,
        "README's `Search records` table and drllm_contract::record::COLUMNS differ"
    );
}

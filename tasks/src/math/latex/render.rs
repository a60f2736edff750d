//! Rendering the parsed LaTeX nodes as pylatexenc's `LatexNodes2Text` does: macros with their
//! argument rules, symbol tables, math styles and accents, environments and matrices.

use super::*;

pub(super) fn push_char(out: &mut Vec<Node>, c: char) {
    match out.last_mut() {
        Some(Node::Chars(s)) => s.push(c),
        _ => out.push(Node::Chars(c.to_string())),
    }
}

pub(super) fn push_str(out: &mut Vec<Node>, text: &str) {
    text.chars().for_each(|c| push_char(out, c));
}

/// `math` drops whitespace-only text between constructs, as pylatexenc does in equations.
pub(super) fn render_list(nodes: &[Node], math: bool) -> Option<String> {
    let mut out = String::new();
    for node in nodes {
        match node {
            Node::Chars(s) if math && s.chars().all(py_isspace) => {}
            _ => out.push_str(&render(node, math)?),
        }
    }
    Some(out)
}

pub(super) fn render(node: &Node, math: bool) -> Option<String> {
    Some(match node {
        Node::Chars(s) => s.clone(),
        Node::Group(nodes) => render_list(nodes, math)?,
        Node::Special(sp) => match *sp {
            "&" => "   ",
            "~" => "\u{a0}",
            "--" => "\u{2013}",
            "---" => "\u{2014}",
            "``" => "\u{201c}",
            "''" => "\u{201d}",
            "!`" => "\u{a1}",
            _ => "\u{bf}",
        }
        .to_string(),
        Node::Macro { name, args } => render_macro(name, args.as_deref(), math)?,
        Node::Env { name, body } => render_env(name, body, math)?,
        Node::Math { display, body } => math_block(body, *display)?,
    })
}

pub(super) fn math_block(body: &[Node], display: bool) -> Option<String> {
    let content = render_list(body, true)?;
    let content = py_strip(&content);
    Some(if display {
        indented(content)
    } else {
        content.to_string()
    })
}

pub(super) fn indented(content: &str) -> String {
    format!("\n    {}\n", content.replace('\n', "\n    "))
}

pub(super) fn render_arg(args: &[Option<Node>], i: usize, math: bool) -> Option<String> {
    match args.get(i) {
        Some(Some(node)) => render(node, math),
        _ => Some(String::new()),
    }
}

pub(super) fn render_macro(
    name: &str,
    args: Option<&[Option<Node>]>,
    math: bool,
) -> Option<String> {
    let arg = |i: usize| args.map_or(Some(String::new()), |a| render_arg(a, i, math));
    if DISCARDED.contains(&name) {
        return Some(String::new());
    }
    if KEEP_ARGS.contains(&name) {
        let n = args.map_or(0, <[_]>::len);
        return (0..n).map(arg).collect();
    }
    if PERCENT_S.contains(&name) {
        return Some(if args.is_some() { arg(0)? } else { "%s".into() });
    }
    if let Some(&(_, upper, lower)) = MATH_STYLES.iter().find(|(n, ..)| *n == name) {
        return Some(
            arg(0)?
                .chars()
                .map(|c| math_style(upper, lower, c))
                .collect(),
        );
    }
    if let Some(combining) = lookup(ACCENTS, name) {
        let text = match args {
            Some(_) => Some(arg(0)?),
            None => None,
        };
        return Some(accented(text, combining));
    }
    match name {
        "frac" | "nicefrac" if args.is_some() => Some(format!("{}/{}", arg(0)?, arg(1)?)),
        "frac" | "nicefrac" => Some("%s/%s".into()),
        "sqrt" => args.map(|_| Some(format!("√({})", arg(1)?)))?,
        "textcolor" | "colorbox" => args.map(|_| arg(2))?,
        _ => Some(lookup(SYMBOLS, name).unwrap_or("").to_string()),
    }
}

pub(super) fn math_style(upper: u32, lower: u32, c: char) -> char {
    let hole = MATH_STYLE_HOLES
        .iter()
        .find(|(block, l, _)| *block == upper && *l == c);
    if let Some(&(_, _, hole)) = hole {
        return hole;
    }
    let shifted = match c {
        'A'..='Z' => char::from_u32(upper + (c as u32 - 'A' as u32)),
        'a'..='z' => char::from_u32(lower + (c as u32 - 'a' as u32)),
        _ => None,
    };
    shifted.unwrap_or(c)
}

/// pylatexenc's `make_accented_char`, without its final NFC normalization.
pub(super) fn accented(arg: Option<String>, combining: char) -> String {
    let text = arg.map_or(" ".to_string(), |a| py_strip(&a).to_string());
    let mut out = String::new();
    for c in text.chars() {
        out.push(match c {
            '\u{131}' => 'i',
            '\u{237}' => 'j',
            _ => c,
        });
        out.push(combining);
    }
    out
}

pub(super) fn render_env(name: &str, body: &[Node], math: bool) -> Option<String> {
    if MATRIX_ENVS.contains(&name) {
        matrix(body, math)
    } else if EQUATION_ENVS.contains(&name) {
        Some(indented(&math_block(body, false)?))
    } else {
        render_list(body, math)
    }
}

/// `[ a b; c d ]` with cells right-aligned to the widest; pylatexenc fails on no cells.
pub(super) fn matrix(body: &[Node], math: bool) -> Option<String> {
    let mut rows: Vec<Vec<String>> = vec![Vec::new()];
    let mut cell: Vec<&Node> = Vec::new();
    let flush = |cell: &mut Vec<&Node>, row: &mut Vec<String>| -> Option<()> {
        if !cell.is_empty() {
            let text = cell
                .iter()
                .map(|n| render(n, math))
                .collect::<Option<String>>()?;
            row.push(py_strip(&text).to_string());
            cell.clear();
        }
        Some(())
    };
    for node in body {
        let row = rows.last_mut()?;
        match node {
            Node::Special("&") => flush(&mut cell, row)?,
            Node::Macro { name, .. } if name == "\\" => {
                flush(&mut cell, row)?;
                rows.push(Vec::new());
            }
            _ => cell.push(node),
        }
    }
    flush(&mut cell, rows.last_mut()?)?;
    let width = rows.iter().flatten().map(|c| c.chars().count()).max()?;
    let rows: Vec<String> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| format!("{c:>width$}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    Some(format!("[ {} ]", rows.join("; ")))
}

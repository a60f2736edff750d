//! Grading of math answers: a port of the grader of `mathruler` 0.1.0 (PyPI), the checker the
//! Dr.LLM paper scores MATH-style answers with, so that rewards and accuracies here mean the
//! same as there.
//!
//! [`extract_boxed`] is mathruler's `extract_boxed_content` (the last `\boxed{...}`), and
//! [`is_equiv`] is its `grade_answer(pred, gold)`, step for step: the Hendrycks MATH string
//! normalization first, then mathruler's own normalization (units, `\text{}`, thousands
//! separators, LaTeX to text as pylatexenc renders it), tuples and intervals element by element,
//! fractions that must match as written, integers that must match exactly, and otherwise
//! "sympy simplifies the difference to 0". That last step is emulated without a CAS: see
//! [`expr`]. Python's string semantics (`float()`, `str.strip()`, `\d`, `isalpha`) are
//! reproduced where they change a verdict (`crate::py`). The reference verdicts live in
//! `tasks/tests/data/mathruler_cases.jsonl`, produced by running mathruler itself.

mod eval;
mod expr;
mod latex;

use crate::py::{py_digit, py_float, py_strip};

const BOXED: &str = "\\boxed{";
/// `_strip_string`'s replacements before and after removing units.
#[rustfmt::skip]
const MATHD_BEFORE_UNITS: &[(&str, &str)] = &[
    ("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
    ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""),
];
const MATHD_AFTER_UNITS: &[(&str, &str)] = &[("\\%", ""), ("%", ""), (" .", " 0."), ("{.", "{0.")];
/// `_normalize`'s replacements before removing units.
#[rustfmt::skip]
const REPLACEMENTS: &[(&str, &str)] = &[
    ("\\%", "%"), ("\\$", "$"), ("$", ""), ("%", ""), (" or ", " , "), (" and ", " , "),
    ("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12"),
];
/// `_parse_latex`'s spelling of pylatexenc's symbols for sympy.
#[rustfmt::skip]
const SYMBOLS_FOR_SYMPY: &[(&str, &str)] = &[
    ("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"),
];
const TUPLE_CHARS: &str = "()[]";
#[rustfmt::skip]
const UNITS: [&str; 16] = [
    "degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
    "month", "year", "foot", "feet", "inch", "yard",
];

/// The content of the last `\boxed{...}` (braces balanced), trimmed; `None` when there is no
/// `\boxed{` or it is never closed (where mathruler returns the string `"None"`).
pub fn extract_boxed(text: &str) -> Option<String> {
    let content = &text[text.rfind(BOXED)? + BOXED.len()..];
    let mut depth = 0i32;
    for (i, c) in content.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(py_strip(&content[..i]).to_string()),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// mathruler's `grade_answer(pred, gold)`: whether the predicted answer matches the gold one.
pub fn is_equiv(pred: &str, gold: &str) -> bool {
    if normalize_answer(gold) == normalize_answer(pred) {
        return true;
    }
    let gold = normalize(gold);
    let pred = normalize(pred);
    if gold == pred {
        return true;
    }
    let (Some(pred_first), Some(pred_last)) = (pred.chars().next(), pred.chars().last()) else {
        return false;
    };
    let gold_elems = split_tuple(&gold);
    let pred_elems = split_tuple(&pred);
    let same_brackets = gold.starts_with(pred_first) && gold.ends_with(pred_last);
    if gold_elems.len() > 1 && !same_brackets || gold_elems.len() != pred_elems.len() {
        return false;
    }
    gold_elems
        .iter()
        .zip(&pred_elems)
        .all(|(g, p)| elements_equal(g, p))
}

fn elements_equal(gold: &str, pred: &str) -> bool {
    if is_frac(gold) && is_frac(pred) {
        // Unreduced fractions must not pass: fractions are compared as written.
        gold == pred
    } else if str_is_int(gold) != str_is_int(pred) {
        false
    } else {
        expr::are_equal_under_sympy(gold, pred)
    }
}

/// The Hendrycks MATH normalization (mathruler's `math_normalize.normalize_answer`).
pub fn normalize_answer(answer: &str) -> String {
    let mut answer = py_strip(answer).to_string();
    if let Some(inner) = text_wrapped(&answer) {
        answer = py_strip(inner).to_string();
    }
    strip_string(&answer).unwrap_or(answer)
}

/// `^\\text\{(?P<text>.+?)\}$` (Python's `$` also matches before a final newline).
fn text_wrapped(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("\\text{")?;
    let body = rest
        .strip_suffix("}\n")
        .or_else(|| rest.strip_suffix('}'))?;
    (!body.is_empty() && !body.contains('\n')).then_some(body)
}

/// `_strip_string`; `None` where the Python raises (then the caller keeps its input).
fn strip_string(s: &str) -> Option<String> {
    let s = replace_all(s, MATHD_BEFORE_UNITS);
    let mut s = replace_all(&remove_right_units(&s)?, MATHD_AFTER_UNITS);
    if s.is_empty() {
        return Some(s);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    if let [lhs, rhs] = s.split('=').collect::<Vec<_>>()[..] {
        if lhs.chars().count() <= 2 {
            s = rhs.to_string();
        }
    }
    s = fix_sqrt(&s)?.replace(' ', "");
    s = fix_fracs(&s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".into();
    }
    Some(fix_a_slash_b(&s))
}

fn remove_right_units(s: &str) -> Option<String> {
    match s.split("\\text{ ").collect::<Vec<_>>()[..] {
        [whole] => Some(whole.to_string()),
        [number, _unit] => Some(number.to_string()),
        _ => None,
    }
}

/// `\sqrt3` → `\sqrt{3}`.
fn fix_sqrt(s: &str) -> Option<String> {
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let mut chars = part.chars();
        match chars.next()? {
            '{' => out.push_str(&format!("\\sqrt{part}")),
            a => out.push_str(&format!("\\sqrt{{{a}}}{}", chars.as_str())),
        }
    }
    Some(out)
}

/// `\frac12` → `\frac{1}{2}`, `\frac1{72}` → `\frac{1}{72}`.
fn fix_fracs(s: &str) -> Option<String> {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\frac");
        let mut chars = part.chars();
        let a = chars.next()?;
        if a == '{' {
            out.push_str(part);
            continue;
        }
        let Some(b) = chars.next() else {
            return Some(s.to_string());
        };
        let rest = chars.as_str();
        match b {
            '{' => out.push_str(&format!("{{{a}}}{{{rest}")),
            _ => out.push_str(&format!("{{{a}}}{{{b}}}{rest}")),
        }
    }
    Some(out)
}

/// `3/4` → `\frac{3}{4}` when both sides are integers written canonically.
fn fix_a_slash_b(s: &str) -> String {
    match s.split('/').collect::<Vec<_>>()[..] {
        [a, b] if is_canonical_int(a) && is_canonical_int(b) => format!("\\frac{{{a}}}{{{b}}}"),
        _ => s.to_string(),
    }
}

/// Whether `s == str(int(s))` in Python.
fn is_canonical_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.is_empty()
        && (!digits.starts_with('0') || digits.len() == 1);
    canonical && s != "-0"
}

/// mathruler's own `_normalize`.
fn normalize(expr: &str) -> String {
    let mut e = replace_all(text_wrapped(expr).unwrap_or(expr), REPLACEMENTS);
    for unit in UNITS {
        e = re_remove(&e, |rest| after_unit(rest, unit));
    }
    e = re_remove(&e, |rest| {
        let rest = rest.strip_prefix('^')?.trim_start_matches(' ');
        rest.strip_prefix("\\circ")
    });
    if e.len() >= 2 && e.starts_with('{') && e.ends_with('}') {
        e = e[1..e.len() - 1].to_string();
    }
    e = re_remove(&e, |rest| {
        Some(rest.strip_prefix(",\\!")?.trim_start_matches(' '))
    });
    if let Some(f) = py_float(&e).filter(|f| is_int(*f)) {
        e = int_string(f.round());
    }
    if e.contains('\\') {
        if let Some(text) = parse_latex(&e) {
            e = text;
        }
    }
    e = re_sub(&e, |rest| {
        Some(("-".into(), rest.strip_prefix('-')?.trim_start_matches(' ')))
    });
    e = re_sub(&e, mixed_number);
    e = e.replace([' ', '{', '}'], "").to_lowercase();
    if str_is_int(&e) {
        if let Some(f) = py_float(&e.replace(',', "")) {
            e = int_string(f.trunc());
        }
    }
    e
}

/// `_parse_latex`: pylatexenc's text, with the symbols sympy reads spelled out.
fn parse_latex(expr: &str) -> Option<String> {
    let prepared = expr
        .replace("\\tfrac", "\\frac")
        .replace("\\dfrac", "\\frac")
        .replace("\\frac", " \\frac");
    let text = replace_all(&latex::latex_to_text(&prepared)?, SYMBOLS_FOR_SYMPY);
    Some(py_strip(&text).to_string())
}

fn replace_all(s: &str, pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .fold(s.to_string(), |acc, (from, to)| acc.replace(from, to))
}

/// Python's `re.sub` for a hand-written pattern: for a match at the start of `rest`,
/// `matcher(rest)` gives the replacement and the text after the match.
fn re_sub<'a>(s: &'a str, matcher: impl Fn(&'a str) -> Option<(String, &'a str)>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        match matcher(rest) {
            Some((replacement, after)) if after.len() < rest.len() => {
                out.push_str(&replacement);
                rest = after;
            }
            _ => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// `re.sub(pattern, "", s)`: `after_match(rest)` gives the text after a match at its start.
fn re_remove<'a>(s: &'a str, after_match: impl Fn(&'a str) -> Option<&'a str>) -> String {
    re_sub(s, |rest| Some((String::new(), after_match(rest)?)))
}

/// `{unit}(es)?(s)? *(\^[0-9]+)?`
fn after_unit<'a>(rest: &'a str, unit: &str) -> Option<&'a str> {
    let mut tail = rest.strip_prefix(unit)?;
    tail = tail.strip_prefix("es").unwrap_or(tail);
    tail = tail.strip_prefix('s').unwrap_or(tail);
    tail = tail.trim_start_matches(' ');
    if let Some(power) = tail.strip_prefix('^') {
        let after = power.trim_start_matches(|c: char| c.is_ascii_digit());
        if after.len() < power.len() {
            tail = after;
        }
    }
    Some(tail)
}

/// `([0-9]) +([0-9])` → `\1+\2` (mixed numbers: `7 3/4` → `7+3/4`).
fn mixed_number(rest: &str) -> Option<(String, &str)> {
    let whole = rest.chars().next().filter(char::is_ascii_digit)?;
    let after_space = rest[1..].trim_start_matches(' ');
    let frac = after_space.chars().next().filter(char::is_ascii_digit)?;
    (after_space.len() < rest.len() - 1).then(|| (format!("{whole}+{frac}"), &after_space[1..]))
}

/// Removes thousands separators (`(\d)(,)(\d\d\d)($|\D)` until nothing changes), keeping the
/// commas of tuples.
fn strip_properly_formatted_commas(expr: &str) -> String {
    let mut expr = expr.to_string();
    loop {
        let next = re_sub(&expr, thousands_comma);
        if next == expr {
            return next;
        }
        expr = next;
    }
}

fn thousands_comma(rest: &str) -> Option<(String, &str)> {
    let mut chars = rest.chars();
    let first = chars.next().filter(|c| py_digit(*c).is_some())?;
    if chars.next()? != ',' {
        return None;
    }
    let group: String = chars.by_ref().take(3).collect();
    if group.chars().count() != 3 || group.chars().any(|c| py_digit(c).is_none()) {
        return None;
    }
    let boundary = match chars.next() {
        Some(c) if py_digit(c).is_some() => return None,
        Some(c) => c.to_string(),
        None => String::new(),
    };
    Some((format!("{first}{group}{boundary}"), chars.as_str()))
}

/// Elements of a tuple or interval such as `(1,2]`, or the whole expression.
fn split_tuple(expr: &str) -> Vec<String> {
    let expr = strip_properly_formatted_commas(expr);
    let chars: Vec<char> = expr.chars().collect();
    let is_bracket = |c: &char| TUPLE_CHARS.contains(*c);
    match chars.as_slice() {
        [] => vec![],
        [first, inner @ .., last]
            if chars.len() > 2
                && is_bracket(first)
                && is_bracket(last)
                && !inner.iter().any(is_bracket) =>
        {
            let inner: String = inner.iter().collect();
            inner.split(',').map(|e| py_strip(e).to_string()).collect()
        }
        _ => vec![expr],
    }
}

/// `^-?[0-9]+.?/0*[1-9][0-9]*.?$`: a fraction written with a slash.
fn is_frac(s: &str) -> bool {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    // `.?` at the end of a part: one optional character other than a newline.
    let with_optional_char = |t: &str, ok: &dyn Fn(&str) -> bool| {
        ok(t)
            || t.char_indices()
                .last()
                .is_some_and(|(i, c)| c != '\n' && ok(&t[..i]))
    };
    let numerator = |t: &str| digits(t.strip_prefix('-').unwrap_or(t));
    let denominator = |t: &str| digits(t) && t.bytes().any(|b| b != b'0');
    s.match_indices('/').any(|(i, _)| {
        with_optional_char(&s[..i], &numerator) && with_optional_char(&s[i + 1..], &denominator)
    })
}

/// `_str_is_int`: a number (thousands separators allowed) within 1e-7 of an integer.
fn str_is_int(s: &str) -> bool {
    py_float(&strip_properly_formatted_commas(s)).is_some_and(is_int)
}

fn is_int(f: f64) -> bool {
    f.is_finite() && (f - f.round()).abs() <= 1e-7
}

/// Python's `str(int(f))` for an integral float.
fn int_string(f: f64) -> String {
    if f == 0.0 {
        "0".into()
    } else {
        format!("{f:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators_and_fractions() {
        assert_eq!(
            strip_properly_formatted_commas("1,000,000 and (1,2)"),
            "1000000 and (1,2)"
        );
        assert!(is_frac("-1/2") && is_frac("1//2") && is_frac("3/04"));
        assert!(!is_frac("1/0") && !is_frac("x/2") && !is_frac("1+1/2"));
    }

    #[test]
    fn normalizations() {
        assert_eq!(normalize_answer("\\text{ 0.5 }"), "\\frac{1}{2}");
        assert_eq!(normalize_answer("x = \\dfrac12"), "\\frac{1}{2}");
        assert_eq!(normalize("180 miles"), "180");
        assert_eq!(normalize("1\\frac{1}{2}"), "1+1/2");
        assert_eq!(normalize("\\left( 3, \\frac{\\pi}{2} \\right)"), "(3,pi/2)");
    }
}

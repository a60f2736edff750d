//! mathruler's last resort, `are_equal_under_sympy`, without sympy. This half applies its guard
//! (at most two distinct letters, no big or braced exponents) and parses `(gold)-(pred)` the way
//! `sympy.parsing.sympy_parser.parse_expr` does with implicit multiplication: Python 3.11
//! tokenization (`007` is `00` then `7`, `2j` is imaginary, `1_000` is a number), `^` as `**`,
//! juxtaposition as `*` (`2x`, `x(1)`, `(a)(b)`), multi-letter names split into one symbol per
//! letter (`sqrt2` is `s*q*r*t*2`), `pi`, `oo`, `sqrt` and `ln` from sympy's namespace. The other
//! half, [`super::eval`], decides whether the difference simplifies to zero.
//!
//! Known differences: with symbols or irrationals, floats that differ from the exact value only
//! by float rounding (`0.1x+0.2x` against `0.3x`, 16-digit decimals) count as equal here, not in
//! sympy; identities sympy's `simplify` fails to prove would be equal here (none found so far);
//! `x!` only works on small non-negative integers; sympy functions other than `sqrt` and `ln`
//! (`re`, `frac`, ...) and repeated decimals are unparsable (not equal).

use super::eval::{simplifies_to_zero, C};
use crate::py::{py_digit, py_isalpha};

#[rustfmt::skip]
const PYTHON_KEYWORDS: &[&str] = &[
    "as", "if", "in", "is", "or", "and", "not", "for", "def", "del", "try", "elif", "else", "from",
    "pass", "with", "break", "class", "raise", "while", "yield", "assert", "except", "global",
    "import", "lambda", "return", "finally", "continue", "nonlocal", "async", "await",
];
/// Names sympy's namespace defines that this evaluator does not implement.
#[rustfmt::skip]
const UNSUPPORTED_NAMES: &[&str] = &[
    "all", "csc", "eye", "ff", "fft", "frac", "fu", "gff", "hn1", "hn2", "id", "im", "jn", "li",
    "ntt", "re", "rf", "yn",
];
/// Python's parser refuses 200 nested parentheses; about 3000 tokens in a chain exceed its
/// recursion limit.
const MAX_PARENS: i32 = 200;
const MAX_TOKENS: usize = 2500;
/// Operators and whitespace Python tokenizes (others make sympy fail), longest first.
const OPERATORS: [&str; 13] = [
    "**", "*", "/", "+", "-", "(", ")", "!", " ", "\t", "\x0c", "\n", "\r",
];
/// Greek letter names sympy keeps whole instead of splitting into letters (others have more
/// than two distinct letters, which mathruler never evaluates).
const GREEK_NAMES: &[&str] = &["mu", "nu", "xi"];

/// Whether sympy would simplify `(gold)-(pred)` to zero, following mathruler's guards.
pub(crate) fn are_equal_under_sympy(gold: &str, pred: &str) -> bool {
    let expr = format!("({gold})-({pred})");
    if !should_allow_eval(&expr) {
        return false;
    }
    let Some(tokens) = tokenize(&expr.replace('^', "**")).filter(|t| t.len() <= MAX_TOKENS) else {
        return false;
    };
    let mut parser = Parser {
        tokens: implicit_multiplication(tokens),
        pos: 0,
    };
    match parser.expr() {
        Some(ast) if parser.pos == parser.tokens.len() => simplifies_to_zero(&ast),
        _ => false,
    }
}

/// mathruler's guard: at most two distinct letters (besides `sqrt`/`frac`), no `^{`, `^(`,
/// `^` followed by two digits or by digits and another `^`.
fn should_allow_eval(expr: &str) -> bool {
    let stripped = expr.replace("sqrt", "").replace("frac", "");
    let mut letters: Vec<char> = stripped.chars().filter(|c| py_isalpha(*c)).collect();
    letters.sort_unstable();
    letters.dedup();
    if letters.len() > 2 || expr.contains("^{") || expr.contains("^(") {
        return false;
    }
    !expr.match_indices('^').any(|(i, _)| {
        let after = &expr[i + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        digits >= 2 || digits == 1 && after[1..].starts_with('^')
    })
}

/// A number: its value, whether sympy makes it a `Float`, and its exact value as a fraction
/// where sympy computes exactly (integers; floats written with more digits than a double holds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Lit {
    pub(super) value: C,
    pub(super) float: bool,
    pub(super) exact: Option<(i128, i128)>,
}

impl Lit {
    fn int(v: f64) -> Lit {
        let exact = (v.fract() == 0.0 && v.abs() < 2f64.powi(53)).then_some((v as i128, 1));
        Lit {
            value: C::real(v),
            float: false,
            exact,
        }
    }
    fn float(text: &[char]) -> Option<Lit> {
        let value = C::real(literal(text)?);
        Some(Lit {
            value,
            float: true,
            exact: long_decimal(text),
        })
    }
    fn other(value: C) -> Lit {
        Lit {
            value,
            float: false,
            exact: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(Lit),
    Sym(String),
    Const(Konst),
    Func(Func),
    Op(&'static str),
    /// A newline inside parentheses: whitespace, but it stops implicit multiplication.
    Newline,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Konst {
    Pi,
    Infinity,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Func {
    Sqrt,
    Ln,
}

/// Python tokenization plus sympy's `auto_symbol`, `auto_number` and `split_symbols`.
fn tokenize(src: &str) -> Option<Vec<Tok>> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut depth) = (0, 0i32);
    while let Some(&c) = s.get(i) {
        if let Some((tok, len)) = number(&s[i..]) {
            out.push(tok);
            i += len;
        } else if c.is_alphabetic() || c == '_' {
            let len = s[i..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
            out.extend(name(&s[i..i + len].iter().collect::<String>())?);
            i += len;
        } else {
            let at = |op: &&str| {
                op.chars()
                    .enumerate()
                    .all(|(k, c)| s.get(i + k) == Some(&c))
            };
            let op = OPERATORS.iter().copied().find(at)?;
            i += op.len();
            match op {
                "(" if depth + 1 >= MAX_PARENS => return None,
                "(" => depth += 1,
                ")" => depth -= 1,
                "!" if s.get(i) == Some(&'=') || s.get(i) == Some(&'!') => return None,
                _ => {}
            }
            match op {
                " " | "\t" | "\x0c" => {}
                "\n" | "\r" if depth > 0 => out.push(Tok::Newline),
                "\n" | "\r" => return None,
                _ => out.push(Tok::Op(op)),
            }
        }
    }
    Some(out)
}

fn name(n: &str) -> Option<Vec<Tok>> {
    let tok = match n {
        "pi" => Tok::Const(Konst::Pi),
        "oo" => Tok::Const(Konst::Infinity),
        "nan" | "zoo" => Tok::Const(Konst::Nan),
        "sqrt" => Tok::Func(Func::Sqrt),
        "ln" => Tok::Func(Func::Ln),
        _ if PYTHON_KEYWORDS.contains(&n) || UNSUPPORTED_NAMES.contains(&n) => return None,
        _ if n.chars().count() == 1 || n.contains('_') || GREEK_NAMES.contains(&n) => {
            Tok::Sym(n.to_string())
        }
        _ => return split_name(n),
    };
    Some(vec![tok])
}

/// sympy's `split_symbols`: `xy2` → `x`, `y`, `2`.
fn split_name(n: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = n.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_ascii_digit() {
            let len = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let digits: String = chars[i..i + len].iter().collect();
            out.push(Tok::Num(Lit::int(digits.parse().ok()?)));
            i += len;
        } else if py_digit(c).is_some() || c.is_numeric() {
            return None;
        } else {
            out.push(Tok::Sym(c.to_string()));
            i += 1;
        }
    }
    Some(out)
}

/// A Python number literal at the start of `s` (3.11 `tokenize` rules, tried in its order).
fn number(s: &[char]) -> Option<(Tok, usize)> {
    let is_j = |i: usize| matches!(s.get(i), Some('j' | 'J'));
    if let Some(end) = digit_part(s, 0).filter(|&e| is_j(e)) {
        return Some((imaginary(literal(&s[..end])?), end + 1));
    }
    if let Some(end) = float_literal(s) {
        return Some(if is_j(end) {
            (imaginary(literal(&s[..end])?), end + 1)
        } else {
            (Tok::Num(Lit::float(&s[..end])?), end)
        });
    }
    if let Some((value, end)) = prefixed_int(s) {
        return Some((Tok::Num(Lit::int(value)), end));
    }
    let end = if s.first() == Some(&'0') {
        1 + zeros_len(&s[1..])
    } else {
        digit_part(s, 0)?
    };
    Some((Tok::Num(Lit::int(literal(&s[..end])?)), end))
}

/// `(?:_?0)*` after a leading zero.
fn zeros_len(s: &[char]) -> usize {
    let mut i = 0;
    loop {
        match (s.get(i), s.get(i + 1)) {
            (Some('0'), _) => i += 1,
            (Some('_'), Some('0')) => i += 2,
            _ => return i,
        }
    }
}

fn imaginary(v: f64) -> Tok {
    Tok::Num(Lit::other(C { re: 0.0, im: v }))
}

fn literal(chars: &[char]) -> Option<f64> {
    chars
        .iter()
        .filter(|c| **c != '_')
        .collect::<String>()
        .parse()
        .ok()
}

/// `[0-9](?:_?[0-9])*` from `start`: its end.
fn digit_part(s: &[char], start: usize) -> Option<usize> {
    if !s.get(start)?.is_ascii_digit() {
        return None;
    }
    let mut i = start + 1;
    loop {
        match (s.get(i), s.get(i + 1)) {
            (Some(c), _) if c.is_ascii_digit() => i += 1,
            (Some('_'), Some(c)) if c.is_ascii_digit() => i += 2,
            _ => return Some(i),
        }
    }
}

/// `[eE][-+]?digitpart` from `start`: its end.
fn exponent(s: &[char], start: usize) -> Option<usize> {
    if !matches!(s.get(start), Some('e' | 'E')) {
        return None;
    }
    let sign = usize::from(matches!(s.get(start + 1), Some('+' | '-')));
    digit_part(s, start + 1 + sign)
}

/// Pointfloat or Expfloat: its end.
fn float_literal(s: &[char]) -> Option<usize> {
    let int_end = digit_part(s, 0);
    let point = int_end.unwrap_or(0);
    if s.get(point) == Some(&'.') {
        let end = digit_part(s, point + 1);
        if int_end.is_some() || end.is_some() {
            let end = end.unwrap_or(point + 1);
            return Some(exponent(s, end).unwrap_or(end));
        }
    }
    exponent(s, int_end?)
}

/// `0x…`, `0o…`, `0b…` integers.
fn prefixed_int(s: &[char]) -> Option<(f64, usize)> {
    let radix = match (s.first(), s.get(1)) {
        (Some('0'), Some('x' | 'X')) => 16,
        (Some('0'), Some('o' | 'O')) => 8,
        (Some('0'), Some('b' | 'B')) => 2,
        _ => return None,
    };
    let mut i = 2;
    let mut value = 0f64;
    loop {
        let skip = usize::from(s.get(i) == Some(&'_'));
        match s.get(i + skip).and_then(|c| c.to_digit(radix)) {
            Some(d) => {
                value = value * f64::from(radix) + f64::from(d);
                i += skip + 1;
            }
            None => return (i > 2).then_some((value, i)),
        }
    }
}

/// sympy's implicit multiplication: a `*` between juxtaposed operands (`2x`, `x(1)`, `)(`).
fn implicit_multiplication(tokens: Vec<Tok>) -> Vec<Tok> {
    let ends_operand = |t: &Tok| {
        matches!(
            t,
            Tok::Num(_) | Tok::Sym(_) | Tok::Const(_) | Tok::Op(")") | Tok::Op("!")
        )
    };
    let starts_operand = |t: &Tok| {
        matches!(
            t,
            Tok::Num(_) | Tok::Sym(_) | Tok::Const(_) | Tok::Func(_) | Tok::Op("(")
        )
    };
    let mut out: Vec<Tok> = Vec::with_capacity(tokens.len());
    for tok in tokens {
        if out.last().is_some_and(ends_operand) && starts_operand(&tok) {
            out.push(Tok::Op("*"));
        }
        out.push(tok);
    }
    out.retain(|t| *t != Tok::Newline);
    out
}

#[derive(Debug)]
pub(super) enum Ast {
    Num(Lit),
    Const(Konst),
    Sym(String),
    Neg(Box<Ast>),
    Bin(&'static str, Box<Ast>, Box<Ast>),
    Call(Func, Box<Ast>),
    Factorial(Box<Ast>),
}

/// Python's expression grammar restricted to `+ - * / **`, calls, parentheses and `!`.
struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.tokens.get(self.pos), Some(Tok::Op(o)) if *o == op);
        self.pos += usize::from(hit);
        hit
    }

    fn binary(
        &mut self,
        ops: [&'static str; 2],
        next: fn(&mut Self) -> Option<Ast>,
    ) -> Option<Ast> {
        let mut lhs = next(self)?;
        while let Some(op) = ops.into_iter().find(|op| self.eat(op)) {
            lhs = Ast::Bin(op, Box::new(lhs), Box::new(next(self)?));
        }
        Some(lhs)
    }

    fn expr(&mut self) -> Option<Ast> {
        self.binary(["+", "-"], Self::term)
    }

    fn term(&mut self) -> Option<Ast> {
        self.binary(["*", "/"], Self::unary)
    }

    fn unary(&mut self) -> Option<Ast> {
        if self.eat("-") {
            return Some(Ast::Neg(Box::new(self.unary()?)));
        }
        if self.eat("+") {
            return self.unary();
        }
        let base = self.postfix()?;
        if self.eat("**") {
            return Some(Ast::Bin("**", Box::new(base), Box::new(self.unary()?)));
        }
        Some(base)
    }

    fn postfix(&mut self) -> Option<Ast> {
        let mut atom = self.atom()?;
        while self.eat("!") {
            atom = Ast::Factorial(Box::new(atom));
        }
        Some(atom)
    }

    fn atom(&mut self) -> Option<Ast> {
        let tok = self.tokens.get(self.pos)?.clone();
        self.pos += 1;
        match tok {
            Tok::Num(lit) => Some(Ast::Num(lit)),
            Tok::Const(k) => Some(Ast::Const(k)),
            Tok::Sym(name) => Some(Ast::Sym(name)),
            Tok::Func(f) => {
                let arg = self.eat("(").then(|| self.expr()).flatten()?;
                self.eat(")").then(|| Ast::Call(f, Box::new(arg)))
            }
            Tok::Op("(") => {
                let inner = self.expr()?;
                self.eat(")").then_some(inner)
            }
            _ => None,
        }
    }
}

pub(super) fn contains_float(ast: &Ast) -> bool {
    match ast {
        Ast::Num(lit) => lit.float,
        Ast::Sym(_) | Ast::Const(_) => false,
        Ast::Neg(a) | Ast::Call(_, a) | Ast::Factorial(a) => contains_float(a),
        Ast::Bin(_, a, b) => contains_float(a) || contains_float(b),
    }
}

pub(super) fn symbols<'a>(ast: &'a Ast, out: &mut Vec<&'a str>) {
    match ast {
        Ast::Num(_) | Ast::Const(_) => {}
        Ast::Sym(name) => {
            if !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
        Ast::Neg(a) | Ast::Call(_, a) | Ast::Factorial(a) => symbols(a, out),
        Ast::Bin(_, a, b) => {
            symbols(a, out);
            symbols(b, out);
        }
    }
}

/// A float literal with more significant digits than a double holds, as an exact fraction:
/// sympy gives such a `Float` the precision of its digits.
fn long_decimal(text: &[char]) -> Option<(i128, i128)> {
    let text: String = text.iter().filter(|c| **c != '_').collect();
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text.as_str(), 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    if digits.trim_start_matches('0').len() <= 15 {
        return None;
    }
    let scale = exp - i32::try_from(frac.len()).ok()?;
    let p: i128 = digits.parse().ok()?;
    let ten = |n: i32| 10i128.checked_pow(n.unsigned_abs());
    if scale >= 0 {
        Some((p.checked_mul(ten(scale)?)?, 1))
    } else {
        Some((p, ten(scale)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sympy_like_verdicts() {
        assert!(are_equal_under_sympy("x^2-1", "(x-1)(x+1)"));
        assert!(are_equal_under_sympy("2*sqrt(3)", "sqrt(12)"));
        assert!(are_equal_under_sympy("1/2x", "x/2"));
        assert!(!are_equal_under_sympy("sqrt(x**2)", "x"));
        assert!(!are_equal_under_sympy("sqrt2", "sqrt(2)"));
        assert!(!are_equal_under_sympy("1/0", "2/0"));
        assert!(!are_equal_under_sympy("x^0.5", "sqrt(x)"));
        assert!(are_equal_under_sympy("007", "0"));
        assert!(are_equal_under_sympy("3/10", "0.3"));
        assert!(!are_equal_under_sympy("3/10", "3/10.0"));
        assert!(!are_equal_under_sympy("1/3", "0.3333333333333333"));
        assert!(!are_equal_under_sympy("sqrt(2)", "1.4142135623730951"));
        assert!(are_equal_under_sympy("pi/2", "0.5pi"));
    }

    #[test]
    fn deep_or_long_input_is_unequal_not_a_crash() {
        let nested = format!("{}x{}", "(".repeat(199), ")".repeat(199));
        assert!(!are_equal_under_sympy(&nested, "x"));
        let nested = format!("{}x{}", "(".repeat(150), ")".repeat(150));
        assert!(are_equal_under_sympy(&nested, "x"));
        assert!(are_equal_under_sympy(&["x"; 1000].join("+"), "1000x"));
        assert!(!are_equal_under_sympy(&["x"; 3000].join("+"), "3000x"));
        assert!(!are_equal_under_sympy(
            &format!("{}x", "-".repeat(5000)),
            "x"
        ));
    }

    #[test]
    fn guard_rejects_three_letters_and_big_exponents() {
        assert!(!should_allow_eval("(pi*r)-(r*pi)"));
        assert!(!should_allow_eval("(2^10)-(1024)"));
        assert!(should_allow_eval("(sqrt(x))-(x^2)"));
    }
}

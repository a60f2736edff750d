//! LaTeX to plain text the way pylatexenc 2.11 does it (`LatexNodes2Text().latex_to_text`), for the
//! math grader: mathruler converts every answer containing a backslash with it before comparing
//! strings or handing them to sympy, so `\frac{x+1}{2}` becomes `x+1/2` and `\sqrt[3]{2}` becomes
//! `√(2)`, quirks included.
//!
//! Covered: tolerant parsing (unclosed groups, stray `}`, missing macro arguments), the argument
//! rules of the macros math answers use (`\frac`, `\sqrt`, `\text…`, `\math…`, accents, `\\`,
//! spacing), a table of symbol macros (Greek letters, relations, operators), `\(…\)`, `\[…\]`,
//! matrix-like and equation environments, and the specials `&`, `~`, `--`, `---`, ` `` `, `''`.
//! Not covered: the rest of pylatexenc's ~940 macros (unknown macros render as nothing, like
//! pylatexenc's own unknown macros), `$`/`%` (mathruler strips both before converting) and the
//! Unicode NFC composition of accents. `None` stands for a Python exception inside pylatexenc
//! (mathruler then keeps the unconverted string).

use crate::py::{py_isalpha, py_isspace, py_strip};

mod render;
use render::{push_char, push_str, render_list};

/// Renders `latex` as pylatexenc would; `None` where pylatexenc raises.
pub(crate) fn latex_to_text(latex: &str) -> Option<String> {
    let chars: Vec<char> = latex.chars().collect();
    let mut parser = Parser {
        s: &chars,
        pos: 0,
        depth: 0,
        too_deep: false,
    };
    let nodes = parser.nodes(Stop::Eof).unwrap_or_default();
    if parser.too_deep {
        return None;
    }
    render_list(&nodes, false)
}

#[derive(Debug)]
enum Node {
    Chars(String),
    Group(Vec<Node>),
    Special(&'static str),
    /// `args` is `None` when the macro takes none or when reading them failed.
    Macro {
        name: String,
        args: Option<Vec<Option<Node>>>,
    },
    Env {
        name: String,
        body: Vec<Node>,
    },
    Math {
        display: bool,
        body: Vec<Node>,
    },
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Eof,
    Brace,
    /// An optional `[...]` argument: a stray `}` or the end of input fails the whole macro.
    Bracket,
    EndEnv,
    Math(char),
}

/// Nesting depth at which pylatexenc, called from mathruler, exceeds Python's recursion limit.
const MAX_NESTING: usize = 248;

/// Reading failed in a way that makes pylatexenc drop all of a macro's arguments.
struct ArgFail;

const SPECIALS: [&str; 8] = ["---", "--", "``", "''", "!`", "?`", "&", "~"];

/// Argument specs of pylatexenc's latexwalker: `{` mandatory, `[` optional, `*` optional star.
#[rustfmt::skip]
const ARG_SPECS: &[(&str, &str)] = &[
    ("frac", "{{"), ("nicefrac", "{{"), ("sqrt", "[{"), ("hspace", "*{"), ("vspace", "*{"),
    ("hphantom", "[{"), ("vphantom", "[{"), ("color", "[{"), ("textcolor", "[{{"),
    ("colorbox", "[{{"), ("\\", "*["),
];
#[rustfmt::skip]
const ONE_ARG: &[&str] = &[
    "text", "textrm", "textit", "textbf", "textmd", "textsc", "textsf", "textsl", "texttt",
    "textup", "emph", "mbox", "mathrm", "label", "ensuremath", "overline", "underline", "widehat",
    "widetilde", "overrightarrow", "overleftarrow", "underbrace", "overbrace",
];
/// Macros whose argument pylatexenc reads but latex2text does not know: they render as nothing.
#[rustfmt::skip]
const DISCARDED: &[&str] = &[
    "textmd", "textsf", "texttt", "textup", "mbox", "label", "hphantom", "vphantom", "color",
    "hspace",
];
#[rustfmt::skip]
const KEEP_ARGS: &[&str] = &[
    "text", "textrm", "textit", "textbf", "textsc", "textsl", "emph", "mathrm",
];
#[rustfmt::skip]
const PERCENT_S: &[&str] = &[
    "ensuremath", "overline", "underline", "widehat", "widetilde", "overrightarrow",
    "overleftarrow", "underbrace", "overbrace",
];
#[rustfmt::skip]
const MATH_STYLES: &[(&str, u32, u32)] = &[
    ("mathbf", 0x1D400, 0x1D41A), ("mathit", 0x1D434, 0x1D44E), ("mathsf", 0x1D5A0, 0x1D5BA),
    ("mathbb", 0x1D538, 0x1D552), ("mathtt", 0x1D670, 0x1D68A), ("mathcal", 0x1D49C, 0x1D4B6),
    ("mathscr", 0x1D49C, 0x1D4B6), ("mathfrak", 0x1D504, 0x1D51E),
];
/// Letters that already had a code point before the math alphabets (holes in those blocks),
/// by block: italic, script (`\mathcal`, `\mathscr`), fraktur, double-struck.
#[rustfmt::skip]
const MATH_STYLE_HOLES: &[(u32, char, char)] = &[
    (0x1D434, 'h', '\u{210E}'), (0x1D49C, 'B', '\u{212C}'), (0x1D49C, 'E', '\u{2130}'),
    (0x1D49C, 'F', '\u{2131}'), (0x1D49C, 'H', '\u{210B}'), (0x1D49C, 'I', '\u{2110}'),
    (0x1D49C, 'L', '\u{2112}'), (0x1D49C, 'M', '\u{2133}'), (0x1D49C, 'R', '\u{211B}'),
    (0x1D49C, 'e', '\u{212F}'), (0x1D49C, 'g', '\u{210A}'), (0x1D49C, 'o', '\u{2134}'),
    (0x1D504, 'C', '\u{212D}'), (0x1D504, 'H', '\u{210C}'), (0x1D504, 'I', '\u{2111}'),
    (0x1D504, 'R', '\u{211C}'), (0x1D504, 'Z', '\u{2128}'), (0x1D538, 'C', '\u{2102}'),
    (0x1D538, 'H', '\u{210D}'), (0x1D538, 'N', '\u{2115}'), (0x1D538, 'P', '\u{2119}'),
    (0x1D538, 'Q', '\u{211A}'), (0x1D538, 'R', '\u{211D}'), (0x1D538, 'Z', '\u{2124}'),
];
#[rustfmt::skip]
const ACCENTS: &[(&str, char)] = &[
    ("'", '\u{301}'), ("`", '\u{300}'), ("\"", '\u{308}'), ("c", '\u{327}'), ("^", '\u{302}'),
    ("~", '\u{303}'), ("H", '\u{30B}'), ("k", '\u{328}'), ("=", '\u{304}'), ("b", '\u{331}'),
    (".", '\u{307}'), ("d", '\u{323}'), ("r", '\u{30A}'), ("u", '\u{306}'), ("v", '\u{30C}'),
    ("vec", '\u{20D7}'), ("dot", '\u{307}'), ("hat", '\u{302}'), ("check", '\u{30C}'),
    ("breve", '\u{306}'), ("acute", '\u{301}'), ("grave", '\u{300}'), ("tilde", '\u{303}'),
    ("bar", '\u{305}'), ("ddot", '\u{308}'), ("not", '\u{338}'),
];
/// Symbol macros, copied from pylatexenc's latex2text defaults.
#[rustfmt::skip]
const SYMBOLS: &[(&str, &str)] = &[
    ("alpha", "α"), ("beta", "β"), ("gamma", "γ"), ("delta", "δ"), ("epsilon", "ϵ"),
    ("varepsilon", "ε"), ("zeta", "ζ"), ("eta", "η"), ("theta", "θ"), ("vartheta", "ϑ"),
    ("iota", "ι"), ("kappa", "κ"), ("lambda", "λ"), ("mu", "μ"), ("nu", "ν"), ("xi", "ξ"),
    ("omicron", "ο"), ("pi", "π"), ("varpi", "ϖ"), ("rho", "ρ"), ("varrho", "ϱ"), ("sigma", "σ"),
    ("varsigma", "ς"), ("tau", "τ"), ("upsilon", "υ"), ("phi", "ϕ"), ("varphi", "φ"), ("chi", "χ"),
    ("psi", "ψ"), ("omega", "ω"), ("Gamma", "Γ"), ("Delta", "Δ"), ("Theta", "Θ"), ("Lambda", "Λ"),
    ("Xi", "Ξ"), ("Pi", "Π"), ("Sigma", "Σ"), ("Upsilon", "Υ"), ("Phi", "Φ"), ("Psi", "Ψ"),
    ("Omega", "Ω"), ("infty", "∞"), ("cup", "∪"), ("cap", "∩"), ("cdot", "·"), ("times", "×"),
    ("div", "÷"), ("pm", "±"), ("mp", "∓"), ("le", "≤"), ("leq", "≤"), ("ge", "≥"), ("geq", "≥"),
    ("neq", "≠"), ("approx", "≈"), ("equiv", "≡"), ("sim", "∼"), ("simeq", "≃"), ("cong", "≅"),
    ("propto", "∝"), ("in", "∈"), ("notin", "∉"), ("ni", "∋"), ("subset", "⊂"), ("subseteq", "⊆"),
    ("supset", "⊃"), ("supseteq", "⊇"), ("setminus", "∖"), ("emptyset", "∅"), ("varnothing", "∅"),
    ("circ", "∘"), ("angle", "∠"), ("perp", "⊥"), ("parallel", "∥"), ("to", "→"),
    ("rightarrow", "→"), ("leftarrow", "←"), ("Rightarrow", "⇒"), ("Leftrightarrow", "⇔"),
    ("leftrightarrow", "↔"), ("mapsto", "↦"), ("forall", "∀"), ("exists", "∃"), ("partial", "∂"),
    ("nabla", "∇"), ("sum", "∑"), ("prod", "∏"), ("int", "∫"), ("ldots", "…"), ("cdots", "⋯"),
    ("dots", "…"), ("vdots", "⋮"), ("ddots", "⋱"), ("langle", "⟨"), ("rangle", "⟩"),
    ("lfloor", "⌊"), ("rfloor", "⌋"), ("lceil", "⌈"), ("rceil", "⌉"), ("vert", "|"), ("mid", "|"),
    ("lvert", "|"), ("rvert", "|"), ("Vert", "‖"), ("lbrace", "{"), ("rbrace", "}"),
    ("prime", "'"), ("dagger", "†"), ("ast", "∗"), ("star", "⋆"), ("bullet", "∙"), ("log", "log"),
    ("ln", "ln"), ("exp", "exp"), ("sin", "sin"), ("cos", "cos"), ("tan", "tan"),
    ("arcsin", "arcsin"), ("arccos", "arccos"), ("arctan", "arctan"), ("sinh", "sinh"),
    ("cosh", "cosh"), ("tanh", "tanh"), ("max", "max"), ("min", "min"), ("sup", "sup"),
    ("inf", "inf"), ("lim", "lim"), ("hbar", "ħ"), ("ell", "ℓ"), ("aleph", "ℵ"),
    ("therefore", "∴"), ("because", "∵"), ("lnot", "¬"), ("wedge", "∧"), ("vee", "∨"),
    ("oplus", "⊕"), ("otimes", "⊗"), ("textdegree", "°"), ("ll", "≪"), ("gg", "≫"), ("quad", "  "),
    ("qquad", "    "), ("backslash", "\\"), ("textbackslash", "\\"), (",", " "), (";", " "),
    (":", " "), (" ", " "), ("!", ""), ("{", "{"), ("}", "}"), ("$", "$"), ("&", "&"), ("#", "#"),
    ("_", "_"), ("%", "%"), ("\\", "\n"), ("vspace", "\n"),
];
#[rustfmt::skip]
const MATRIX_ENVS: &[&str] = &[
    "array", "pmatrix", "bmatrix", "smallmatrix", "psmallmatrix", "bsmallmatrix",
];
#[rustfmt::skip]
const EQUATION_ENVS: &[&str] = &[
    "equation", "equation*", "eqnarray", "eqnarray*", "align", "align*", "multline", "multline*",
    "gather", "gather*", "dmath", "dmath*",
];

fn lookup<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

fn arg_spec(name: &str) -> &'static str {
    if let Some(spec) = lookup(ARG_SPECS, name) {
        spec
    } else if ONE_ARG.contains(&name)
        || lookup(ACCENTS, name).is_some()
        || MATH_STYLES.iter().any(|(n, ..)| *n == name)
    {
        "{"
    } else {
        ""
    }
}

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
    /// Nesting of groups, arguments and environments; beyond [`MAX_NESTING`] pylatexenc hits
    /// Python's recursion limit, which mathruler catches (it then keeps the LaTeX as is).
    depth: usize,
    too_deep: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn starts_with(&self, pat: &str) -> bool {
        pat.chars()
            .enumerate()
            .all(|(i, c)| self.s.get(self.pos + i) == Some(&c))
    }

    /// Whitespace before a token; a paragraph break (two newlines) is itself a token.
    fn skip_space(&mut self) -> Option<Node> {
        let mut prev_newline = false;
        while let Some(c) = self.peek().filter(|c| py_isspace(*c)) {
            self.pos += 1;
            if c == '\n' && prev_newline {
                return Some(Node::Chars("\n\n".into()));
            }
            prev_newline = c == '\n';
        }
        None
    }

    fn special(&mut self) -> Option<&'static str> {
        let found = SPECIALS.iter().copied().find(|sp| self.starts_with(sp))?;
        self.pos += found.chars().count();
        Some(found)
    }

    fn nodes(&mut self, stop: Stop) -> Result<Vec<Node>, ArgFail> {
        if self.depth >= MAX_NESTING {
            self.too_deep = true;
            self.pos = self.s.len();
            return Ok(Vec::new());
        }
        self.depth += 1;
        let nodes = self.node_list(stop);
        self.depth -= 1;
        nodes
    }

    fn node_list(&mut self, stop: Stop) -> Result<Vec<Node>, ArgFail> {
        let mut out: Vec<Node> = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                '}' if stop == Stop::Bracket => return Err(ArgFail),
                '}' if stop == Stop::Brace => {
                    self.pos += 1;
                    return Ok(out);
                }
                '}' => self.pos += 1,
                ']' if stop == Stop::Bracket => {
                    self.pos += 1;
                    return Ok(out);
                }
                '{' => {
                    self.pos += 1;
                    out.push(Node::Group(self.nodes(Stop::Brace).unwrap_or_default()));
                }
                '\\' => {
                    if self.backslash(stop, &mut out) {
                        return Ok(out);
                    }
                }
                _ => match self.special() {
                    Some(sp) => out.push(Node::Special(sp)),
                    None => {
                        self.pos += 1;
                        push_char(&mut out, c);
                    }
                },
            }
        }
        if stop == Stop::Bracket {
            return Err(ArgFail);
        }
        Ok(out)
    }

    /// Reads the macro name after a backslash; `None` at the end of input.
    fn macro_name(&mut self) -> Option<String> {
        let first = *self.s.get(self.pos + 1)?;
        self.pos += 2;
        let mut name = String::from(first);
        if py_isalpha(first) {
            while let Some(c) = self.peek().filter(|c| py_isalpha(*c)) {
                name.push(c);
                self.pos += 1;
            }
        }
        Some(name)
    }

    /// Space after a letter macro belongs to it, except a paragraph break.
    fn skip_post_space(&mut self) {
        let mut prev_newline = false;
        while let Some(c) = self.peek().filter(|c| py_isspace(*c)) {
            if c == '\n' && prev_newline {
                self.pos -= 1;
                return;
            }
            prev_newline = c == '\n';
            self.pos += 1;
        }
    }

    /// `{name}` after `\begin` or `\end` (pylatexenc: `^\s*\{([\w* ._-]+)\}`).
    fn env_name(&mut self) -> Option<String> {
        let mut i = self.pos;
        while self.s.get(i).is_some_and(|c| py_isspace(*c)) {
            i += 1;
        }
        if self.s.get(i) != Some(&'{') {
            return None;
        }
        let is_name_char = |c: &char| c.is_alphanumeric() || "_* .-".contains(*c);
        let len = self.s[i + 1..]
            .iter()
            .take_while(|c| is_name_char(c))
            .count();
        if len == 0 || self.s.get(i + 1 + len) != Some(&'}') {
            return None;
        }
        self.pos = i + len + 2;
        Some(self.s[i + 1..i + 1 + len].iter().collect())
    }

    /// Handles a backslash in a node list; returns true when it closes the list.
    fn backslash(&mut self, stop: Stop, out: &mut Vec<Node>) -> bool {
        let Some(name) = self.macro_name() else {
            self.pos = self.s.len();
            return false;
        };
        match name.as_str() {
            "(" | "[" => {
                let close = if name == "(" { ')' } else { ']' };
                let body = self.nodes(Stop::Math(close)).unwrap_or_default();
                out.push(Node::Math {
                    display: name == "[",
                    body,
                });
            }
            ")" | "]" => return stop == Stop::Math(name.chars().next().unwrap_or(')')),
            "begin" | "end" => match self.env_name() {
                None => push_str(out, &format!("\\{name}")),
                Some(_) if name == "end" => return stop == Stop::EndEnv,
                Some(env) => {
                    let spec = match env.as_str() {
                        "array" => "[{",
                        "tabular" => "{",
                        _ => "",
                    };
                    let _ = self.args(spec, false);
                    let body = self.nodes(Stop::EndEnv).unwrap_or_default();
                    out.push(Node::Env { name: env, body });
                }
            },
            _ => {
                if name.chars().next().is_some_and(py_isalpha) {
                    self.skip_post_space();
                }
                let spec = arg_spec(&name);
                let args = if spec.is_empty() {
                    None
                } else {
                    let start = self.pos;
                    let args = self.args(spec, name == "\\");
                    if args.is_none() {
                        self.pos = start;
                    }
                    args
                };
                out.push(Node::Macro { name, args });
            }
        }
        false
    }

    fn args(&mut self, spec: &str, optional_no_space: bool) -> Option<Vec<Option<Node>>> {
        let mut args = Vec::new();
        for kind in spec.chars() {
            let arg = match kind {
                '*' => {
                    self.skip_space();
                    (self.peek() == Some('*')).then(|| {
                        self.pos += 1;
                        Node::Chars("*".into())
                    })
                }
                '[' => self.optional_arg(optional_no_space).ok()?,
                _ => Some(self.expression()?),
            };
            args.push(arg);
        }
        Some(args)
    }

    fn optional_arg(&mut self, no_space: bool) -> Result<Option<Node>, ArgFail> {
        let start = self.pos;
        if !no_space {
            self.skip_space();
        }
        if self.peek() != Some('[') {
            self.pos = start;
            return Ok(None);
        }
        self.pos += 1;
        Ok(Some(Node::Group(self.nodes(Stop::Bracket)?)))
    }

    /// One TeX token as a macro argument; `None` at the end of input.
    fn expression(&mut self) -> Option<Node> {
        if let Some(paragraph) = self.skip_space() {
            return Some(paragraph);
        }
        match self.peek()? {
            '\\' => {
                let start = self.pos;
                let name = self.macro_name()?;
                if name == "end" {
                    // pylatexenc reads `\end` as an empty argument and leaves it in place.
                    self.pos = start;
                    return Some(Node::Chars(String::new()));
                }
                if py_isalpha(name.chars().next()?) {
                    self.skip_post_space();
                }
                Some(Node::Macro { name, args: None })
            }
            '{' => {
                self.pos += 1;
                Some(Node::Group(self.nodes(Stop::Brace).unwrap_or_default()))
            }
            '}' => Some(Node::Chars(String::new())),
            c => Some(match self.special() {
                Some(sp) => Node::Special(sp),
                None => {
                    self.pos += 1;
                    Node::Chars(c.to_string())
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_pylatexenc() {
        let text = |s: &str| latex_to_text(s);
        assert_eq!(text(r" \frac{x+1}{2}").as_deref(), Some(" x+1/2"));
        assert_eq!(text(r"\sqrt[3]{2}\pi x").as_deref(), Some("√(2)πx"));
        assert_eq!(text(r"\frac{1}").as_deref(), Some("%s/%s1"));
        assert_eq!(text(r"\sqrt"), None);
        assert_eq!(
            text(r"\begin{pmatrix}1\\-2\\33\end{pmatrix}").as_deref(),
            Some("[  1; -2; 33 ]")
        );
        assert_eq!(
            text(r"\mbox{ cm}\mathbb{R}\text{ a}").as_deref(),
            Some("ℝ a")
        );
    }

    #[test]
    fn nesting_beyond_pythons_recursion_limit_fails() {
        let nested = |n: usize| format!("{}x{}", "{".repeat(n), "}".repeat(n));
        assert_eq!(latex_to_text(&nested(200)).as_deref(), Some("x"));
        assert_eq!(latex_to_text(&nested(5000)), None);
        assert!(latex_to_text(&"\\sqrt{".repeat(5000)).is_none());
    }
}

//! Python's string predicates and `float()` as the paper's graders (Python code) apply them:
//! the letter grader strips with `str.isspace`, the MATH grader parses numbers with `float` and
//! matches `\\d` digits in every Unicode script. One place, so both graders agree with Python.

/// Python's `float(s)`: surrounding whitespace, Unicode decimal digits and `_` between digits.
pub(crate) fn py_float(s: &str) -> Option<f64> {
    let chars: Vec<char> = py_strip(s)
        .chars()
        .map(|c| py_digit(c).map_or(c, |d| char::from(b'0' + d)))
        .collect();
    let mut ascii = String::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_at = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(char::is_ascii_digit)
        };
        match c {
            '_' if digit_at(i.checked_sub(1)) && digit_at(Some(i + 1)) => {}
            c if c.is_ascii() && !c.is_ascii_whitespace() && c != '_' => ascii.push(c),
            _ => return None,
        }
    }
    ascii.parse().ok()
}

/// Value of a Unicode decimal digit (Python's `\d`, category Nd).
pub(crate) fn py_digit(c: char) -> Option<u8> {
    const ZEROS: [u32; 66] = [
        0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66,
        0xde6, 0xe50, 0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90,
        0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0,
        0xff10, 0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0,
        0x11650, 0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60, 0x16ac0,
        0x16b50, 0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
    ];
    let code = c as u32;
    let zero = ZEROS.iter().rev().find(|&&z| z <= code)?;
    u8::try_from(code - zero).ok().filter(|d| *d < 10)
}

/// Python's `str.isspace`.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.isalpha` (Unicode letters), approximated by the Alphabetic property.
pub(crate) fn py_isalpha(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric()
}

/// Python's `str.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_rules() {
        assert_eq!(py_float(" 1_000 "), Some(1000.0));
        assert_eq!(py_float("１２"), Some(12.0));
        assert_eq!(py_float("1__0"), None);
        assert_eq!(py_float("_1"), None);
        assert_eq!(py_float("1 0"), None);
        assert_eq!(py_float(".5"), Some(0.5));
    }
}

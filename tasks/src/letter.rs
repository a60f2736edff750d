//! The ARC letter grader of the paper: the stripped output must match
//! `^(?:Answer:\s*)?([A-Da-d])\.?$` and the letter equal the gold letter. Written as a small
//! matcher rather than a regex so that the same code also answers "can any continuation of this
//! partial output still change the verdict?" — the exact early-stop test of generation.

use crate::py::py_isspace as py_space;

const ANSWER: &str = "Answer:";

/// Where the text after the optional `Answer:` stands against `([A-Da-d])\.?` + end.
#[derive(Debug, PartialEq, Eq)]
enum Tail {
    /// Matches with this letter (upper-cased); appended text can only keep or break the match.
    Letter(char),
    /// Cannot match, whatever follows.
    Dead,
}

fn tail(rest: &str) -> Tail {
    let mut chars = rest.chars();
    let Some(l) = chars.next().filter(|c| matches!(c, 'A'..='D' | 'a'..='d')) else {
        return Tail::Dead;
    };
    let after = chars.as_str();
    let after = after.strip_prefix('.').unwrap_or(after);
    if after.chars().all(py_space) {
        Tail::Letter(l.to_ascii_uppercase())
    } else {
        Tail::Dead
    }
}

/// The letter a complete output answers, if it matches the pattern.
pub fn extract(output: &str) -> Option<char> {
    let s = output.trim_matches(py_space);
    let rest = match s.strip_prefix(ANSWER) {
        Some(r) => r.trim_start_matches(py_space),
        None => s,
    };
    match tail(rest) {
        Tail::Letter(l) => Some(l),
        Tail::Dead => None,
    }
}

/// The paper's verdict for a complete output.
pub fn grade(output: &str, gold: char) -> bool {
    extract(output) == Some(gold.to_ascii_uppercase())
}

/// True when no continuation of `partial` can change its verdict: nothing can match any more, or
/// the letter is already there and wrong (appending can only keep a match or break it).
pub fn verdict_fixed(partial: &str, gold: char) -> bool {
    let s = partial.trim_start_matches(py_space);
    // "", "A", "Ans", … "Answer:" may still become "Answer: <gold>".
    if ANSWER.starts_with(s) {
        return false;
    }
    let rest = match s.strip_prefix(ANSWER) {
        Some(r) => {
            let r = r.trim_start_matches(py_space);
            if r.is_empty() {
                return false;
            }
            r
        }
        None => s,
    };
    match tail(rest) {
        Tail::Letter(l) => l != gold.to_ascii_uppercase(),
        Tail::Dead => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grades_like_the_papers_regex() {
        for (out, gold, ok) in [
            ("B", 'B', true),
            ("A", 'A', true), // also a prefix of "Answer:"
            ("a\n", 'A', true),
            ("Answer: A", 'A', true),
            (" b. ", 'B', true),
            ("Answer: C", 'C', true),
            ("Answer:D.", 'D', true),
            ("Answer:\n a", 'A', true),
            ("A. water", 'A', false), // what the 135M model says: rejected by the regex
            ("E", 'E', false),        // only A–D match
            ("Answer: B is right", 'B', false),
            ("The answer is B", 'B', false),
            ("", 'A', false),
            ("Answer:", 'A', false),
            ("B..", 'B', false),
            ("\u{1c}B\u{1f}", 'B', true),
        ] {
            assert_eq!(grade(out, gold), ok, "{out:?}");
        }
    }

    #[test]
    fn early_stop_cases() {
        assert!(!verdict_fixed("", 'B'));
        assert!(!verdict_fixed("A", 'B')); // may become "Answer: B"
        assert!(!verdict_fixed("A", 'A'));
        assert!(!verdict_fixed("Ans", 'B'));
        assert!(!verdict_fixed("Answer: ", 'B'));
        assert!(!verdict_fixed("Answer: B", 'B'));
        assert!(verdict_fixed("Answer: C", 'B'));
        assert!(verdict_fixed("A. water", 'A'));
        assert!(verdict_fixed("The", 'A'));
    }

    /// Outputs over an alphabet where matches are likely.
    fn outputs() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("Answer:".to_string()),
                Just("Answer".to_string()),
                "[ABCDEabcde.: \n\tx]".prop_map(|s| s.to_string()),
                any::<char>().prop_map(|c| c.to_string()),
            ],
            0..8,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        /// The matcher agrees with the paper's regex (Python's `\s` also counts U+001C–U+001F,
        /// which Rust's regex does not: those are left out here and unit-tested above).
        #[test]
        fn extract_agrees_with_the_papers_regex(out in outputs()) {
            prop_assume!(!out.chars().any(|c| ('\u{1c}'..='\u{1f}').contains(&c)));
            let re = regex::Regex::new(r"^(?:Answer:\s*)?([A-Da-d])\.?$").unwrap();
            let expected = re
                .captures(out.trim())
                .and_then(|c| c[1].chars().next())
                .map(|c| c.to_ascii_uppercase());
            prop_assert_eq!(extract(&out), expected, "{:?}", out);
        }

        /// Stopping early never changes a verdict: whenever a prefix is declared fixed, its
        /// verdict equals the full output's.
        #[test]
        fn early_stop_is_exact(full in outputs(), gold in "[A-E]") {
            let gold = gold.chars().next().unwrap();
            let verdict = grade(&full, gold);
            for (i, _) in full.char_indices().chain(std::iter::once((full.len(), ' '))) {
                let prefix = &full[..i];
                if verdict_fixed(prefix, gold) {
                    prop_assert_eq!(grade(prefix, gold), verdict, "prefix {:?} of {:?}", prefix, full);
                }
            }
        }
    }
}

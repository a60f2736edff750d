//! Placeholder until the mathruler port lands.

pub fn extract_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 0i32;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(text[start..start + i].trim().to_string()),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

pub fn is_equiv(pred: &str, gold: &str) -> bool {
    pred.trim() == gold.trim()
}

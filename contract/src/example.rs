//! One task example: what the coordinator leases, the search reads and a record names.

/// What kind of answer an example expects, which decides prompt and grader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerKind {
    /// Multiple choice, graded by letter (choices re-lettered A, B, C, …).
    Letter,
    /// A mathematical answer in LaTeX, graded by equivalence of the last `\boxed{}`.
    Math,
}

/// One task example: the question, its choices if any, the gold answer and how it is graded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// Stable id: dataset family + source id, e.g. `arc_easy/Mercury_7220990`.
    pub id: String,
    /// Dataset name as requested (`arc_easy`, `dart-3`, `jsonl:questions`).
    pub dataset: String,
    /// Split as requested (`train`, `dev`, `test`, …; `all` for [`load_jsonl`]).
    pub split: String,
    /// The question as the dataset gives it (ARC `question.stem`, MATH `problem`), without the
    /// choices.
    pub question: String,
    /// Choice texts in order (letters A, B, C, … by position); empty for open answers.
    pub choices: Vec<String>,
    /// Gold answer: a letter for multiple choice, LaTeX for math.
    pub answer: String,
    /// How the answer is graded.
    pub kind: AnswerKind,
    /// MATH difficulty level, 1–5; `None` for other datasets and for MATH's `Level ?`.
    pub level: Option<u8>,
}

impl Example {
    /// Index of the gold choice (multiple choice only).
    pub fn gold_index(&self) -> Option<usize> {
        let c = self.answer.chars().next()?;
        let i = (c as u32).checked_sub('A' as u32)? as usize;
        (self.answer.len() == 1 && i < self.choices.len()).then_some(i)
    }
}

/// An example that breaks the rules every reader relies on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("example `{id}`: `{field}` {problem}")]
pub struct InvalidExample {
    /// The example's id.
    pub id: String,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Example {
    /// Checks an example that crossed a process boundary: an id, a question, and for multiple
    /// choice a gold letter that names one of the choices.
    pub fn validate(&self) -> Result<(), InvalidExample> {
        let bad = |field: &'static str, problem: &str| InvalidExample {
            id: self.id.clone(),
            field,
            problem: problem.to_string(),
        };
        if self.id.is_empty() {
            return Err(bad("id", "is empty"));
        }
        if self.question.trim().is_empty() {
            return Err(bad("question", "is blank"));
        }
        if self.kind == AnswerKind::Letter && self.gold_index().is_none() {
            return Err(bad("answer", "is not the letter of one of the choices"));
        }
        Ok(())
    }
}

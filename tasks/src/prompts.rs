//! The prompts the model sees, verbatim from the paper's code (DESIGN.md "The search"), and the
//! lm-eval-harness context/continuations of the `choice-loglik` reward.

use super::dataset::letter;
use drllm_contract::{AnswerKind, Example};

/// Greedy token budget of the paper's generation for multiple choice, instruct prompts.
pub const MAX_NEW_TOKENS_ARC_INSTRUCT: usize = 10;
/// Greedy token budget of the paper's generation for multiple choice, base prompts.
pub const MAX_NEW_TOKENS_ARC_BASE: usize = 2;
/// Greedy token budget of the paper's generation for MATH, either prompt style.
pub const MAX_NEW_TOKENS_MATH: usize = 15;

/// Whether the model gets chat-templated instruct prompts or the base-model prompts (part of the
/// recorded run settings, hence defined in drllm-records).
use drllm_contract::PromptStyle;

/// A generation prompt: the text before any chat template, the token budget, and the text the
/// grader puts before the model's output (the base math prompt leaves `\boxed{` open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenPrompt {
    /// The prompt, before any chat template.
    pub text: String,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Text put before the model's output when grading: `\boxed{` for base MATH prompts, else
    /// empty.
    pub output_prefix: &'static str,
}

/// The task prompt for generation (before the chat template).
pub fn generation_prompt(ex: &Example, style: PromptStyle) -> GenPrompt {
    match (ex.kind, style) {
        (AnswerKind::Letter, PromptStyle::Instruct) => GenPrompt {
            text: format!(
                "\"Question: {}\n{}\nAnswer with a single letter (A, B, C, or D) and no explanation. You answer should start with \"Answer: \" and be followed by the letter of the answer you choose. Do not include any other text in your response.",
                ex.question,
                choice_lines(ex, |l, t| format!("{l}. {t}"))
            ),
            max_new_tokens: MAX_NEW_TOKENS_ARC_INSTRUCT,
            output_prefix: "",
        },
        (AnswerKind::Letter, PromptStyle::Base) => GenPrompt {
            text: format!(
                "Question: {}\n\n{}\n\nAnswer: The correct answer is ",
                ex.question,
                choice_lines(ex, |l, t| format!("({l}) {t}"))
            ),
            max_new_tokens: MAX_NEW_TOKENS_ARC_BASE,
            output_prefix: "",
        },
        (AnswerKind::Math, PromptStyle::Instruct) => GenPrompt {
            text: format!(
                "Question: {}\nThe final answer MUST BE put in \\boxed{{}} and no explanation.",
                ex.question
            ),
            max_new_tokens: MAX_NEW_TOKENS_MATH,
            output_prefix: "",
        },
        (AnswerKind::Math, PromptStyle::Base) => GenPrompt {
            text: format!(
                "Question: What is $2 + 3$?\nAnswer: \\boxed{{5}}\n\nQuestion: What is $10 \\div 2$?\nAnswer: \\boxed{{5}}\n\nQuestion: {}\nAnswer: \\boxed{{",
                ex.question
            ),
            max_new_tokens: MAX_NEW_TOKENS_MATH,
            output_prefix: "\\boxed{",
        },
    }
}

fn choice_lines(ex: &Example, fmt: impl Fn(char, &str) -> String) -> String {
    ex.choices
        .iter()
        .enumerate()
        .map(|(i, t)| fmt(letter(i), t))
        .collect::<Vec<_>>()
        .join("\n")
}

/// lm-eval-harness ARC: the context `Question: {stem}\nAnswer:`.
pub fn loglik_context(ex: &Example) -> String {
    format!("Question: {}\nAnswer:", ex.question)
}

/// lm-eval-harness ARC: one continuation ` {choice text}` per choice.
pub fn loglik_continuations(ex: &Example) -> Vec<String> {
    ex.choices.iter().map(|c| format!(" {c}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arc() -> Example {
        Example {
            id: "arc_easy/x".into(),
            dataset: "arc_easy".into(),
            split: "train".into(),
            question: "Which is a gas?".into(),
            choices: vec!["ice".into(), "steam".into(), "rock".into()],
            answer: "B".into(),
            kind: AnswerKind::Letter,
            level: None,
        }
    }

    #[test]
    fn prompts_are_the_papers_templates() {
        let p = generation_prompt(&arc(), PromptStyle::Instruct);
        assert_eq!(p.text, "\"Question: Which is a gas?\nA. ice\nB. steam\nC. rock\nAnswer with a single letter (A, B, C, or D) and no explanation. You answer should start with \"Answer: \" and be followed by the letter of the answer you choose. Do not include any other text in your response.");
        assert_eq!(p.max_new_tokens, 10);
        let b = generation_prompt(&arc(), PromptStyle::Base);
        assert_eq!(b.text, "Question: Which is a gas?\n\n(A) ice\n(B) steam\n(C) rock\n\nAnswer: The correct answer is ");
        assert_eq!(b.max_new_tokens, 2);
        let m = Example {
            kind: AnswerKind::Math,
            choices: vec![],
            answer: "5".into(),
            question: "What is $1+4$?".into(),
            ..arc()
        };
        assert_eq!(generation_prompt(&m, PromptStyle::Instruct).text, "Question: What is $1+4$?\nThe final answer MUST BE put in \\boxed{} and no explanation.");
        let mb = generation_prompt(&m, PromptStyle::Base);
        assert!(mb
            .text
            .ends_with("Question: What is $1+4$?\nAnswer: \\boxed{"));
        assert_eq!(mb.output_prefix, "\\boxed{");
        assert_eq!(loglik_context(&arc()), "Question: Which is a gas?\nAnswer:");
        assert_eq!(
            loglik_continuations(&arc()),
            vec![" ice", " steam", " rock"]
        );
    }
}

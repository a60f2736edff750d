//! Chat templates (the Jinja programs in `tokenizer_config.json` or GGUF
//! `tokenizer.chat_template`), rendered with minijinja plus its Python-compatibility methods.

use minijinja::{context, Environment, ErrorKind};

use crate::error::{Error, Result};

/// A model's chat template, parsed once, with the BOS and EOS texts it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Parses the Jinja `source`; `bos` and `eos` are the token texts the template sees as
    /// `bos_token` and `eos_token`. Templates may call `raise_exception(msg)`, which fails the render.
    pub fn new(source: &str, bos: String, eos: String) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::ChatTemplate(format!("cannot parse: {e}")))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos,
            eos,
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The BOS and EOS token texts the template is rendered with.
    pub fn special_tokens(&self) -> (&str, &str) {
        (&self.bos, &self.eos)
    }

    /// Renders `(role, content)` messages; `add_generation_prompt` opens the assistant turn.
    pub fn render(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<_> = messages
            .iter()
            .map(|(role, content)| context! { role => role, content => content })
            .collect();
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| Error::ChatTemplate(format!("cannot render: {e}")))
    }
}

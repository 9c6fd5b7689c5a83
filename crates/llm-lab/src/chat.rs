//! Chat: messages rendered with the model's own chat template (Jinja, from the GGUF or
//! tokenizer_config.json), then generation until the end-of-turn token.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::generate::{CachedModel, GenerateOptions, Generated, Generation};
use crate::model::Model;

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A message from the user.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// A system prompt.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A message from the assistant.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Renders `messages` with a Jinja chat `template`.
///
/// ```
/// use llm_lab::chat::{render_template, Message};
/// let t = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
/// let s = render_template(t, &[Message::user("Oi!")], true, "", "")?;
/// assert_eq!(s, "<|im_start|>user\nOi!<|im_end|>\n<|im_start|>assistant\n");
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn render_template(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_function("strftime_now", |_fmt: String| "26 Jul 2024".to_string());
    env.add_template("chat", template)
        .map_err(|e| Error::invalid(format!("the chat template does not parse: {e}")))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| Error::invalid(e.to_string()))?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| Error::invalid(format!("the chat template failed: {e}")))
}

impl Model {
    /// The prompt the model sees for `messages`, ending with the assistant's turn.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let template = self.config.chat_template.as_deref().ok_or_else(|| {
            Error::invalid("this model has no chat template: it is a base model; use generate() with a plain prompt")
        })?;
        let name = |id: Option<u32>| {
            id.and_then(|i| self.tokenizer.token_piece(i))
                .unwrap_or_default()
        };
        render_template(
            template,
            messages,
            true,
            &name(self.config.bos_token_id),
            &name(self.config.eos_token_ids.first().copied()),
        )
    }

    /// Answers a conversation with the model's chat template.
    ///
    /// ```no_run
    /// use llm_lab::prelude::*;
    /// let model = Model::load_default()?;
    /// let out = model.chat(&[Message::user("What is the capital of France?")], GenerateOptions::greedy(32))?;
    /// assert!(out.text.contains("Paris"));
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn chat(&self, messages: &[Message], options: GenerateOptions) -> Result<Generated> {
        let prompt = self.render_chat(messages)?;
        // The template writes special tokens (and BOS if needed) as text: encode without adding any.
        let tokens = self.tokenizer.encode(&prompt)?;
        Generation::new(CachedModel::new(self), &tokens, options)?.finish()
    }
}

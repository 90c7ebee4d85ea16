"""Turn an environment's question into the text the model is conditioned on.

One function, `format_prompt`, is used by both the rollout side and the learner, so a hint is
placed identically in both. The user-turn text is::

    [Hint: <hint>\\n]<question>[\\n<instruction>]

- with a chat template (`tokenizer.chat_template` set): messages ``[system?] + [user]`` rendered
  by the template with the generation prompt appended;
- without one (tiny character-level models): ``[<system_prompt>\\n]`` + the user-turn text, with
  nothing after it -- no trailing newline -- because such models are trained on "12+34=" directly
  followed by the answer. With no system prompt, no instruction and no hint the question comes
  back unchanged.

The hint goes before the question so that the prompt still ends exactly where the answer starts.

Tokens (`encode_prompt`): with a chat template the rendered text already holds the model's special
tokens (BOS included, where the model uses one), so it is encoded with add_special_tokens=False;
without one the tokenizer's own convention applies (add_special_tokens=True: e.g. Llama prepends
BOS). The SFT warm-up must encode its prompts the same way so that warm-up and rollouts agree.
"""

from __future__ import annotations

from typing import Any


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def user_text(question: str, *, instruction: str = "", hint: str | None = None) -> str:
    text = question
    if instruction:
        text = f"{text}\n{instruction}"
    if hint:
        text = f"Hint: {hint}\n{text}"
    return text


def prompt_messages(question: str, *, system_prompt: str | None, instruction: str, hint: str | None) -> list[dict[str, str]]:
    """The prompt as chat messages (also what conversational reward functions receive)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_text(question, instruction=instruction, hint=hint)})
    return messages


def format_prompt(tokenizer: Any, question: str, *, system_prompt: str | None, instruction: str, hint: str | None) -> str:
    if has_chat_template(tokenizer):
        messages = prompt_messages(question, system_prompt=system_prompt, instruction=instruction, hint=hint)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = user_text(question, instruction=instruction, hint=hint)
    return f"{system_prompt}\n{text}" if system_prompt else text


def format_env_prompt(tokenizer: Any, env_cfg: Any, question: str, hint: str | None = None) -> str:
    """`format_prompt` with the environment config's system prompt and instruction."""
    return format_prompt(tokenizer, question, system_prompt=env_cfg.system_prompt, instruction=env_cfg.instruction, hint=hint)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a `format_prompt` text, special tokens per the tokenizer's convention (see above)."""
    return tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]

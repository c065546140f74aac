"""Turn chat text into training token ids with the model's own chat template."""

from __future__ import annotations

from .loop import TokenizedExample


def tokenize_example(tokenizer, prompt: str | list[dict], answer: str, *, max_len: int = 512) -> TokenizedExample:
    """Prompt tokens up to the assistant header, answer tokens through the end of the turn.

    ``prompt`` is a user message or a list of chat messages; the answer is cut so that
    the whole example fits ``max_len`` tokens.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": answer}], tokenize=False
    )
    if not full.startswith(head):
        raise ValueError("the chat template renders the prompt differently with and without an answer")
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]
    room = max_len - len(prompt_ids)
    if room < 2:
        raise ValueError(f"the prompt alone is {len(prompt_ids)} tokens; max_len is {max_len}")
    return TokenizedExample(prompt_ids, answer_ids[:room])

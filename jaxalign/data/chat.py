"""Chat messages -> text: the tokenizer's own Jinja chat template, or a simple default.

The default template (used when the tokenizer has none, e.g. :class:`ByteTokenizer`), for
``[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]``::

    <|user|>
    Hi
    <|assistant|>
    Hello

i.e. ``"<|{role}|>\\n{content}\\n"`` per message, and ``"<|assistant|>\\n"`` appended when
``add_generation_prompt``. The markers are plain text, not special tokens. Using it warns
(``FALLBACK_WARNING``): a model was never trained on it.

A tokenizer's own template is rendered the way Hugging Face ``apply_chat_template`` does:
a sandboxed Jinja environment with ``trim_blocks`` and ``lstrip_blocks``, the
``loopcontrols`` extension, ``raise_exception``, ``strftime_now`` and a non-escaping
``tojson``, with ``messages``, ``add_generation_prompt`` and the special tokens
(``bos_token``, ``eos_token``, ...) as variables. Needs ``jinja2`` (only for such templates).
"""

from __future__ import annotations

import datetime
import functools
import json
import warnings

from jaxalign.data import report as reasons
from jaxalign.data.report import DataError

GENERATION_PROMPT = "<|assistant|>\n"
FALLBACK_WARNING = ("chat messages are rendered with jaxalign's built-in fallback template "
                    "('<|role|>' lines, docs/data.md), not one the model was trained with: the "
                    "tokenizer has no chat_template; set data.chat_template (a Jinja string "
                    "or file) to the model's own")


def default_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
  """The documented default template, in plain Python."""
  text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
  return text + (GENERATION_PROMPT if add_generation_prompt else "")


@functools.lru_cache(maxsize=16)
def _compile(template: str):
  # Imported here: jinja2 is needed only for a tokenizer's own template.
  import jinja2  # pylint: disable=import-outside-toplevel
  import jinja2.ext  # pylint: disable=import-outside-toplevel
  import jinja2.sandbox  # pylint: disable=import-outside-toplevel

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
  environment.filters["tojson"] = tojson
  environment.globals["raise_exception"] = raise_exception
  environment.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)
  return environment.from_string(template)


def render_chat(messages: list[dict], tokenizer=None, add_generation_prompt: bool = False,
                template: str | None = None) -> str:
  """Render ``messages`` with ``template``, else ``tokenizer.chat_template``, else the default."""
  template = template or getattr(tokenizer, "chat_template", None)
  if template is None:
    warnings.warn(FALLBACK_WARNING)  # one location: Python shows it once per process
    return default_chat(messages, add_generation_prompt)
  special_tokens = getattr(tokenizer, "special_tokens", {}) or {}
  return _compile(template).render(messages=messages,
                                   add_generation_prompt=add_generation_prompt,
                                   **special_tokens)


def split_chat(prompt: list[dict], response: list[dict], tokenizer=None,
               template: str | None = None) -> tuple[str, str]:
  """(prompt text with the generation prompt, response text) of one conversation.

  The response text is what rendering ``prompt + response`` adds after rendering ``prompt``
  with ``add_generation_prompt=True``; a template for which that is not a prefix raises a
  ``bad_chat_template`` DataError (the split between scored and unscored tokens would be a
  guess).
  """
  prompt_text = render_chat(prompt, tokenizer, add_generation_prompt=True, template=template)
  full_text = render_chat(prompt + response, tokenizer, template=template)
  if not full_text.startswith(prompt_text):
    raise DataError(reasons.BAD_CHAT_TEMPLATE, "rendering prompt + response does not start "
                    "with the rendered prompt (add_generation_prompt=True)")
  return prompt_text, full_text[len(prompt_text):]

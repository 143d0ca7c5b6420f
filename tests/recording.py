"""A wrapper that delegates to a real model and keeps every chat it was sent.

Not a mock: generations are the real model's. Tests use it to check which
prompts (plans, history, candidates) each model actually received.
"""

from __future__ import annotations


class Recording:
    def __init__(self, model, spec: str = "local/smollm2-135m") -> None:
        self.model = model
        self.spec = spec
        self.chats: list[list[dict[str, str]]] = []

    @property
    def prompts(self) -> list[str]:
        """The last message of each chat: the request itself."""
        return [c[-1]["content"] for c in self.chats]

    async def generate(self, messages, params):
        self.chats.append(list(messages))
        return await self.model.generate(messages, params)

    async def generate_many(self, prompts, params):
        self.chats.extend(list(p) for p in prompts)
        return await self.model.generate_many(prompts, params)

"""The http judge: any OpenAI-compatible chat-completions endpoint (`vllm serve`, or a provider).

Every request has a timeout and is retried (exponential backoff) on a timeout, a connection error,
429 or a 5xx answer; other 4xx answers fail at once. A thread pool caps the requests in flight. The
API key is read from the environment variable the recipe names, sent only in the Authorization
header, and never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from rayda import templates
from rayda.judges.base import Judge
from rayda.types import Verdict


class HttpJudgeError(RuntimeError):
    pass


class HttpJudge(Judge):
    kind = "http"
    needs_label = False

    def __init__(self, spec, spec_texts, model, cfg):
        super().__init__(spec, spec_texts, model)
        if not cfg.base_url:
            raise ValueError("judge.kind=http needs judge.base_url (e.g. http://127.0.0.1:8000/v1)")
        import httpx

        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.api_model = cfg.api_model or model
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(cfg.timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=max(1, cfg.concurrency), thread_name_prefix="http-judge")

    def __repr__(self) -> str:  # no headers, so no key
        return f"HttpJudge(url={self.url!r}, model={self.api_model!r})"

    # ---- one request ---------------------------------------------------------------------------
    def _body(self, view: str, req, n: int, seed: int) -> dict:
        body = {
            "model": self.api_model,
            "messages": self.messages(view, req),
            "n": n,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            "seed": seed,
        }
        if self.cfg.structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": f"{view}_verdict", "schema": templates.verdict_schema(view), "strict": True},
            }
        return body

    def _post(self, body: dict) -> list[dict]:
        """The `choices` of one request, after retries; raises HttpJudgeError with a short reason."""
        import httpx

        last = "no attempt"
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            try:
                r = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"timeout after {self.cfg.timeout_s:g}s"
                continue
            except httpx.TransportError as e:
                last = f"connection error: {type(e).__name__}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                raise HttpJudgeError(f"HTTP {r.status_code}: {r.text[:200]}")
            try:
                return r.json()["choices"]
            except (ValueError, KeyError, TypeError):
                raise HttpJudgeError(f"response is not a chat completion: {r.text[:200]}") from None
        raise HttpJudgeError(f"{last} ({self.cfg.retries + 1} attempts)")

    def _verdicts(self, view: str, req, n: int, seed: int) -> list[Verdict]:
        try:
            choices = self._post(self._body(view, req, n, seed))
        except HttpJudgeError as e:
            return [Verdict(None, error=f"http judge: {e}")] * n
        out = []
        for c in sorted(choices, key=lambda c: c.get("index", 0))[:n]:
            text = ((c.get("message") or {}).get("content")) or ""
            if c.get("finish_reason") == "length":
                out.append(Verdict(None, error="verdict cut off at max_tokens", raw=text[:2000]))
            else:
                out.append(templates.parse_verdict(text, view, req.prompt.label))
        out += [Verdict(None, error="endpoint returned fewer choices than asked")] * (n - len(out))
        return out

    # ---- batches -------------------------------------------------------------------------------
    def _judge(self, view, requests, k, seeds):
        if self.cfg.batched_k:
            futures = [self._pool.submit(self._verdicts, view, r, k, s) for r, s in zip(requests, seeds)]
            return [f.result() for f in futures]
        futures = [
            [self._pool.submit(self._verdicts, view, r, 1, s * 1000 + j) for j in range(k)]
            for r, s in zip(requests, seeds)
        ]
        return [[f.result()[0] for f in per] for per in futures]

    def _answers(self, chat: list[dict], schema: dict, n: int, seed: int) -> list[tuple[str | None, str | None]]:
        body = {"model": self.api_model, "messages": chat, "n": n, "temperature": self.cfg.temperature,
                "max_tokens": self.cfg.max_tokens, "seed": seed}
        if self.cfg.structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}
        try:
            choices = sorted(self._post(body), key=lambda c: c.get("index", 0))[:n]
        except HttpJudgeError as e:
            return [(None, f"http judge: {e}")] * n
        out = [(None, "answer cut off at max_tokens") if c.get("finish_reason") == "length"
               else (((c.get("message") or {}).get("content")) or "", None) for c in choices]
        return out + [(None, "endpoint returned fewer choices than asked")] * (n - len(out))

    def label(self, chats, schema, k, seeds):
        futures = [self._pool.submit(self._answers, c, schema, k, s) for c, s in zip(chats, seeds)]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

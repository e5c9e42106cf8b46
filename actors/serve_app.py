"""``itool serve``: a checkpoint behind an OpenAI-compatible HTTP endpoint, as a Ray Serve application.

    url = start_server(model_dir, cfg)     # http://127.0.0.1:8000; returns once the replica is ready
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=os.environ.get("ITOOL_API_KEY", "none"))
    stop_server()                          # serve.shutdown(): frees the port, leaves Ray running

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health`` (never needs the key).
The request <-> prompt/answer translation lives in itool_ray/openai_api.py; this module does the I/O:

- Bounded input: a body over ``serve.max_body_bytes`` is refused with 413 (by Content-Length before
  reading, and while reading for chunked bodies); malformed JSON and schema errors are 400 with an
  OpenAI error body; a prompt that does not fit ``engine.max_model_len`` is 400.
- API key: when ``$ITOOL_API_KEY`` (``serve.api_key_env``) or the file ``serve.api_key_file`` holds one,
  ``Authorization: Bearer KEY`` is required (401 otherwise). The key lives in memory only: never in the
  config, never on disk; an empty one is refused at start.
- Overload: the replica takes ``serve.max_concurrency`` requests at once (``max_ongoing_requests``) and
  the proxy queues as many more (``max_queued_requests``); beyond that Serve answers 429 with a
  Retry-After header (``BackpressureConfig``) without reaching the replica.
- Concurrent requests are batched into one engine call (``@serve.batch``), one batch at a time, on one
  engine thread, so the event loop keeps answering health checks and bad requests while it generates.
- An engine failure is a 500 for the requests of that batch; the server stays up.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.config import BackpressureConfig

from itool_ray.config import Config, ConfigError, ServeConfig
from itool_ray.engines.base import GenerationRequest, GenerationResult
from itool_ray.openai_api import (
    RequestError,
    chat_response,
    error_body,
    generation_request,
    models_response,
    parse_request,
    render_request,
    translate_output,
)

log = logging.getLogger(__name__)

APP_NAME = "itool"
BATCH_WAIT_S = 0.005
RETRY_AFTER_S = 1.0

api = FastAPI(title="itool-ray", docs_url=None, redoc_url=None, openapi_url=None)


def _error(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


@serve.deployment(max_constructor_retry_count=1)
@serve.ingress(api)
class ChatServer:
    """One engine replica behind the OpenAI routes."""

    def __init__(self, model: str, cfg: Config, api_key: str | None):
        from transformers import AutoTokenizer

        from actors.placement import cpu_engine_config, engine_kwargs, host_engine
        from itool_ray.prompts import end_of_turn
        from itool_ray.storage import local_copy

        model_dir = local_copy(model)  # a run directory's checkpoint on object storage: this node's copy

        self.cfg = cfg
        self.api_key = api_key
        self.model_id = cfg.serve.model_name  # clients see this name, never the checkpoint's path
        self.created = int(time.time())
        engine_cfg = cpu_engine_config(cfg.engine, cfg.replicas)
        self.engine = host_engine(
            model_dir, engine_cfg, dtype=cfg.model.dtype, seed=cfg.run.seed, **engine_kwargs(cfg.replicas)
        )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.stop = [end_of_turn(self.tokenizer)]
        # One thread for the engine: generation is serialised and always runs on the same thread.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._generate.set_max_batch_size(cfg.serve.max_concurrency)
        log.info("serving %s (engine %s)", model, engine_cfg.kind)

    # ---------------------------------------------------------------------------------------- routes
    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self, request: Request) -> Any:
        if (err := self._auth_error(request)) is not None:
            return _error(err)
        return models_response(self.model_id, created=self.created)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        try:
            if (err := self._auth_error(request)) is not None:
                raise err
            req = parse_request(await self._read_body(request))
            prompt = render_request(self.tokenizer, req, style=self.cfg.data.prompt_style)
            prompt_tokens = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if prompt_tokens >= self.cfg.engine.max_model_len:
                raise RequestError(
                    f"the prompt is {prompt_tokens} tokens; this server's context is "
                    f"{self.cfg.engine.max_model_len} (engine.max_model_len)",
                    param="messages",
                    code="context_length_exceeded",
                )
            gen = generation_request(req, prompt, stop=self.stop, default_max_tokens=self.cfg.eval.max_tokens)
        except RequestError as e:
            return _error(e)
        try:
            result = await self._generate(gen)
        except Exception:  # an engine failure must not take the server down; its details go to the log
            log.exception("generation failed")
            body = error_body("generation failed; the server log has the details", type="server_error")
            return JSONResponse(body, status_code=500)
        completion = result.completions[0]
        out = translate_output(
            completion.text, completion.finish_reason, tool_names=req.tool_names, tool_choice=req.tool_choice
        )
        return chat_response(
            out, model=self.model_id, prompt_tokens=prompt_tokens, completion_tokens=len(completion.token_ids)
        )

    # ---------------------------------------------------------------------------------------- helpers
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.engine.generate, requests)

    def _auth_error(self, request: Request) -> RequestError | None:
        key = self.api_key
        if key is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode()):
            return None
        return RequestError(
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            status=401,
            type="authentication_error",
            code="invalid_api_key",
        )

    async def _read_body(self, request: Request) -> bytes:
        limit = self.cfg.serve.max_body_bytes
        too_large = RequestError(
            f"the request body is larger than {limit} bytes (serve.max_body_bytes)",
            status=413,
            code="request_too_large",
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


def deployment_options(cfg: Config) -> dict[str, Any]:
    """Serve options from config: resources like a PolicyReplica's, and the overload limits."""
    from actors.placement import cpu_engine_config, replica_options

    actor = replica_options(cfg.replicas, cpu_engine_config(cfg.engine, cfg.replicas))
    return {
        "num_replicas": cfg.replicas.num_replicas,
        "ray_actor_options": {k: actor[k] for k in ("num_cpus", "num_gpus", "runtime_env") if k in actor},
        "max_ongoing_requests": cfg.serve.max_concurrency,
        "max_queued_requests": cfg.serve.max_concurrency,
        "backpressure_config": BackpressureConfig(status_code=429, retry_after_s=RETRY_AFTER_S),
    }


def resolve_api_key(scfg: ServeConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The key clients must send, from ``serve.api_key_file`` or ``$<serve.api_key_env>``; None = no auth.
    A key that is set but empty is refused: serving without auth must never be an accident."""
    environ = os.environ if environ is None else environ
    if scfg.api_key_file:
        try:
            key = open(os.path.expanduser(scfg.api_key_file)).read().strip()
        except OSError as e:
            raise ConfigError(f"serve.api_key_file {scfg.api_key_file}: {e.strerror or e}") from None
        if not key:
            raise ConfigError(f"serve.api_key_file {scfg.api_key_file} is empty: put the API key in it")
        return key
    if scfg.api_key_env in environ:
        key = environ[scfg.api_key_env].strip()
        if not key:
            raise ConfigError(
                f"${scfg.api_key_env} is set but empty: set the API key, or unset it to serve without one"
            )
        return key
    return None


def start_server(model: str, cfg: Config) -> str:
    """Deploy ``model`` on Serve at ``cfg.serve.host:port`` and return the base URL once it is ready.

    ``model`` is what ``resolve_model`` returns: a local directory, a checkpoint URI on object storage or
    a hub id. Joins the running Ray cluster (or starts a local one). Serve's HTTP address is fixed when
    Serve first starts in a cluster: stop_server() before serving on another port.
    """
    if os.path.isdir(model):
        model = os.path.abspath(model)  # the replica's working directory is not ours
    api_key = resolve_api_key(cfg.serve)
    if not ray.is_initialized():
        ray.init()
    host, port = cfg.serve.host, cfg.serve.port
    serve.start(http_options={"host": host, "port": port})
    app = ChatServer.options(**deployment_options(cfg)).bind(model, cfg, api_key)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except RuntimeError as e:  # Serve's own message names the deployment only: add the replica's error
        status = serve.status().applications.get(APP_NAME)
        why = [_exception_text(d.message) for d in (status.deployments.values() if status else [])]
        raise RuntimeError(" ".join([str(e), *filter(None, why)])) from None
    return f"http://{host}:{port}"


def _exception_text(traceback_text: str) -> str:
    """The final exception of a formatted traceback (it may span lines), without the frames."""
    lines = traceback_text.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    start = frames[-1] + 1 if frames else 0
    while start < len(lines) and lines[start][:1].isspace():
        start += 1  # the frame's source lines
    return " ".join(line.strip() for line in lines[start:] if line.strip())


def stop_server() -> None:
    """Shut Serve down (its proxy frees the port); the Ray cluster stays up."""
    serve.shutdown()


def serve_forever(model: str, cfg: Config) -> None:
    """``itool serve``: start, print the URL, block until interrupted, then shut Serve down."""
    url = start_server(model, cfg)
    print(f"serving {model} at {url}/v1 (OpenAI-compatible; Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        stop_server()

"""BFCL single-turn categories judged by bfcl-eval's own decoder and AST checker.

Prompts use BFCL's prompting-mode system prompt (``style="bfcl"``), answers are greedy, and each
answer is judged exactly as BFCL's leaderboard does: ``default_decode_ast_prompting`` then
``ast_checker`` — or, for irrelevance, "correct when the answer decodes to no call or fails to decode".
Our own ``reward.match`` is reported beside it (it agrees with the checker; see tests).
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from itool_ray.data.bfcl import load_bfcl
from itool_ray.data.schema import Sample
from itool_ray.eval.heldout import EvalResult, evaluate_samples
from itool_ray.reward import match

# BFCL's checker names the python "simple" category "simple_python"; the others keep our names.
_CHECKER_CATEGORY = {"simple": "simple_python"}


@dataclass
class BfclChecker:
    ast_checker: Callable[..., dict[str, Any]]
    decode: Callable[[str], Any]
    is_empty_output: Callable[[Any], bool]
    language: Any
    model_name: str

    def judge(self, text: str, sample: Sample) -> bool:
        """BFCL's verdict on one answer text."""
        try:
            decoded = self.decode(text)
        except Exception:  # BFCL's own rule: an answer it cannot decode is "no call"
            decoded = None
        if "irrelevance" in sample.category:
            return decoded is None or bool(self.is_empty_output(decoded))
        if decoded is None:
            return False
        possible = [{a.name: a.arguments} for a in sample.accepted or []]
        category = _CHECKER_CATEGORY.get(sample.category, sample.category)
        result = self.ast_checker(
            sample.tools, decoded, possible, self.language.PYTHON, category, self.model_name
        )
        return bool(result["valid"])


def _missing(module: str) -> bool:
    try:
        __import__(module)
        return False
    except ImportError:
        return True


def bfcl_checker() -> BfclChecker:
    """Import BFCL's decoder and checker.

    Their modules import every API client (for the model registry), tree-sitter (Java/JS parsers) and
    tenacity. Where those are missing they are stubbed during the import only: the checker reads just
    ``underscore_to_dot`` from the registry, and Python decoding never calls the Java/JS parsers or the
    retry helpers. BFCL writes under ``BFCL_PROJECT_ROOT``; a temporary directory is used when unset.
    """
    os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl-root-"))
    if _missing("bfcl_eval"):
        raise RuntimeError(
            "bfcl-eval is not installed: pip install --no-deps bfcl-eval==2026.3.23 (scripts/setup.sh does)"
        )

    def load(model: str) -> BfclChecker:
        from bfcl_eval.constants.enums import Language
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
        from bfcl_eval.model_handler.utils import default_decode_ast_prompting
        from bfcl_eval.utils import is_empty_output

        return BfclChecker(ast_checker, default_decode_ast_prompting, is_empty_output, Language, model)

    try:
        from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING

        model = next(k for k, v in MODEL_CONFIG_MAPPING.items() if not v.underscore_to_dot and "_" not in k)
        return load(model.replace("/", "_"))
    except ImportError:
        pass

    registry = types.ModuleType("bfcl_eval.constants.model_config")
    registry.MODEL_CONFIG_MAPPING = collections.defaultdict(
        lambda: types.SimpleNamespace(underscore_to_dot=False)
    )
    java = types.ModuleType("bfcl_eval.model_handler.parser.java_parser")
    java.parse_java_function_call = None
    js = types.ModuleType("bfcl_eval.model_handler.parser.js_parser")
    js.parse_javascript_function_call = None
    tenacity = types.ModuleType("tenacity")
    for name in ("retry", "retry_if_exception_message", "retry_if_exception_type", "wait_random_exponential"):
        setattr(tenacity, name, None)
    installed = []
    for mod in (registry, java, js, tenacity):
        if mod is registry or _missing(mod.__name__):
            installed.append((mod.__name__, sys.modules.get(mod.__name__, ...)))
            sys.modules[mod.__name__] = mod
    try:
        return load("stub-model")
    finally:
        for name, before in installed:
            if before is ...:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = before


def evaluate_bfcl(
    categories: Sequence[str],
    engine: Any,
    tokenizer: Any,
    *,
    max_tokens: int = 256,
    batch_size: int = 32,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_model_len: int | None = None,
) -> EvalResult:
    """Greedy answers to BFCL's questions, judged by BFCL's checker (``exact``); ``score`` is ours."""
    checker = bfcl_checker()
    samples = load_bfcl(list(categories))
    if limit is not None:
        per_cat: dict[str, int] = collections.Counter()
        kept = []
        for s in samples:
            if per_cat[s.category] < limit:
                per_cat[s.category] += 1
                kept.append(s)
        samples = kept

    def judge(text: str, sample: Sample) -> dict[str, Any]:
        m = match(text, sample)
        return {"exact": checker.judge(text, sample), "score": float(m.score), "ours_exact": bool(m.exact)}

    return evaluate_samples(
        samples,
        engine,
        tokenizer,
        style="bfcl",
        max_tokens=max_tokens,
        batch_size=batch_size,
        judge=judge,
        progress=progress,
        max_model_len=max_model_len,
    )

"""Fixtures every test module shares.

- The vLLM environment (CPU KV cache size, no usage reporting, offline hub, engine in this
  process) is set once per session by `vllm_env`, before any engine starts.
- `tiny_dir`: the dummy-weight 2-layer Llama folder with the real Llama-3 tokenizer.
- `shared_dataset(name)`: a real sample from the GGR paper's artifact. They live in
  ``../shared/datasets`` beside a checkout; point ``GGR_KV_SHARED_DATASETS`` at another
  folder to use them elsewhere. Tests that need a missing file skip, and the session's
  summary says how many did and why: no silent skips.
- `tiny_comparison`: one small comparison of orderings run on the CPU engine, shared by the
  plot and report tests.
- `tiny_server_launch` / `tiny_server`: ONE vLLM OpenAI-compatible server subprocess of
  the tiny model (`TINY_ENGINE`) for the session, shared by the server tests of every
  module (a server start costs a new process's imports and engine start).
- `engine_pool`: ONE in-process engine per worker, kept from one test module to the next
  while they ask for the same settings (``engine_pool.get(EngineConfig(...))``), for tests
  that need an engine, not a fresh one.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# the folder of the paper's real samples (``$GGR_KV_SHARED_DATASETS``), as scripts find it
from ggr_kv.datasets.benchtables import SHARED_ENV, shared_datasets_dir
from ggr_kv.engine.config import EngineConfig

ROOT = Path(__file__).resolve().parents[1]
#: KV cache of the tests' CPU engines: a quarter GiB (131,072 tokens of the tiny model), a
#: fraction only ggr-kv's engine starts take (vLLM reads its variable as whole GiB); each
#: start allocates and zeroes it (a fresh process's start: ~1 CPU s less than at 1 GiB)
TEST_KV_GIB = 0.25
TEST_KV_BYTES = int(TEST_KV_GIB * (1 << 30))
#: what every vLLM-starting test needs (CPU engine; set once per session)
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": f"{TEST_KV_GIB:g}",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
#: settings of the session's shared server (`tiny_server_launch`)
TINY_ENGINE = {"model": "tiny-llama", "enforce_eager": True, "max_model_len": 4096}
#: orderings of the shared tiny comparison
COMPARISON_ORDERINGS = ("no_cache", "original", "ggr")
_missing_shared: set[str] = set()
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test`'s two workers share the cores: one compute thread each (torch reads it
    # when first imported, i.e. before any test module imports it; the user's value wins)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_path(name: str, required: bool = True) -> Path | None:
    """Path of a real sample; when it is missing, skip the calling test (or return None
    if not ``required``). Missing files are listed in the session summary."""
    path = shared_datasets_dir() / name
    if not path.is_file():
        _missing_shared.add(str(path))
        if not required:
            return None
        pytest.skip(f"real sample {path} not found; set {SHARED_ENV} to the folder holding it")
    return path


@pytest.fixture(scope="session", autouse=True)
def vllm_env():
    """Set `VLLM_ENV` for the whole session (values already in the environment win)."""
    mp = pytest.MonkeyPatch()
    for key, value in VLLM_ENV.items():
        if key == "VLLM_ENABLE_V1_MULTIPROCESSING" or key not in os.environ:
            mp.setenv(key, value)
    yield
    mp.undo()


def plain_llm(**kwargs):
    """A ``vllm.LLM`` started as vLLM's own users start it (not `make_llm`), with the
    session's KV size (``kv_cache_memory_bytes``; `VLLM_ENV`'s fraction hidden from vLLM)."""
    import vllm

    from ggr_kv.engine.memory import vllm_sees_bytes

    kwargs.setdefault("kv_cache_memory_bytes", TEST_KV_BYTES)
    with vllm_sees_bytes():
        return vllm.LLM(**kwargs)


@pytest.fixture(scope="session")
def shared_dataset():
    """``shared_dataset("movies_small.csv")`` -> Path, or skip (see `shared_path`)."""
    return shared_path


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The dummy-weight tiny Llama's model folder (made under ``models/`` when missing)."""
    from ggr_kv.engine.models import resolve_model

    path, dummy = resolve_model("tiny-llama", ROOT / "models")
    assert dummy
    return Path(path)


@pytest.fixture(scope="session")
def tiny_comparison(tmp_path_factory, vllm_env) -> Path:
    """Run folders of `COMPARISON_ORDERINGS` on 12 movie rows (CPU engine), made once."""
    pytest.importorskip("vllm")
    from ggr_kv.datasets import load_dataset
    from ggr_kv.engine.config import EngineConfig
    from ggr_kv.run import run_orderings

    folder = tmp_path_factory.mktemp("tiny-comparison")
    _POOL.release()  # its own engines: the pool's may not live beside them
    ds = load_dataset("movies", n=12, sample="head")
    run_orderings(
        ds,
        methods=COMPARISON_ORDERINGS,
        query=ds.query("filter"),
        engine=EngineConfig(max_num_seqs=4),
        sampling={"max_tokens": 4},
        out_dir=folder,
        progress=False,
    )
    return folder


class EnginePool:
    """One in-process engine (`make_llm`) kept across test modules that ask for the same
    engine arguments: a start costs 10-40 s here. Asking for other arguments, or a module
    that does not use the pool (it may start its own: two in-process engines do not live
    at once), shuts it down first."""

    def __init__(self) -> None:
        self.llm = None
        self.kwargs: dict | None = None

    def get(self, config: EngineConfig):
        """The pool's engine for ``config`` (started when it holds another or none)."""
        from ggr_kv.engine.config import make_llm

        kwargs = config.to_llm_kwargs()
        if self.llm is None or kwargs != self.kwargs:
            self.release()
            self.llm, self.kwargs = make_llm(config), kwargs
        return self.llm

    def release(self) -> None:
        if self.llm is not None:
            from ggr_kv.engine.config import shutdown_llm

            llm, self.llm, self.kwargs = self.llm, None, None
            shutdown_llm(llm)


_POOL = EnginePool()


@pytest.fixture(scope="session")
def engine_pool(vllm_env) -> EnginePool:
    """The worker's `EnginePool` (its engine is shut down at the session's end)."""
    pytest.importorskip("vllm")
    yield _POOL
    _POOL.release()


@pytest.fixture(scope="module", autouse=True)
def _pool_only_for_its_users(request):
    """Shut the pooled engine down before a module that does not use `engine_pool`."""
    path = getattr(getattr(request, "module", None), "__file__", None)  # None: a notebook
    if _POOL.llm is not None and (path is None or "engine_pool" not in _file_text(path)):
        _POOL.release()


@dataclass
class VLLMServer:
    """A vLLM OpenAI-compatible server subprocess started by `tiny_server_launch`."""

    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    log: Path  # its stdout and stderr
    model: str  # the model folder it serves (the name requests use)
    ready: bool = field(default=False)

    def wait(self, timeout_s: float = 400) -> str:
        """Block until ``/health`` answers (fail the test with the log's tail if the server
        exits or is not up in ``timeout_s``); returns `url`."""
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            if self.proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({self.proc.returncode}):\n"
                            + self.log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    self.ready = r.status == 200
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vLLM server not up after {timeout_s:.0f} s:\n"
                                + self.log.read_text()[-3000:])
                time.sleep(0.5)
        return self.url


@pytest.fixture(scope="session")
def tiny_server_launch(tiny_dir, tmp_path_factory) -> VLLMServer:
    """Start the session's ONE vLLM server (tiny Llama, dummy weights, eager, 4,096 tokens,
    prompt-token details, ``VLLM_SERVER_DEV_MODE=1`` for ``POST /reset_prefix_cache``)
    WITHOUT waiting for it: request it early so it boots while other work runs, then call
    ``.wait()`` (or use `tiny_server`). Stopped (its process group) at the session's end.
    Tests reset its prefix cache before counting hits."""
    pytest.importorskip("vllm")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE")}
    env["VLLM_SERVER_DEV_MODE"] = "1"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_dir), "--load-format", "dummy", "--host", "127.0.0.1",
        "--port", str(port), "--max-model-len", str(TINY_ENGINE["max_model_len"]),
        "--kv-cache-memory-bytes", str(TEST_KV_BYTES),
        "--enforce-eager", "--enable-prompt-tokens-details",
        "--dtype", EngineConfig(**TINY_ENGINE).engine_dtype(),  # as the in-process engines
    ]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield VLLMServer(proc, f"http://127.0.0.1:{port}", log, str(tiny_dir))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


@pytest.fixture(scope="session")
def tiny_server(tiny_server_launch) -> VLLMServer:
    """The session's server (`tiny_server_launch`), up: ``.url``, ``.model``, ``.proc.pid``."""
    tiny_server_launch.wait()
    return tiny_server_launch


def _file_marks(path: Path) -> tuple[set[str], set[str]]:
    """``(module, named)``: the ``pytest.mark.NAME`` marks of a test file's module-level
    ``pytestmark`` (every test has them), and every mark named anywhere in its source
    (a test can have no other), read without importing the file."""
    try:
        text = _file_text(path)  # "" when unreadable
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError):
        return set(), set()
    marks: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            for sub in ast.walk(node.value):
                if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute)
                        and sub.value.attr == "mark"):
                    marks.add(sub.attr)
    return marks, marks | set(re.findall(r"\bmark\.(\w+)", text))


def pytest_ignore_collect(collection_path, config):
    """Skip importing a test file that ``-m`` deselects whole, judged from its source
    (`_file_marks`): e.g. ``make test-fast`` never imports vLLM for ``pytestmark =
    pytest.mark.vllm`` modules, and ``-m timing`` imports only files that name that mark.
    A file is skipped only if no set of marks its tests can have (its module marks plus
    any others it names) makes the expression true; otherwise pytest decides as usual."""
    expr = config.getoption("markexpr", "")
    if not expr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    marks, named = _file_marks(Path(collection_path))
    from _pytest.mark.expression import Expression

    try:
        compiled = Expression.compile(expr)
    except Exception:  # a malformed -m: let pytest report it
        return None
    # the expression depends only on the names in it: try every set of those a test can have
    names = sorted((set(re.findall(r"\w+", expr)) - {"and", "or", "not"}) & named - marks)
    if len(names) > 10:
        return None
    for k in range(1 << len(names)):
        on = marks | {n for i, n in enumerate(names) if k >> i & 1}
        try:
            if compiled.evaluate(lambda name, /, *args, _on=on, **kw: name in _on):
                return None
        except Exception:  # an expression with arguments: let pytest decide
            return None
    return True


#: session fixtures that start vLLM: the test files using one run on the same worker, so
#: each is made once per `make test`, not once per worker (the pool's users go with the
#: server's: test_run uses both)
_SHARED_ENGINES = re.compile(r"\b(tiny_comparison|tiny_server|engine_pool)")
_SCOPE_NAMES = {"engine_pool": "tiny_server"}


def _test_scope(nodeid: str) -> str:
    """The unit `make test`'s scheduler gives a test (by its node id) to one worker:
    ``notebooks`` (all, in order), the name of a shared engine fixture its file uses, or
    its file."""
    return _file_scope(nodeid.split("::", 1)[0])


@functools.cache
def _file_text(path: str | Path) -> str:
    try:
        return (ROOT / path).read_text(encoding="utf-8")
    except OSError:
        return ""


@functools.cache
def _file_scope(path: str) -> str:
    if path.endswith(".ipynb"):
        return "notebooks"
    found = _SHARED_ENGINES.search(_file_text(path))
    return _SCOPE_NAMES.get(found.group(1), found.group(1)) if found else path


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist (`-p no:xdist` works too)
def pytest_xdist_make_scheduler(config, log):
    """`make test`'s workers (pytest-xdist): a test file's tests run on one worker (its
    module engines start once), files that share a session engine (`_SHARED_ENGINES`)
    on one worker, and all notebooks on one worker, in order (03_curves reads the
    comparison 02_inference writes)."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedEngines(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _test_scope(nodeid)

    config.option.loadscopereorder = False  # the order `pytest_collection_modifyitems` gives
    return SharedEngines(config, log)


def pytest_collection_modifyitems(config, items):
    """On `make test`'s workers: the scopes that start vLLM (a ``vllm`` mark, the
    notebooks) first, the many quick tests last to fill the gaps, so that no worker
    starts an engine-heavy file while the other has finished (order kept otherwise)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    heavy = {_test_scope(it.nodeid) for it in items
             if it.get_closest_marker("vllm") or ".ipynb::" in it.nodeid}
    items.sort(key=lambda it: _test_scope(it.nodeid) not in heavy)


def pytest_terminal_summary(terminalreporter):
    if _missing_shared:
        terminalreporter.write_sep(
            "!", f"{len(_missing_shared)} real sample file(s) missing: tests that need them "
            f"were SKIPPED; set {SHARED_ENV} (see README)", yellow=True, bold=True,
        )
        for p in sorted(_missing_shared):
            terminalreporter.write_line(f"  missing: {p}")

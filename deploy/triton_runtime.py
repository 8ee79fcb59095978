"""Run the real ``tritonserver`` (2.51) bundled in the ``nvidia-pytriton==0.7.0`` wheel, standalone.

PyTriton normally drives this binary itself; here we only borrow the binary, its backends and its
bundled shared libraries, and start ``tritonserver`` directly on our own model repository
(``homework_monitor.triton_models``, shipped in the wheel) with the Python backend.

Layout built by :func:`prepare_triton_dist` (idempotent, in ``HWM_TRITON_DIST_DIR``, default ``var/triton-dist``)::

    var/triton-dist/
      pytriton/tritonserver/            copy of <site-packages>/pytriton/tritonserver (without the stubs)
        bin/tritonserver
        backends/python/libtriton_python.so
        backends/python/triton_python_backend_stub   <- python_backend_stubs/3.11/ stub
        backends/python/triton_python_backend_utils.py
        caches/local/libtritoncache_local.so
      nvidia_pytriton.libs -> <site-packages>/nvidia_pytriton.libs   (symlink)
      .prepared                          marker (source path, nvidia-pytriton and Python versions)

Gotchas found (tritonserver 2.51 from nvidia-pytriton 0.7.0, Python 3.11.7 from pyenv, CPU only):

* The binaries carry an ``RPATH`` relative to ``$ORIGIN`` (``bin/../../../nvidia_pytriton.libs``,
  ``backends/python/../../../../nvidia_pytriton.libs``), so the ``pytriton/tritonserver`` +
  ``nvidia_pytriton.libs`` sibling layout must be kept. We also put the libs on ``LD_LIBRARY_PATH``.
* The stub for each Python version lives in ``pytriton/tritonserver/python_backend_stubs/X.Y/``; the
  one matching the interpreter must be copied to ``backends/python/triton_python_backend_stub``
  (that is where libtriton_python.so looks for it).
* The stub links ``libpython3.11.so.1.0`` dynamically (no RPATH to it). This host also has Debian's
  ``/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0``; we put pyenv's ``sysconfig LIBDIR``
  (``/root/.pyenv/versions/3.11.7/lib``) first on ``LD_LIBRARY_PATH`` so the stub embeds the same
  interpreter build as the venv.
* How the stub finds packages: it embeds CPython in *isolated* mode (``sys.flags.isolated=1``,
  ``ignore_environment=1``) without setting a program name, so CPython's ``getpath`` resolves
  ``python3`` through ``PATH``. With the venv's ``bin`` first on ``PATH`` the embedded interpreter
  gets ``sys.executable=<venv>/bin/python3``, finds ``pyvenv.cfg`` and uses the venv's
  site-packages, ``.pth`` files included (so the editable ``pip install -e .`` makes repo packages
  importable). Without the venv on ``PATH``: ``No module named 'numpy'``.
* Because the interpreter is isolated, ``PYTHONPATH`` and ``PYTHONHOME`` are IGNORED for
  ``sys.path`` (verified: ``import stream`` failed with ``PYTHONPATH=<repo>``). They still show up
  in ``os.environ``, so we do set ``PYTHONPATH=<repo root>`` and a model.py that must work without
  the editable install starts with::

      import os, sys
      for _p in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
          if _p not in sys.path:
              sys.path.insert(0, _p)

  Also, ``''`` (the current directory) is on the stub's ``sys.path`` and the stub inherits the
  server's cwd.
* Without pyenv's LIBDIR on ``LD_LIBRARY_PATH`` the stub loads Debian's libpython3.11 and then
  fails on pyenv's extension modules (``_ssl...so: undefined symbol: _PyModule_Add``).
* The model's own folder (``<repo>/<model>/<version>/``) is put on ``sys.path`` by the stub,
  and ``triton_python_backend_utils`` is importable from ``backends/python``.
* ``--disable-auto-complete-config`` means ``config.pbtxt`` must be complete (backend, max_batch_size,
  inputs, outputs, instance_group). BYTES tensors are declared ``TYPE_STRING``.
* No GPU is needed: tritonserver logs ``Failed to initialize NVML`` / ``DCGM unable to start`` and
  carries on (CPU metrics only). The configs here use ``instance_group [{ kind: KIND_CPU }]``.
* Python-backend shared memory: each stub gets a region ``/dev/shm/triton_python_backend_shm_region_<uuid>``
  (1 MiB initially, growing by 1 MiB). The UUID makes two servers on one host safe without a
  ``shm-region-prefix-name``. For large tensors or a small ``/dev/shm`` (Docker's default is 64 MiB)
  pass ``--backend-config=python,shm-default-byte-size=...`` via ``extra_args``. Regions are removed
  on SIGTERM; after ``kill -9`` of tritonserver the stubs notice and exit within seconds and the
  regions were gone too (checked after 5 s).
* Startup takes ~2.5-4 s for the echo model (importing torch+transformers in the stub dominates);
  SIGTERM shuts down cleanly (exit code 0) in ~3 s. ``--model-control-mode`` defaults to ``none``: every model in the
  repository loads at startup and a failing model makes the server exit (``failed to load all models``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TritonDist",
    "installed_triton_dist",
    "prepare_triton_dist",
    "triton_dist",
    "restricted_api_args",
    "tritonserver_command",
    "wait_until_ready",
    "find_libpython_dir",
    "configured_artifact",
    "configured_instances",
    "repository_with_instances",
]

import homework_monitor
from homework_monitor.contract import MODEL_NAME

from .services import scrubbed_environ

# The folder that holds the ``homework_monitor`` package (the source checkout, or site-packages): on
# the stub's PYTHONPATH so model.py imports the package even where the venv's .pth files are not read.
PACKAGE_PARENT = Path(homework_monitor.__file__).resolve().parent.parent
_MARKER = ".prepared"


@dataclass(frozen=True)
class TritonDist:
    """A prepared tritonserver distribution and the environment it must run with."""

    root: Path  # the dist folder (e.g. <project>/var/triton-dist)
    server_bin: Path  # .../pytriton/tritonserver/bin/tritonserver
    backend_dir: Path  # .../pytriton/tritonserver/backends
    env: dict[str, str]  # full environment for the server process


def _pytriton_paths() -> tuple[Path, Path]:
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("pytriton")  # locate without importing (the import is slow)
    if spec is None or not spec.origin:
        raise FileNotFoundError("pytriton is not installed (pip install nvidia-pytriton==0.7.0)")
    pkg = Path(spec.origin).resolve().parent
    server_dir = pkg / "tritonserver"
    libs_dir = pkg.parent / "nvidia_pytriton.libs"
    if not (server_dir / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"tritonserver binary not found under {server_dir}")
    if not libs_dir.is_dir():
        raise FileNotFoundError(f"nvidia_pytriton.libs not found at {libs_dir}")
    return server_dir, libs_dir


def find_libpython_dir() -> Path:
    """Folder holding the ``libpython3.X.so.1.0`` of the running interpreter (pyenv's LIBDIR here)."""
    soname = sysconfig.get_config_var("INSTSONAME") or f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    candidates = [
        sysconfig.get_config_var("LIBDIR"),
        Path(sys.base_prefix) / "lib",
        Path(os.path.realpath(sys.executable)).parent.parent / "lib",
    ]
    for cand in candidates:
        if cand and (Path(cand) / soname).exists():
            return Path(cand)
    raise FileNotFoundError(
        f"{soname} not found in {candidates}; the Python backend stub needs a shared libpython "
        "(build Python with --enable-shared, e.g. PYTHON_CONFIGURE_OPTS=--enable-shared for pyenv)"
    )


def _marker_text(server_dir: Path, version: str) -> str:
    from importlib.metadata import PackageNotFoundError  # noqa: PLC0415
    from importlib.metadata import version as dist_version

    try:
        pytriton_version = dist_version("nvidia-pytriton")
    except PackageNotFoundError:
        pytriton_version = "unknown"
    return f"source={server_dir}\nnvidia-pytriton={pytriton_version}\npython={version}\n"


def _is_prepared(marker: Path, expected: str) -> bool:
    try:
        return marker.read_text() == expected
    except OSError:
        return False


def prepare_triton_dist(dist_dir: Path, *, pythonpath: Sequence[Path] = (PACKAGE_PARENT,)) -> TritonDist:
    """Prepare ``dist_dir`` (skipped when already prepared) and return how to run it.

    ``pythonpath`` entries (default: the folder holding ``homework_monitor``) are prepended to
    ``PYTHONPATH`` in ``env``. The stub's isolated interpreter does NOT apply it by itself: model.py
    puts these entries on ``sys.path`` (snippet in the module docstring).
    """
    server_src, libs_src = _pytriton_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dist = Path(dist_dir).resolve()
    server_dir = dist / "pytriton" / "tritonserver"
    marker = dist / _MARKER
    expected = _marker_text(server_src, version)

    if not _is_prepared(marker, expected):
        stub_src = server_src / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub_src.is_file():
            raise FileNotFoundError(f"no Python {version} backend stub at {stub_src}")
        tmp = dist.with_name(dist.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp_server = tmp / "pytriton" / "tritonserver"
        shutil.copytree(
            server_src,
            tmp_server,
            ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"),
        )
        stub_dst = tmp_server / "backends" / "python" / "triton_python_backend_stub"
        shutil.copy2(stub_src, stub_dst)
        stub_dst.chmod(0o755)
        (tmp / "nvidia_pytriton.libs").symlink_to(libs_src, target_is_directory=True)
        (tmp / _MARKER).write_text(expected)
        if _is_prepared(marker, expected):  # a concurrent caller finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(dist, ignore_errors=True)
            dist.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(dist)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not _is_prepared(marker, expected):
                    raise

    env = scrubbed_environ()  # neither the server nor the Python backend needs the broker password
    env.pop("PYTHONHOME", None)  # the isolated stub ignores it anyway; keep it from confusing anything else
    ld = [str(dist / "nvidia_pytriton.libs"), str(find_libpython_dir())]
    if env.get("LD_LIBRARY_PATH"):
        ld.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(ld)
    venv_bin = str(Path(sys.prefix) / "bin")
    rest = [p for p in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join([venv_bin, *rest])
    pp = [str(Path(p).resolve()) for p in pythonpath]
    pp += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in pp]
    if pp:
        env["PYTHONPATH"] = os.pathsep.join(pp)
    env.setdefault("PYTHONUNBUFFERED", "1")

    return TritonDist(
        root=dist,
        server_bin=server_dir / "bin" / "tritonserver",
        backend_dir=server_dir / "backends",
        env=env,
    )


def installed_triton_dist(server_bin: Path | str, *, pythonpath: Sequence[Path] = (PACKAGE_PARENT,)) -> TritonDist:
    """An installed tritonserver, as in NVIDIA's container (``/opt/tritonserver/bin/tritonserver``, its
    backends and caches beside ``bin``); its python backend uses the system Python, which the image holds
    the packages for. ``pythonpath`` as in :func:`prepare_triton_dist`."""
    server_bin = Path(server_bin).resolve()
    root = server_bin.parent.parent
    if not (root / "backends" / "python").is_dir():
        raise FileNotFoundError(f"no python backend under {root / 'backends'} (an installed tritonserver lays it out there)")
    env = scrubbed_environ()
    pp = [str(Path(p).resolve()) for p in pythonpath]
    pp += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in pp]
    env["PYTHONPATH"] = os.pathsep.join(pp)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return TritonDist(root=root, server_bin=server_bin, backend_dir=root / "backends", env=env)


def triton_dist(dist_dir: Path, server_bin: str | None = None) -> TritonDist:
    """The tritonserver to run: ``server_bin`` when given, else the nvidia-pytriton bundle when installed
    (this project's local stack), else a ``tritonserver`` on ``PATH`` (NVIDIA's container)."""
    if server_bin:
        return installed_triton_dist(server_bin)
    try:
        return prepare_triton_dist(dist_dir)
    except FileNotFoundError as missing:
        found = shutil.which("tritonserver")
        if not found:
            raise FileNotFoundError(f"{missing}; and no tritonserver on PATH") from missing
        return installed_triton_dist(found)


# Triton APIs nobody in this system calls: runtime log settings (``POST /v2/logging`` could turn on
# verbose logging of request data), tracing, model load/unload, shared-memory registration. Restricted
# to requests carrying a header whose value is random per start and never told to anyone: disabled.
RESTRICTED_APIS = "logging,trace,model-repository,shared-memory"
ADMIN_HEADER = "hwm-admin-key"


def restricted_api_args(admin_key: str | None = None) -> list[str]:
    """``--http-restricted-api`` / ``--grpc-restricted-protocol`` for :data:`RESTRICTED_APIS`."""
    key = admin_key or secrets.token_hex(24)
    return [f"--http-restricted-api={RESTRICTED_APIS}:{ADMIN_HEADER}={key}",
            f"--grpc-restricted-protocol={RESTRICTED_APIS}:{ADMIN_HEADER}={key}"]


def tritonserver_command(
    dist: TritonDist,
    model_repository: Path,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    extra_args: Sequence[str] = (),
    *,
    address: str = "127.0.0.1",
) -> list[str]:
    """Command line for tritonserver on ``model_repository`` (run it with ``env=dist.env``).

    HTTP, gRPC and metrics listen on ``address`` only (tritonserver's own default is 0.0.0.0), and the
    admin APIs are disabled (:func:`restricted_api_args`).
    """
    return [
        str(dist.server_bin),
        f"--model-repository={Path(model_repository).resolve()}",
        f"--backend-directory={dist.backend_dir}",
        f"--cache-directory={dist.backend_dir.parent / 'caches'}",
        "--disable-auto-complete-config",
        # Load only our model: the repository is also a Python package (__init__.py, __pycache__).
        "--model-control-mode=explicit",
        f"--load-model={MODEL_NAME}",
        f"--http-address={address}",
        f"--http-port={http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={address}",
        f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        *restricted_api_args(),
        *extra_args,
    ]


def wait_until_ready(
    http_port: int,
    timeout_s: float,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    is_alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``GET /v2/health/ready`` until 200; raise ``TimeoutError`` (with the log tail if given).

    ``is_alive`` (e.g. ``lambda: proc.poll() is None``) lets it fail fast when the server died.
    """
    url = f"http://{host}:{http_port}/v2/health/ready"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via http_proxy
    deadline = time.monotonic() + timeout_s
    reason = "not started"
    exited = False
    while time.monotonic() < deadline:
        if is_alive is not None and not is_alive():
            exited = True
            break
        try:
            with opener.open(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                reason = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
        except OSError as exc:
            reason = type(exc).__name__
        time.sleep(0.2)
    if exited:
        msg = f"tritonserver (http port {http_port}) exited before becoming ready"
    else:
        msg = f"tritonserver on port {http_port} not ready after {timeout_s:.0f}s ({reason})"
    if log_path is not None and Path(log_path).exists():
        lines = Path(log_path).read_text(errors="replace").splitlines()[-40:]
        msg += "\n--- log tail ---\n" + "\n".join(lines)
    raise TimeoutError(msg)


def _config_path(model_dir: Path, config_name: str | None) -> Path:
    """``config.pbtxt``, or ``configs/<name>.pbtxt`` (what ``--model-config-name=<name>`` loads)."""
    return model_dir / "config.pbtxt" if config_name is None else model_dir / "configs" / f"{config_name}.pbtxt"


def _model_config(path: Path):
    from google.protobuf import text_format  # noqa: PLC0415 - tritonclient's schema, only when asked
    from tritonclient.grpc import model_config_pb2  # noqa: PLC0415

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def configured_instances(model_repository: Path, config_name: str | None = None) -> list[int]:
    """The ``count`` of each instance group of our model's config (Triton reads an unset count as 1)."""
    config = _model_config(_config_path(Path(model_repository) / MODEL_NAME, config_name))
    return [group.count or 1 for group in config.instance_group]


def configured_artifact(model_repository: Path, config_name: str | None = None) -> str:
    """The artifact folder (inside the version folder) the chosen config serves."""
    config = _model_config(_config_path(Path(model_repository) / MODEL_NAME, config_name))
    return config.parameters["artifact"].string_value or "artifact"


def repository_with_instances(model_repository: Path, dest: Path, instances: int,
                              config_name: str | None = None, artifact: str | None = None) -> Path:
    """A model repository at ``dest`` serving ``model_repository``'s model with ``instances`` model
    instances in every instance group of the chosen config, and ``artifact`` (a folder inside the
    version folder, e.g. ``artifact/student``) as its served artifact when given; returns ``dest``.

    The model's files (version folder with the artifact, warmup samples) are linked, not copied; the
    configs are copied and the chosen one is rewritten through Triton's own protobuf schema.
    """
    from google.protobuf import text_format  # noqa: PLC0415

    src = Path(model_repository).resolve() / MODEL_NAME
    if artifact is not None and not (src / "1" / artifact / "model.json").is_file():
        raise ValueError(f"no model artifact {artifact!r} in {src / '1'} (HWM_TRITON_ARTIFACT)")
    model = Path(dest) / MODEL_NAME
    shutil.rmtree(model, ignore_errors=True)
    model.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name == "configs":
            shutil.copytree(entry, model / entry.name)
        elif entry.name == "config.pbtxt":
            shutil.copy2(entry, model / entry.name)
        elif entry.name != "__pycache__":
            (model / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    path = _config_path(model, config_name)
    config = _model_config(path)
    for group in config.instance_group:
        group.count = instances
    if artifact is not None:
        config.parameters["artifact"].string_value = artifact
    path.write_text(text_format.MessageToString(config))
    return Path(dest)

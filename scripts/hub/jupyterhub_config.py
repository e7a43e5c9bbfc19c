"""JupyterHub for a workshop: the course from this checkout's environment, one working folder per user.

Started by ``make hub`` (mk/hub.mk, docs/workshop.md); every setting comes from an environment variable
that the make target passes on:

    HUB_PASSWORD        the shared password participants log in with (8 characters or more; required)
    HUB_ADMIN, HUB_ADMIN_PASSWORD   an optional admin user (the instructor) and its own password (32+ chars)
    HUB_DIR             the hub's folder: state/ (database, cookie secret) and users/<name>/ (default hub/)
    HUB_SOURCE          the notebooks each user gets a working copy of (default notebooks/; build/student/
                        for the student edition after `make student`)
    HUB_IP, HUB_PORT    where participants connect (default 127.0.0.1:8000: this machine only)
    HUB_API_PORT, HUB_PROXY_API_PORT   the hub's and the proxy's internal ports, on 127.0.0.1 (8081, 8001)
    HUB_THREADS         CPU threads per user's kernel: OpenMP (torch), MKL, OpenBLAS (default 1)
    HUB_MAX_USERS       servers running at once; more are refused with a message (default 0: no limit)
    HUB_CULL_S          a kernel idle this long is shut down, freeing its memory (default 1800 s)
    HUB_PROXY           configurable-http-proxy's executable (default build/hub/node/.../configurable-http-proxy)

Login: jupyterhub's SharedPasswordAuthenticator. Participants choose a user name and type the one password
the instructor gives out; nothing to register or approve. Servers: SimpleLocalProcessSpawner, which runs
each user's JupyterLab as the hub's own system user in ``users/<name>/`` (no system accounts). Neither
isolates users from each other (anyone with the password can log in under any name, and code in one
kernel can read another user's folder), which suits a workshop among participants on a throwaway server,
not coursework with grades at stake: docs/workshop.md says what to use then.

Before each server starts, the user's working copies are made with the same rules as ``make lab``
(scripts/site/working_copies.py): a notebook is copied once and never overwritten, and ``notebooks/``
itself is never served.
"""
# `c` and `load_subconfig` are given to this file by JupyterHub (traitlets' config loader).
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "settings", "working_copies_hook"]


def _working_copies():
    """scripts/site/working_copies.py, the module `make lab` uses (loaded by path: scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("working_copies", ROOT / "scripts" / "site" / "working_copies.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _int(name: str, default: int, minimum: int = 0) -> int:
    text = os.environ.get(name, "").strip() or str(default)
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise SystemExit(f"{name}={text!r}: give a whole number >= {minimum} (default {default})")
    return int(text)


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    path = Path(value).expanduser() if value else default
    return (path if path.is_absolute() else ROOT / path).resolve()


def settings() -> dict:
    """The hub's settings from the environment, each checked, with an error naming the variable and the fix."""
    password = os.environ.get("HUB_PASSWORD", "")
    if len(password) < 8:
        raise SystemExit("HUB_PASSWORD is unset or shorter than 8 characters: choose the password participants "
                         "will log in with, e.g. `make hub HUB_PASSWORD=pruning-workshop-42`")
    admin, admin_password = os.environ.get("HUB_ADMIN", "").strip(), os.environ.get("HUB_ADMIN_PASSWORD", "")
    if admin and len(admin_password) < 32:
        raise SystemExit(f"HUB_ADMIN={admin!r} needs HUB_ADMIN_PASSWORD, 32 characters or more and not "
                         "HUB_PASSWORD (jupyterhub's rule for the shared-password admin), e.g. "
                         "HUB_ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')")
    source = _path("HUB_SOURCE", ROOT / "notebooks")
    if not sorted(source.glob("*.ipynb")):
        raise SystemExit(f"HUB_SOURCE={source} holds no notebooks: use notebooks/ (the default), or build/student/ "
                         "after `make student` for the student edition")
    proxy = _path("HUB_PROXY", ROOT / "build" / "hub" / "node" / "node_modules" / ".bin" / "configurable-http-proxy")
    if not proxy.exists():
        raise SystemExit(f"no configurable-http-proxy at {proxy}: `make hub` installs it (npm ci in build/hub/node/), "
                         "or set HUB_PROXY to one")
    return {
        "password": password, "admin": admin, "admin_password": admin_password, "source": source,
        "dir": _path("HUB_DIR", ROOT / "hub"), "ip": os.environ.get("HUB_IP", "").strip() or "127.0.0.1",
        "port": _int("HUB_PORT", 8000, 1), "api_port": _int("HUB_API_PORT", 8081, 1),
        "proxy_api_port": _int("HUB_PROXY_API_PORT", 8001, 1), "threads": _int("HUB_THREADS", 1, 1),
        "max_users": _int("HUB_MAX_USERS", 0), "cull_s": _int("HUB_CULL_S", 1800, 0), "proxy": proxy,
    }


def working_copies_hook(source: Path):
    """A pre-spawn hook: the user's working copies, made as `make lab` makes them, before the server starts."""
    copies = _working_copies()

    def hook(spawner) -> None:
        home = Path(spawner.home_dir)
        result = copies.sync(source, home)
        # No "Jupyter news?" prompt (the server is offline), unless the user has chosen otherwise.
        news = home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        if not (news / "notification.jupyterlab-settings").exists():
            news.mkdir(parents=True, exist_ok=True)
            (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}\n')
        spawner.log.info("working copies of %s for %s: %s", source, spawner.user.name,
                         copies.report(result, home).replace("\n", "; ") or "nothing to do")

    return hook


if "c" in globals():   # run by JupyterHub (importing this file for its functions sets nothing)
    s = settings()
    state, users = s["dir"] / "state", s["dir"] / "users"
    state.mkdir(parents=True, exist_ok=True)
    users.mkdir(parents=True, exist_ok=True)
    # The hub's folder is the workshop's, never the repository's: git ignores all of it.
    (s["dir"] / ".gitignore").write_text("# the workshop hub's state and its users' working copies (make hub)\n*\n")

    c.JupyterHub.bind_url = f"http://{s['ip']}:{s['port']}/"
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = s["api_port"]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
    c.ConfigurableHTTPProxy.command = [str(s["proxy"])]
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = True          # stopping the hub stops every user's server
    c.JupyterHub.active_server_limit = s["max_users"]

    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = s["password"]
    if s["admin"]:
        c.SharedPasswordAuthenticator.admin_users = {s["admin"]}
        c.SharedPasswordAuthenticator.admin_password = s["admin_password"]
    c.Authenticator.allow_all = True              # anyone with the password, under a name of their choice
    # The name becomes a folder name: lower-case letters, digits, - and _ only.
    c.Authenticator.username_pattern = r"^[a-z][a-z0-9_-]{0,31}$"

    c.JupyterHub.spawner_class = "simple"         # jupyterhub.spawner.SimpleLocalProcessSpawner
    c.SimpleLocalProcessSpawner.home_dir_template = str(users / "{username}")
    c.Spawner.pre_spawn_hook = working_copies_hook(s["source"])
    c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
    c.Spawner.notebook_dir = "~"                  # the user's folder: their working copies, nothing else
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 300                 # a loaded machine starting many servers at once
    c.Spawner.http_timeout = 300
    threads = str(s["threads"])
    c.Spawner.environment = {
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
        "OMP_WAIT_POLICY": "PASSIVE",             # see the Makefile
        "JUPYTER_PREFER_ENV_PATH": "1",           # this environment's python3 kernel
        **({"PRUNING_COURSE_DATA": os.environ["PRUNING_COURSE_DATA"]}
           if os.environ.get("PRUNING_COURSE_DATA") else {}),
    }
    c.Spawner.args = [
        f"--MappingKernelManager.cull_idle_timeout={s['cull_s']}", "--MappingKernelManager.cull_interval=60",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
    ] + (["--allow-root"] if os.geteuid() == 0 else [])   # containers often run as root

"""The driver: tasks to Ray actors (one per ComfyUI server), results to disk as they finish.

- Each actor runs one task at a time; the driver hands the next pending task to whichever
  actor is idle, so fast servers do more.
- A task is dispatched to one server at a time and is redispatched only when that server was
  lost before the result came back (never because it is slow); a lost server is retried
  (an own server is restarted, an external one is waited for) and rejoins when it answers.
- A row is written by the driver alone, after the image, the moment a result arrives.
- Ctrl-C cancels what the servers are running for this sweep and exits; nothing finished is
  lost, and the next run starts from what is on disk.
"""

from __future__ import annotations

import datetime
import signal
import sys
import time
from collections import deque
from pathlib import Path

from .config import Config
from .results import Store, read_rows
from .tasks import Task, all_tasks, shard_tasks
from .workflow import Template

PACK = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


class SweepAborted(RuntimeError):
    pass


def init_ray(cfg: Config, address: str | None):
    import ray

    if ray.is_initialized():
        return ray, False
    address = address or cfg.ray.get("address") or None
    common = {"include_dashboard": False, "logging_level": cfg.ray.get("logging_level", "WARNING"),
              "log_to_driver": bool(cfg.ray.get("log_to_driver", True))}
    if address:
        # A cluster: ship this package to the workers (they need sweep/ to run the actors).
        ray.init(address=address, runtime_env={"py_modules": [str(PACK / "sweep")]}, **common)
    else:
        local = {}
        if cfg.ray.get("num_cpus") is not None:
            local["num_cpus"] = int(cfg.ray["num_cpus"])
        if cfg.ray.get("num_gpus") is not None:
            local["num_gpus"] = int(cfg.ray["num_gpus"])
        if cfg.ray.get("object_store_mb") is not None:
            local["object_store_memory"] = int(cfg.ray["object_store_mb"]) * MB
        ray.init(**local, **common)
    return ray, True


def make_workers(ray, cfg: Config) -> list[tuple[str, object]]:
    from .worker import ServerWorker

    actor_cls = ray.remote(ServerWorker)
    workers = []
    for url in cfg.urls:
        name = url.split("://", 1)[-1].rstrip("/")
        workers.append((name, actor_cls.options(num_cpus=0, max_concurrency=2).remote(name, url=url)))
    if cfg.launch is not None:
        per_gpu = bool(cfg.launch.get("per_gpu", False))
        if per_gpu:
            count = int(cfg.launch.get("count") or ray.cluster_resources().get("GPU", 0))
            if count < 1:
                raise SweepAborted("servers.launch.per_gpu: the Ray cluster has no GPUs")
            opts = {"num_gpus": 1, "num_cpus": 0}
        else:
            count, opts = int(cfg.launch.get("count", 1)), {"num_cpus": 0}
        for i in range(count):
            name = f"{'gpu' if per_gpu else 'server'}{i}"
            workers.append((name, actor_cls.options(max_concurrency=2, **opts).remote(name, launch=cfg.launch)))
    if not workers:
        raise SweepAborted("[servers]: give urls = [...] of running ComfyUI servers, or launch = {comfyui = ...}")
    return workers


class Bars:
    """tqdm bars: the whole run (``what``, counted in ``unit``: tasks or shards), then one per
    server (how many ``counts`` it finished: tasks done or candidates searched; what it runs)."""

    def __init__(self, total: int, done: int, names: list[str], enabled: bool = True, what: str = "sweep",
                 unit: str = "task", counts: str = "done"):
        from tqdm import tqdm

        kw = {"file": sys.stderr, "disable": not enabled, "dynamic_ncols": True, "mininterval": 0.2}
        self.total = tqdm(total=total, initial=done, desc=what, unit=unit, position=0, **kw)
        width = max(len(n) for n in names)
        self.servers = {n: tqdm(total=None, desc=f"  {n:<{width}}", position=i + 1, leave=True,
                                bar_format="{desc} {n_fmt} " + counts + "{postfix}", **kw)
                        for i, n in enumerate(names)}

    def status(self, name: str, text: str) -> None:
        self.servers[name].set_postfix_str(text, refresh=True)

    def finished(self, name: str, count: int = 1) -> None:
        """One task or shard finished on server ``name``: ``count`` more on its bar."""
        self.servers[name].update(count)
        self.total.update(1)

    def close(self) -> None:
        for bar in self.servers.values():
            bar.close()
        self.total.close()


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plan(cfg: Config, shard) -> tuple[list[Task], list[Task], dict]:
    tasks = shard_tasks(all_tasks(cfg), shard)
    rows, _ = read_rows(cfg.output)
    todo = [t for t in tasks if t.id not in rows]
    return tasks, todo, rows


def run(cfg: Config, shard=None, address: str | None = None, progress: bool = True, log=print) -> int:
    tasks, todo, rows = plan(cfg, shard)
    where = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    log(f"{len(tasks)} tasks{where}: {len(tasks) - len(todo)} already done, {len(todo)} to run "
        f"-> {cfg.output}")
    if not todo:
        log("nothing to run")
        return 0
    store = Store(cfg.output, shard)
    ray, owned = init_ray(cfg, address)
    workers = []
    try:
        workers = make_workers(ray, cfg)
        return _drive(ray, cfg, workers, tasks, todo, store, progress, log)
    finally:
        stop_workers(ray, workers)
        store.close()
        if owned:
            ray.shutdown()


def stop_workers(ray, workers) -> None:
    for _, actor in workers:
        try:
            ray.get(actor.stop.remote(), timeout=60)
        except Exception:  # noqa: BLE001, S110 (best effort at shutdown; the actor may be gone)
            pass
        ray.kill(actor)


class Servers:
    """The server actors and what each one does: ``idle``, running one piece of work
    (``inflight``: ref -> (work, server, time sent)), ``recovering`` after it was lost, or
    ``retired`` (its actor died, or it did not come back). ``run`` is the dispatch loop of the
    sweep and of the distributed search; the caller says what to send and what a result means."""

    def __init__(self, ray, workers, recover_wait: float, log):
        self.ray, self.recover_wait, self.log = ray, recover_wait, log
        self.names = [name for name, _ in workers]
        self.actors = dict(workers)
        self.idle: deque[str] = deque()
        self.recovering: dict = {}
        self.inflight: dict = {}
        self.retired: set[str] = set()
        self.bars = None

    def start(self, on_ready=None) -> None:
        """Start (or reach) every server; ``on_ready(server, info)`` for each that answers, the
        rest are retried (an own server is restarted, an external one is waited for)."""
        starts = {name: actor.start.remote() for name, actor in self.actors.items()}
        for name, ref in starts.items():
            try:
                info = self.ray.get(ref)
                if on_ready:
                    on_ready(name, info)
                self.idle.append(name)
            except Exception as e:  # noqa: BLE001 (a server that does not start is reported, the rest run)
                self.log(f"server {name}: not available ({_first_line(e)}); will retry")
                self._recover(name)

    def show_on(self, bars) -> None:
        self.bars = bars
        for name in self.names:
            bars.status(name, "idle" if name in self.idle else "starting")

    def release(self, name: str) -> None:
        """The server is free for the next piece of work."""
        self.bars.status(name, "idle")
        self.idle.append(name)

    def lost(self, name: str) -> None:
        """The server was lost with work in flight: recovered unless its actor died."""
        if name in self.retired:
            self.bars.status(name, "gone")
        else:
            self.bars.status(name, "lost: recovering")
            self._recover(name)

    def _recover(self, name: str) -> None:
        self.recovering[self.actors[name].recover.remote(self.recover_wait)] = name

    def run(self, pending: deque, send, on_result, aborted, on_return=None, stopped=lambda: False) -> None:
        """Hand ``pending`` work to idle servers until all of it is done or ``stopped()``.

        ``send(work, server)`` gives the payload of the actor's ``run`` (and logs the attempt);
        ``on_result(work, server, t_sent, result)`` takes each result and gives the server back
        (``release``) or reports it lost (``lost``); ``on_return(server, info)`` is told when a
        lost server answers again (``info``) or is gone (None); ``aborted()`` is the error raised
        when every server is lost."""
        from ray.exceptions import RayActorError

        while (pending or self.inflight) and not stopped():
            while pending and self.idle and not stopped():
                name, work = self.idle.popleft(), pending.popleft()
                self.inflight[self.actors[name].run.remote(send(work, name))] = (work, name, time.time())
            if not self.inflight and not self.recovering:
                raise aborted()
            ready, _ = self.ray.wait(list(self.inflight) + list(self.recovering), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in self.recovering:
                    self._returned(self.recovering.pop(ref), ref, on_return)
                    continue
                work, name, t_sent = self.inflight.pop(ref)
                try:
                    result = self.ray.get(ref)
                except RayActorError as e:
                    result = {"status": "lost", "error": f"worker died: {_first_line(e)}"}
                    self.retired.add(name)
                on_result(work, name, t_sent, result)

    def _returned(self, name: str, ref, on_return) -> None:
        from ray.exceptions import RayActorError

        try:
            info = self.ray.get(ref)
        except RayActorError:
            info = None
        if on_return:
            on_return(name, info)
        if info:
            self.release(name)
        else:
            self.bars.status(name, "gone")
            self.retired.add(name)


def _drive(ray, cfg: Config, workers, tasks, todo, store: Store, progress: bool, log) -> int:
    from ray.exceptions import GetTimeoutError, RayActorError

    servers = Servers(ray, workers, cfg.recover_wait, log)

    def ready(name, info):
        log(f"server {name}: ready {info.get('url') or ''} on {info.get('host')}"
            + (f" (GPU {info['gpus']})" if info.get("gpus") else "")
            + (f" (started by the sweep: pid {info['pid']}, log {info['log']})" if info.get("pid") else ""))

    # Start (or reach) every server; the first that answers gives the node definitions.
    servers.start(on_ready=ready)
    if not servers.idle:
        raise SweepAborted("no ComfyUI server answers: " + ", ".join(servers.names))
    object_info = ray.get(servers.actors[servers.idle[0]].object_info.remote())
    template = Template(cfg, object_info)
    # Build one prompt per setting before anything runs: a bad option fails here, not on a server.
    seen = set()
    for t in todo:
        if t.setting.key not in seen:
            seen.add(t.setting.key)
            template.build(t)

    bars = Bars(len(tasks), len(tasks) - len(todo), servers.names, enabled=progress)
    servers.show_on(bars)
    pending: deque[Task] = deque(todo)
    attempts: dict[str, int] = {}
    failed: dict[str, str] = {}
    interrupted = False

    def send(task: Task, name: str) -> dict:
        prompt, outputs = template.build(task)
        payload = {"task": task.id, "prompt": prompt, "outputs": outputs, "timeout": cfg.task_timeout,
                   "extra_data": {"extra_pnginfo": {"noise_search_sweep": task.describe()}}}
        attempts[task.id] = attempts.get(task.id, 0) + 1
        store.log_attempt(task.id, name, "dispatched", attempt=attempts[task.id])
        bars.status(name, f"running {task.setting.key} | {_short(task.prompt.text)} | seed {task.seed}")
        return payload

    def on_result(task: Task, name: str, t_sent: float, result: dict) -> None:
        status = result["status"]
        store.log_attempt(task.id, name, status, attempt=attempts[task.id], error=result.get("error"))
        if status == "ok":
            image = store.save_image(task.id, result["png"])
            store.add_row(_row(task, result, image, name, attempts[task.id], t_sent))
            bars.finished(name)
            servers.release(name)
        elif status == "lost":
            log(f"server {name}: lost ({_first_line(result.get('error'))}); "
                f"task {task.id[:8]} goes back to the queue")
            if attempts[task.id] >= cfg.retries:
                failed[task.id] = f"lost on {attempts[task.id]} servers: {result.get('error')}"
            else:
                pending.appendleft(task)
            servers.lost(name)
        else:  # error / timeout: the same prompt would fail again; recorded, not retried now
            failed[task.id] = result.get("error") or status
            log(f"task {task.id[:8]} ({task.setting.key}, {task.prompt.id}, seed {task.seed}) "
                f"failed on {name}: {result.get('error')}")
            servers.release(name)

    def on_return(name: str, info: dict | None) -> None:
        if info:
            log(f"server {name}: back" + (f" (restarted: pid {info['pid']})" if info.get("pid") else ""))
        else:
            log(f"server {name}: gone; continuing without it")

    stop = _StopOnSignal()
    try:
        servers.run(pending, send, on_result, on_return=on_return, stopped=lambda: bool(stop.requested),
                    aborted=lambda: SweepAborted(f"every server is lost; {len(pending)} tasks left "
                                                 "(run again to resume)"))
        if stop.requested:
            interrupted = True
            for _, (task, name, _) in list(servers.inflight.items()):
                try:
                    ray.get(servers.actors[name].cancel.remote(task.id), timeout=10)
                except (GetTimeoutError, RayActorError):
                    pass
                store.log_attempt(task.id, name, "cancelled", attempt=attempts[task.id])
    finally:
        stop.restore()
        bars.close()
    if interrupted:
        log(f"interrupted: {len(servers.inflight)} running task(s) cancelled; finished rows are in "
            f"{store.rows_path}; run the same command again to resume")
        return 130
    unaccounted = [t.id for t in todo if t.id not in failed and not store.has_row(t.id)]
    if unaccounted:  # every task ends with a row or in `failed`; anything else is a bug here
        raise SweepAborted(f"internal error: {len(unaccounted)} task(s) neither finished nor failed")
    if failed:
        log(f"{len(failed)} task(s) failed (run again to retry them):")
        for task_id, err in list(failed.items())[:20]:
            log(f"  {task_id[:8]}: {_first_line(err)}")
        return 1
    log(f"done: {len(todo)} task(s) run, rows in {store.rows_path}")
    return 0


class _StopOnSignal:
    """Ctrl-C and SIGTERM (how Slurm stops a job) only set a flag: the loop notices it within a
    second, between two steps, so no signal ever lands between logging a dispatch and
    recording it, or between an image and its row. A second signal stops at once."""

    def __init__(self):
        self.requested = None
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                current = signal.getsignal(sig)
                if current is signal.SIG_IGN:  # e.g. started with nohup / in the background
                    continue
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _row(task: Task, result: dict, image: str, server: str, attempt: int, t_sent: float) -> dict:
    report = result["report"]
    return {**task.describe(), "image": image, "server": server, "attempt": attempt,
            "prompt_id": result.get("prompt_id"),
            "nfe": report.get("nfe", {}), "best": report.get("best", {}),
            "scores": {"search": report.get("best", {}).get("score"), "eval": result["eval"]},
            "timings": {**result.get("timings", {}), "search_s": report.get("timings", {}).get("total_s"),
                        "driver_s": round(time.time() - t_sent, 4)},
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "report": report}


def _first_line(e) -> str:
    text = str(e) if e is not None else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if len(lines) > 3 else " ".join(lines)

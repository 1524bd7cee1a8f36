"""`alloop watch` under a stream of files, with a kill -9 and a restart in the middle.

A real Label Studio 1.23 (its own data dir under benchmarks/out/watch), a SQLite MLflow store with a
tiny champion (random-weight VGG16 features at 32 px + SVM, trained on synthetic images: inference
cost is not what is measured), and `alloop watch` as a separate process on a folder under the
server's document root. Files are written in bursts (plain writes, not renames, so the watcher sees
them grow), starting once the watcher is ready; 1.5 s after half the bursts the watcher is killed with
SIGKILL (in a pass or between two), and started again. At the end: tasks, files with more than one
task, tasks without exactly one champion prediction, and seconds from a file's last write to its prediction (Label Studio's created_at).

    .venv/bin/python benchmarks/bench_watch.py --files 1000 --bursts 10

Writes benchmarks/results/stream.json and the section between the watch markers of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from local_labelstudio import start_label_studio  # noqa: E402  (beside this script)

OUT = REPO / "benchmarks" / "out" / "watch"
RESULTS_JSON = REPO / "benchmarks" / "results" / "stream.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- bench_watch: begin -->", "<!-- bench_watch: end -->"
MODEL = "bench-watch-tiny"


def champion(data: Path):
    from integrations import mlflow_registry
    from tests.support.models import register_tiny

    existing = mlflow_registry.resolve(MODEL, mlflow_registry.CHAMPION)
    return existing or register_tiny(OUT, data, MODEL)


def start_watcher(env: dict, folder: Path, title: str, log: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "alloop"), "watch", "--images", str(folder), "--project", title,
               "--model-name", MODEL, "--settle-seconds", "0.5", "--interval", "1"]
    return subprocess.Popen(command, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, cwd=OUT)


def predictions(settings, client, project_id: int) -> list[dict]:
    import requests

    from integrations.labelstudio.auth import authorization_headers

    response = requests.get(f"{settings.url}/api/predictions/", params={"project": project_id},
                            headers=authorization_headers(client), timeout=120)
    response.raise_for_status()
    return response.json()


def tasks_of(client, settings, project_id: int):
    from integrations.labelstudio.tasks import ProjectTasks

    return ProjectTasks(client, settings.url, project_id).read(progress=False)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between bursts")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting for the tasks after this")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{OUT / 'mlflow.db'}"
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    from label_studio_sdk.client import LabelStudio

    from integrations.labelstudio.project import image_choices_config
    from integrations.labelstudio.server import stop
    from mlproject.data.synthetic import generate_synthetic_dagm

    data = OUT / "synthetic" / "Class1"
    if not data.exists():
        data = generate_synthetic_dagm(OUT / "synthetic", n_images=80, size=64, seed=3)
    ref = champion(data)
    images = [p.read_bytes() for p in sorted(data.rglob("*.PNG"))]
    settings = start_label_studio(OUT)
    try:
        client = LabelStudio(base_url=settings.url, api_key=settings.api_key)
        stamp = int(time.time())
        title = f"bench watch {stamp}"
        project = client.projects.create(title=title, label_config=image_choices_config(["defect", "ok"]))
        folder = OUT / "files" / f"incoming-{stamp}"
        folder.mkdir(parents=True)
        env = {**os.environ, "LABEL_STUDIO_URL": settings.url, "LABEL_STUDIO_API_KEY": settings.api_key,
               "LOCAL_FILES_DOCUMENT_ROOT": str(settings.document_root), "ALLOOP_STATE_DIR": str(OUT / "state"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        log = OUT / f"watch-{stamp}.log"
        watcher = start_watcher(env, folder, title, log)
        ready_by = time.time() + 300
        while "ready:" not in log.read_text() and time.time() < ready_by:  # a watcher that runs already;
            time.sleep(0.2)                                                # the restart below is not waited for
        written: dict[str, float] = {}  # file name -> when its last byte was written
        per_burst = -(-args.files // args.bursts)
        kill_after = args.bursts // 2
        killed_at = restarted_at = None
        started = time.time()
        for burst in range(args.bursts):
            for index in range(burst * per_burst, min((burst + 1) * per_burst, args.files)):
                name = f"b{burst:02d}-{index:05d}.png"
                content = images[index % len(images)]
                with open(folder / name, "wb") as handle:  # written in two parts: seen half-written sometimes
                    handle.write(content[: len(content) // 2])
                    handle.flush()
                    handle.write(content[len(content) // 2:])
                written[name] = time.time()
            if burst == kill_after:
                time.sleep(1.5)  # in the middle of ingesting this burst (the model is loaded by now)
                watcher.send_signal(signal.SIGKILL)
                watcher.wait()
                killed_at = time.time()
                watcher = start_watcher(env, folder, title, log)
                restarted_at = time.time()
            time.sleep(args.pause)
        deadline = time.time() + args.timeout
        while time.time() < deadline:
            done = {p["task"] for p in predictions(settings, client, project.id)}
            if len(done) >= args.files:
                break
            time.sleep(2)
        finished = time.time()
        watcher.send_signal(signal.SIGINT)
        try:
            watcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            watcher.kill()

        tasks = tasks_of(client, settings, project.id)
        by_file = Counter(t.data.get("image", "").rsplit("/", 1)[-1] for t in tasks)
        version = str(ref)
        first_prediction = {}
        for raw in predictions(settings, client, project.id):
            task_id = raw["task"]["id"] if isinstance(raw["task"], dict) else raw["task"]
            if raw.get("model_version") == version:
                first_prediction[task_id] = min(first_prediction.get(task_id, 1e18), epoch(raw["created_at"]))
        latency, steady = [], []  # all files; those the first watcher predicted (one that keeps running)
        for task in tasks:
            name = task.data.get("image", "").rsplit("/", 1)[-1]
            if task.id in first_prediction and name in written:
                latency.append(first_prediction[task.id] - written[name])
                if first_prediction[task.id] < killed_at:
                    steady.append(latency[-1])
        latency.sort()
        steady.sort()
        ready_again = [line for line in log.read_text().splitlines() if line.startswith("ready:")]
        row = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=REPO).stdout.strip(),
            "machine": f"{os.cpu_count()} vCPUs, {platform.machine()}, no GPU",
            "command": " ".join(["python", "benchmarks/bench_watch.py", *sys.argv[1:]]),
            "files": args.files, "bursts": args.bursts, "pause_s": args.pause,
            "tasks": len(tasks),
            "files_with_a_task": sum(1 for name in written if by_file.get(name)),
            "files_with_more_than_one_task": sum(1 for n in by_file.values() if n > 1),
            "tasks_without_one_champion_prediction": sum(1 for t in tasks if len(
                [p for p in t.predictions if p.model_version == version]) != 1),
            "killed_after_burst": kill_after, "restart_s": round((restarted_at or 0) - (killed_at or 0), 2),
            "latency_s": {"median": round(statistics.median(latency), 2) if latency else None,
                          "p90": round(latency[int(0.9 * (len(latency) - 1))], 2) if latency else None,
                          "max": round(latency[-1], 2) if latency else None},
            "latency_predicted_before_kill_s": {"median": round(statistics.median(steady), 2) if steady else None,
                                      "max": round(steady[-1], 2) if steady else None, "files": len(steady)},
            "watcher_ready_twice": len(ready_again) == 2,
            "wall_s": round(finished - started, 1),
            "log": str(log.relative_to(REPO)),
        }
        print(json.dumps(row, indent=1))
        record(row)
    finally:
        stop(OUT / "labelstudio.json")


def record(row: dict) -> None:
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {"rows": []}
    previous["rows"].append(row)
    RESULTS_JSON.write_text(json.dumps(previous, indent=1, sort_keys=True) + "\n")
    lat = row["latency_s"]
    section = "\n".join([
        BEGIN,
        f"## `alloop watch`: a stream of files with a kill -9 in the middle ({row['date']})",
        "",
        "```bash",
        row["command"],
        "```",
        f"{row['files']} files written in {row['bursts']} bursts {row['pause_s']:.0f} s apart into a folder under "
        "the document root of a real Label Studio 1.23.2 (SQLite), a tiny champion (inference is not what is "
        f"measured), `alloop watch --settle-seconds 0.5 --interval 1`, SIGKILLed 1.5 s after burst "
        f"{row['killed_after_burst']} was written and restarted at once. {row['machine']}, commit {row['commit']}.",
        "",
        "| tasks | files with a task | files with >1 task | tasks without exactly 1 prediction | "
        "file -> prediction median s (all) | p90 s | max s | median s, files predicted before the kill |",
        "|---|---|---|---|---|---|---|---|",
        f"| {row['tasks']} | {row['files_with_a_task']} | {row['files_with_more_than_one_task']} | "
        f"{row['tasks_without_one_champion_prediction']} | {lat['median']} | {lat['p90']} | {lat['max']} | "
        f"{row['latency_predicted_before_kill_s']['median']} |",
        "",
        "Latency is from a file's last write to its prediction's `created_at`. Files written after the kill "
        "wait for the new process to start and load the model (about 15-20 s on this loaded machine) and "
        "then for the backlog, which is why the overall median is far above a running watcher's.",
        END,
    ])
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS_MD.write_text(text)


if __name__ == "__main__":
    main()

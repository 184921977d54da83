#!/usr/bin/env python3
"""Side-by-side benchmarks for docs/benchmarks.md.

  python3 bench/run.py [--steward target/release/steward] [--window 60] [--only NAME]

Needs: gcc, Python packages apscheduler<4 and psutil. Runs, in one go:
  startup   time from process start to /readyz answering 200, and idle RSS
  precision 10,000 jobs (1,000 every second, the rest a mix) for a minute, Steward
            then APScheduler on the same schedule set; lag from the scheduled
            instant to the probe process start, CPU and RSS
  idle      10,000 jobs none of which is due: CPU over 30 s
  throughput 1,000 manual runs of `true` at once vs a shell loop spawning `true`
"""
import argparse, http.client, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time
from datetime import datetime

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Api:
    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return c

    def call(self, method, path, body=None):
        for attempt in range(3):
            try:
                c = self.conn()
                data = json.dumps(body) if body is not None else None
                c.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
                r = c.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw and raw[:1] in b"{[" else raw)
            except (ConnectionError, http.client.HTTPException, OSError):
                self.local.c = None
                if attempt == 2:
                    raise


CHILDREN = []


def _cleanup():
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()


import atexit
atexit.register(_cleanup)


def start_steward(binary, data, port, extra_env=None):
    env = dict(os.environ, STEWARD_LOG_LEVEL="warn", STEWARD_RUN_AS_USER="root")
    env.update(extra_env or {})
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                            env=env, stdout=open(data + ".log", "w"), stderr=subprocess.STDOUT)
    CHILDREN.append(proc)
    api = Api(port)
    while True:
        try:
            st, _ = api.call("GET", "/readyz")
            if st == 200:
                break
        except Exception:
            pass
        if proc.poll() is not None:
            sys.exit("steward exited during start-up")
        time.sleep(0.002)
    return proc, api, time.perf_counter() - t0


def stop(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# The schedule set: `per_second` jobs every second; the rest of 10,000 split
# evenly into once a minute (spread over the seconds), hourly (spread over the
# minutes) and daily. Every occurrence is on a whole second; 6-field cron.
def schedule_set(per_second=1000):
    out = []
    for i in range(per_second):
        out.append((f"s{i}", "* * * * * *", dict(second="*")))
    rest = (10000 - per_second) // 3
    for i in range(rest):
        out.append((f"m{i}", f"{i % 60} * * * * *", dict(second=str(i % 60))))
    for i in range(rest):
        out.append((f"h{i}", f"0 {i % 60} * * * *", dict(second="0", minute=str(i % 60))))
    for i in range(10000 - per_second - 2 * rest):
        out.append((f"d{i}", f"0 {i % 60} {i % 24} * * *", dict(second="0", minute=str(i % 60), hour=str(i % 24))))
    return out


def expected_runs(jobs, t_start, t_end):
    """Occurrences of the set in [t_start, t_end)."""
    n = 0
    for sec in range(int(t_start), int(t_end)):
        tm = time.gmtime(sec)
        now = {"second": str(tm.tm_sec), "minute": str(tm.tm_min), "hour": str(tm.tm_hour)}
        for _, _, fields in jobs:
            if all(v == "*" or v == now[k] for k, v in fields.items()):
                n += 1
    return n


class Sampler(threading.Thread):
    """Samples RSS of one process every 0.25 s."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.p = psutil.Process(pid)
        self.rss = []
        self.stop_flag = False

    def run(self):
        while not self.stop_flag:
            try:
                self.rss.append(self.p.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.25)


def lags_from(stamp_file, t_start, t_end, steward_times):
    """Lag of every probe whose scheduled instant lies in [t_start, t_end)."""
    lags = []
    if not os.path.exists(stamp_file):
        return lags
    with open(stamp_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            tag, sched, ns = parts
            now = int(ns) / 1e9
            if steward_times and sched != "-":
                s = datetime.fromisoformat(sched.replace("Z", "+00:00")).timestamp()
            else:
                # APScheduler: every occurrence is on a whole second; lag < 1 s is
                # checked by counting runs against the expected number.
                s = float(int(now))
            if t_start <= s < t_end:
                lags.append((now - s) * 1000)
    return lags


def bench_precision_steward(binary, stamp, window, per_second, results):
    data = tempfile.mkdtemp(prefix="stw-prec-")
    out = os.path.join(data, "stamps")
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), free_port())
    # Create the 9,000 slower jobs first, then the every-second ones.
    jobs = schedule_set(per_second)
    for name, expr, _ in sorted(jobs, key=lambda x: x[0].startswith("s")):
        st, body = api.call("POST", "/api/v1/jobs", {
            "name": name, "schedule": expr,
            "spec": {"kind": "command", "argv": [stamp, out, name]},
            "policies": {"overlap": "allow"}})
        assert st == 201, body
    time.sleep(3)  # settle
    sampler = Sampler(proc.pid)
    sampler.start()
    p = psutil.Process(proc.pid)
    c0 = p.cpu_times()
    t_start = float(int(time.time()) + 1)
    time.sleep(t_start + window - time.time() + 2)
    c1 = p.cpu_times()
    sampler.stop_flag = True
    t_end = t_start + window
    lags = lags_from(out, t_start, t_end, steward_times=True)
    st, metrics = api.call("GET", "/metrics")
    stop(proc)
    cpu = (c1.user + c1.system - c0.user - c0.system) / (window + 2 - 1) * 100
    key = f"precision_steward_{per_second}_per_second"
    results[key] = summarize(lags, expected_runs(jobs, t_start, t_end), cpu, sampler.rss)
    skipped = [l for l in metrics.decode().splitlines() if l.startswith('steward_runs_finished_total{status="skipped"}')]
    results[key]["skipped_runs_total"] = int(float(skipped[0].split()[-1])) if skipped else 0
    results[key]["dispatch_lag_histogram"] = [
        l for l in metrics.decode().splitlines() if l.startswith("steward_scheduler_lag_seconds")]
    shutil.rmtree(data, ignore_errors=True)


APS_SCRIPT = r'''
import subprocess, sys, time, os
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.triggers.cron import CronTrigger
import json
stamp, out, spec_file = sys.argv[1], sys.argv[2], sys.argv[3]
jobs = json.load(open(spec_file))
def probe(name):
    subprocess.run([stamp, out, name], env={"PATH": "/usr/bin:/bin"})
s = BackgroundScheduler(executors={"default": ThreadPoolExecutor(64)},
                        job_defaults={"coalesce": False, "max_instances": 1000, "misfire_grace_time": 3600},
                        timezone="UTC")
for name, fields in jobs:
    s.add_job(probe, CronTrigger(timezone="UTC", **fields), args=[name], id=name)
s.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
'''


def bench_precision_apscheduler(stamp, window, per_second, results):
    data = tempfile.mkdtemp(prefix="aps-prec-")
    out = os.path.join(data, "stamps")
    spec = os.path.join(data, "jobs.json")
    with open(spec, "w") as f:
        jobs = schedule_set(per_second)
        json.dump([(n, fields) for n, _, fields in jobs], f)
    script = os.path.join(data, "aps.py")
    with open(script, "w") as f:
        f.write(APS_SCRIPT)
    proc = subprocess.Popen([sys.executable, script, stamp, out, spec], stdout=subprocess.PIPE, text=True)
    CHILDREN.append(proc)
    proc.stdout.readline()
    time.sleep(3)
    sampler = Sampler(proc.pid)
    sampler.start()
    p = psutil.Process(proc.pid)
    c0 = p.cpu_times()
    t_start = float(int(time.time()) + 1)
    time.sleep(t_start + window - time.time() + 2)
    c1 = p.cpu_times()
    sampler.stop_flag = True
    proc.kill()
    proc.wait()
    lags = lags_from(out, t_start, t_start + window, steward_times=False)
    cpu = (c1.user + c1.system - c0.user - c0.system) / (window + 2 - 1) * 100
    results[f"precision_apscheduler_{per_second}_per_second"] = summarize(
        lags, expected_runs(jobs, t_start, t_start + window), cpu, sampler.rss)
    shutil.rmtree(data, ignore_errors=True)


def summarize(lags, expected, cpu, rss):
    return {
        "runs": len(lags), "expected": expected,
        "lag_ms_p50": round(pct(lags, 50), 2), "lag_ms_p99": round(pct(lags, 99), 2),
        "lag_ms_max": round(max(lags), 2) if lags else None,
        "cpu_percent_of_core": round(cpu, 1),
        "rss_mib_max": round(max(rss) / 2**20, 1) if rss else None,
    }


def bench_idle(binary, results):
    data = tempfile.mkdtemp(prefix="stw-idle-")
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), free_port())
    for i in range(10000):
        st, body = api.call("POST", "/api/v1/jobs", {
            "name": f"y{i}", "schedule": f"0 {i % 60} {i % 24} 1 1 *",
            "spec": {"kind": "command", "argv": ["true"]}})
        assert st == 201, body
    api.local.c = None
    time.sleep(3)
    p = psutil.Process(proc.pid)
    c0 = p.cpu_times()
    time.sleep(30)
    c1 = p.cpu_times()
    rss = p.memory_info().rss
    stop(proc)
    results["idle_10k_jobs"] = {
        "cpu_percent_of_core": round((c1.user + c1.system - c0.user - c0.system) / 30 * 100, 3),
        "rss_mib": round(rss / 2**20, 1)}
    shutil.rmtree(data, ignore_errors=True)


def bench_startup(binary, results):
    times, rss = [], []
    for _ in range(5):
        data = tempfile.mkdtemp(prefix="stw-start-")
        proc, api, t = start_steward(binary, os.path.join(data, "d"), free_port())
        times.append(t * 1000)
        time.sleep(0.5)
        rss.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)
    results["startup"] = {"to_readyz_ms_median": round(statistics.median(times), 1),
                          "to_readyz_ms_max": round(max(times), 1),
                          "idle_rss_mib_median": round(statistics.median(rss), 1)}


def bench_throughput(binary, results):
    data = tempfile.mkdtemp(prefix="stw-tp-")
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), free_port())
    st, _ = api.call("POST", "/api/v1/jobs", {"name": "t", "spec": {"kind": "command", "argv": ["true"]},
                                            "policies": {"overlap": "allow", "history_limit": 2000}})
    assert st == 201
    n, threads = 1000, 16
    ids = []
    lock = threading.Lock()

    def worker(k):
        for _ in range(k):
            st, body = api.call("POST", "/api/v1/jobs/t/run")
            assert st == 202, body
            with lock:
                ids.append(body["id"])

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(n // threads + (1 if i < n % threads else 0),)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    while True:
        st, body = api.call("GET", "/api/v1/runs?job=t&status=succeeded&limit=1")
        st2, counts = api.call("GET", "/metrics")
        done = [l for l in counts.decode().splitlines() if l.startswith('steward_runs_stored{status="succeeded"}')]
        if done and int(done[0].split()[-1]) >= n:
            break
        time.sleep(0.01)
    steward_s = time.perf_counter() - t0
    stop(proc)
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"], check=True)
    shell_s = time.perf_counter() - t0
    results["throughput"] = {"runs": n, "steward_seconds": round(steward_s, 3),
                             "steward_runs_per_second": round(n / steward_s, 1),
                             "shell_loop_seconds": round(shell_s, 3),
                             "shell_spawns_per_second": round(n / shell_s, 1),
                             "ratio_steward_to_shell": round((n / steward_s) / (n / shell_s), 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steward", default=os.path.join(ROOT, "target/release/steward"))
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--only", action="append")
    ap.add_argument("--per-second", type=int, action="append",
                    help="jobs firing every second in the precision set (repeatable; default 1000 and 100)")
    a = ap.parse_args()
    a.per_second = a.per_second or [1000, 100]
    stamp = os.path.join(tempfile.gettempdir(), "steward-bench-stamp")
    subprocess.run(["gcc", "-O2", "-o", stamp, os.path.join(HERE, "stamp.c")], check=True)
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
    todo = a.only or ["startup", "throughput", "idle", "precision"]
    if "startup" in todo:
        bench_startup(a.steward, results)
    if "throughput" in todo:
        bench_throughput(a.steward, results)
    if "idle" in todo:
        bench_idle(a.steward, results)
    if "precision" in todo:
        for per_second in a.per_second:
            bench_precision_steward(a.steward, stamp, a.window, per_second, results)
            bench_precision_apscheduler(stamp, a.window, per_second, results)
            s = results[f"precision_steward_{per_second}_per_second"]
            p = results[f"precision_apscheduler_{per_second}_per_second"]
            results[f"precision_ratio_steward_to_apscheduler_{per_second}_per_second"] = {
                k: round(s[k] / p[k], 3) if s.get(k) and p.get(k) else None
                for k in ("runs", "lag_ms_p50", "lag_ms_p99", "lag_ms_max", "cpu_percent_of_core", "rss_mib_max")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

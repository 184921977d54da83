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
  signin    50 concurrent sign-ins (p50/p99, peak RSS) vs 50 raw Argon2id
            verifications (argon2-cffi, same parameters) on a pool as wide as the
            machine
  api       authenticated GET /api/v1/jobs vs unauthenticated /healthz on the
            same server, wrk, requests per second
  audit     audit appends per second with the hash chain vs plain SQLite inserts
            (cargo bench -p steward-store --bench audit_append)
  backends  throughput, api and audit again on SQLite and on PostgreSQL (a local
            cluster made by target/release/steward-testkit, fsync on), one after
            the other, as PostgreSQL / SQLite ratios
  followers 200 clients following one run's 8 MB output that never read, then 200
            more that read it all, on a finished and on a live run: RSS before,
            during and after against the same server with no followers, and the
            p99 latency of other requests meanwhile

Also needs: wrk (Debian package), argon2-cffi (PyPI).
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


BOOTSTRAP = "bootstrap only, change me at once"
ADMIN_PASSWORD = "violet tractor forgets seven lanterns"


class Api:
    def __init__(self, port):
        self.port = port
        self.local = threading.local()
        self.headers = {}

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
                headers = dict(self.headers)
                if data:
                    headers["content-type"] = "application/json"
                c.request(method, path, body=data, headers=headers)
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


def sign_in(port, user, password, forwarded_for=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json"}
    if forwarded_for:
        headers["x-forwarded-for"] = forwarded_for
    c.request("POST", "/api/v1/auth/sign-in", body=json.dumps({"username": user, "password": password}), headers=headers)
    r = c.getresponse()
    body = json.loads(r.read() or b"null")
    cookie = (r.getheader("set-cookie") or "").split(";")[0]
    c.close()
    return r.status, cookie, body


def authorize(api):
    """First admin: sign in, change the bootstrap password, make an API token."""
    st, cookie, me = sign_in(api.port, "admin", BOOTSTRAP)
    assert st == 200, me
    api.headers = {"cookie": cookie, "x-csrf-token": me["csrf_token"]}
    st, body = api.call("POST", "/api/v1/auth/password", {"current_password": BOOTSTRAP, "new_password": ADMIN_PASSWORD})
    assert st == 204, body
    st, body = api.call("POST", "/api/v1/tokens", {"name": "bench"})
    assert st == 201, body
    api.headers = {"authorization": "Bearer " + body["secret"]}
    return body["secret"]


# Which database Steward is started on: None (SQLite in the data directory) or
# the directory of a PostgreSQL cluster kept by `steward-testkit` (a new, empty
# database for every start).
PG_CLUSTER = None
TESTKIT = os.path.join(ROOT, "target/release/steward-testkit")


def database_env():
    if PG_CLUSTER is None:
        return {}
    url = subprocess.run([TESTKIT, "database", PG_CLUSTER], check=True, capture_output=True,
                         text=True).stdout.strip()
    return {"STEWARD_DATABASE_URL": url}


def start_steward(binary, data, port, extra_env=None, authorized=True):
    # The API rate limit would throttle the load generators themselves.
    env = dict(os.environ, STEWARD_LOG_LEVEL="warn", STEWARD_RUN_AS_USER="root",
               STEWARD_BOOTSTRAP_ADMIN_PASSWORD=BOOTSTRAP, STEWARD_API_RATE_LIMIT="0")
    env.update(database_env())
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
    ready = time.perf_counter() - t0
    if authorized:
        authorize(api)
    return proc, api, ready


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


class RssSeries(threading.Thread):
    """Samples RSS of one process every 0.25 s (the series)."""

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


def bench_precision_steward(binary, stamp, window, per_second, results, env=None, suffix=""):
    data = tempfile.mkdtemp(prefix="stw-prec-")
    # Not beside the data directory: the sandbox hides what sits there from jobs.
    out = os.path.join(tempfile.mkdtemp(prefix="stw-stamps-"), "stamps")
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), free_port(), extra_env=env)
    # Create the 9,000 slower jobs first, then the every-second ones.
    jobs = schedule_set(per_second)
    for name, expr, _ in sorted(jobs, key=lambda x: x[0].startswith("s")):
        st, body = api.call("POST", "/api/v1/jobs", {
            "name": name, "schedule": expr,
            "spec": {"kind": "command", "argv": [stamp, out, name]},
            "policies": {"overlap": "allow"}})
        assert st == 201, body
    time.sleep(3)  # settle
    sampler = RssSeries(proc.pid)
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
    key = f"precision_steward_{per_second}_per_second{suffix}"
    results[key] = summarize(lags, expected_runs(jobs, t_start, t_end), cpu, sampler.rss)
    skipped = [l for l in metrics.decode().splitlines() if l.startswith('steward_runs_finished_total{status="skipped"}')]
    results[key]["skipped_runs_total"] = int(float(skipped[0].split()[-1])) if skipped else 0
    results[key]["record_lag_histogram"] = [
        l for l in metrics.decode().splitlines() if l.startswith("steward_scheduler_lag_seconds")]
    results[key]["start_lag_histogram"] = [
        l for l in metrics.decode().splitlines() if l.startswith("steward_start_lag_seconds")]
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
    sampler = RssSeries(proc.pid)
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


def bench_precision_floor(stamp, window, per_second, results):
    """What the machine allows: every occurrence's process forked 1.5 s ahead
    (not counted; Steward prepares that far ahead too), each sleeping until its instant and exec'ing the probe
    then. What is left is the probes' own start (exec, dynamic loading) at
    the same instants as the schedulers', on the same cores."""
    data = tempfile.mkdtemp(prefix="floor-prec-")
    out = os.path.join(data, "stamps")
    jobs = schedule_set(per_second)
    t_start = float(int(time.time()) + 2)
    t_end = t_start + window
    env = {"PATH": "/usr/bin:/bin"}
    children = []
    for sec in range(int(t_start), int(t_end)):
        n = expected_runs(jobs, sec, sec + 1)
        pause = sec - 1.5 - time.time()
        if pause > 0:
            time.sleep(pause)
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                try:
                    time.sleep(max(0.0, sec - time.time()))
                    os.execve(stamp, [stamp, out, "floor"], env)
                finally:
                    os._exit(127)
            children.append(pid)
        # Reap the previous seconds' probes.
        children = [c for c in children if os.waitpid(c, os.WNOHANG) == (0, 0)]
    for c in children:
        os.waitpid(c, 0)
    lags = lags_from(out, t_start, t_end, steward_times=False)
    results[f"precision_floor_{per_second}_per_second"] = {
        "runs": len(lags), "expected": expected_runs(jobs, t_start, t_end),
        "lag_ms_p50": round(pct(lags, 50), 2), "lag_ms_p99": round(pct(lags, 99), 2),
        "lag_ms_max": round(max(lags), 2) if lags else None}
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
    """First start (creates the data directory, key file and admin: one Argon2id
    hash by design) and restart on that directory, five times each."""
    first, again, rss = [], [], []
    for _ in range(5):
        data = tempfile.mkdtemp(prefix="stw-start-")
        d = os.path.join(data, "d")
        proc, api, t = start_steward(binary, d, free_port())
        first.append(t * 1000)
        stop(proc)
        proc, api, t = start_steward(binary, d, free_port(), authorized=False)
        again.append(t * 1000)
        time.sleep(0.5)
        rss.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)
    results["startup"] = {"first_start_to_readyz_ms_median": round(statistics.median(first), 1),
                          "restart_to_readyz_ms_median": round(statistics.median(again), 1),
                          "restart_to_readyz_ms_max": round(max(again), 1),
                          "idle_rss_mib_median": round(statistics.median(rss), 1)}


def bench_throughput(binary, results, key="throughput"):
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
    results[key] = {"runs": n, "steward_seconds": round(steward_s, 3),
                             "steward_runs_per_second": round(n / steward_s, 1),
                             "shell_loop_seconds": round(shell_s, 3),
                             "shell_spawns_per_second": round(n / shell_s, 1),
                             "ratio_steward_to_shell": round((n / steward_s) / (n / shell_s), 3)}


def stored_runs(api):
    """Runs in the store by status, from /metrics."""
    _, m = api.call("GET", "/metrics")
    out = {}
    for line in m.decode().splitlines():
        if line.startswith("steward_runs_stored{status="):
            status = line.split('"')[1]
            out[status] = int(float(line.split()[-1]))
    return out


def create_jobs(api, defs, threads=16):
    chunks = [defs[i::threads] for i in range(threads)]

    def worker(chunk):
        for d in chunk:
            st, body = api.call("POST", "/api/v1/jobs", d)
            assert st == 201, body
    ts = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def all_runs(api):
    runs, cursor = [], None
    while True:
        q = "/api/v1/runs?limit=500" + (f"&cursor={cursor}" if cursor else "")
        st, body = api.call("GET", q)
        assert st == 200, body
        runs += body["items"]
        cursor = body.get("next_cursor")
        if cursor is None:
            return runs


def bench_burst(binary, results, jobs=10000, argv=("true",), key="burst", env=None):
    """`jobs` jobs due at the same second: when was every occurrence recorded,
    when did the last one start, against a shell loop starting as many."""
    from datetime import datetime, timezone
    data = tempfile.mkdtemp(prefix="stw-burst-")
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), free_port(), extra_env=env)
    sampler = Sampler(proc)
    sampler.start()
    # A daily instant far enough ahead for the jobs to be created first.
    t_fire = (int(time.time()) // 10 + 1) * 10 + max(20, jobs // 400)
    tm = time.gmtime(t_fire)
    cron = f"{tm.tm_sec} {tm.tm_min} {tm.tm_hour} * * *"
    defs = [{"name": f"burst-{i}", "schedule": cron,
             "spec": {"kind": "command", "argv": list(argv)}} for i in range(jobs)]
    create_jobs(api, defs)
    assert time.time() < t_fire - 1, "creating the jobs took past the instant; raise the lead"
    while time.time() < t_fire:
        time.sleep(0.01)
    recorded_at = None
    while True:
        counts = stored_runs(api)
        total = sum(counts.values())
        if recorded_at is None and total >= jobs:
            recorded_at = time.time()
        ended = sum(v for k, v in counts.items() if k not in ("queued", "running"))
        if ended >= jobs:
            break
        time.sleep(0.05)
    sampler.stop_flag.set()
    runs = all_runs(api)
    stop(proc)
    shutil.rmtree(data, ignore_errors=True)
    to_s = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    started = [to_s(r["started_at"]) for r in runs if r.get("started_at")]
    statuses = {}
    for r in runs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    last_started = max(started) - t_fire
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {jobs} ]; do /bin/true; i=$((i+1)); done"], check=True)
    shell_s = time.perf_counter() - t0
    results[key] = {"jobs": jobs, "argv": list(argv), "runs_by_status": statuses,
                    "all_recorded_after_seconds": round(recorded_at - t_fire, 3),
                    "last_started_after_seconds": round(last_started, 3),
                    "shell_loop_seconds": round(shell_s, 3),
                    "ratio_last_start_to_shell_loop": round(last_started / shell_s, 3),
                    "peak_rss_mib": round(sampler.peak, 1)}


def bench_many_jobs(binary, results, jobs=100000, key="many_jobs"):
    """`jobs` jobs (daily schedules, 100 tags): memory once created and after a
    restart, restart to ready, idle CPU, and job-list pages (first page, deep
    pages by cursor, a tag, a name substring, by next run) side by side with
    the same page read straight from the SQLite file."""
    import sqlite3
    data = tempfile.mkdtemp(prefix="stw-many-")
    d = os.path.join(data, "d")
    proc, api, _ = start_steward(binary, d, free_port())
    t0 = time.perf_counter()
    defs = [{"name": f"job-{i:06d}", "schedule": f"{i % 60} {i % 24} * * *", "tags": [f"t{i % 100}"],
             "spec": {"kind": "command", "argv": ["/usr/local/bin/report", "--id", str(i)]}}
            for i in range(jobs)]
    create_jobs(api, defs)
    created_s = time.perf_counter() - t0
    api.local.c = None
    time.sleep(3)
    rss_created = rss_mib(proc)

    def pages(api):
        lat = {"first": [], "deep": [], "tag": [], "name": [], "next_run": []}
        for _ in range(40):
            for kind, q in (("first", "/api/v1/jobs?limit=100"), ("tag", "/api/v1/jobs?tag=t37&limit=100"),
                            ("name", "/api/v1/jobs?name=9999&limit=100"),
                            ("next_run", "/api/v1/jobs?sort=next_run&limit=100")):
                t = time.perf_counter()
                st, body = api.call("GET", q)
                lat[kind].append((time.perf_counter() - t) * 1000)
                assert st == 200 and body["items"], body
        cursor, n = None, 0
        while n < 200:
            q = "/api/v1/jobs?limit=100" + (f"&cursor={cursor}" if cursor else "")
            t = time.perf_counter()
            st, body = api.call("GET", q)
            lat["deep"].append((time.perf_counter() - t) * 1000)
            cursor, n = body.get("next_cursor"), n + 1
        return {k: round(pct(v, 95), 2) for k, v in lat.items()}

    def idle_cpu(proc, seconds=30):
        p = psutil.Process(proc.pid)
        c0 = p.cpu_times()
        time.sleep(seconds)
        c1 = p.cpu_times()
        return (c1.user + c1.system - c0.user - c0.system) / seconds * 100

    list_p95 = pages(api)
    idle = idle_cpu(proc)
    stop(proc)
    token = api.headers
    proc, api, ready = start_steward(binary, d, free_port(), authorized=False)
    api.headers = token
    time.sleep(3)
    rss_restarted = rss_mib(proc)
    idle_restarted = idle_cpu(proc)
    list_p95_restarted = pages(api)
    stop(proc)
    # The same first page straight from the file: what the list costs beyond the database.
    db = sqlite3.connect(os.path.join(d, "steward.db"))
    raw = []
    for _ in range(40):
        t = time.perf_counter()
        rows = db.execute("SELECT * FROM jobs ORDER BY name LIMIT 101").fetchall()
        raw.append((time.perf_counter() - t) * 1000)
        assert len(rows) == 101
    db.close()
    shutil.rmtree(data, ignore_errors=True)
    results[key] = {"jobs": jobs, "create_seconds": round(created_s, 1),
                    "rss_mib_after_creating": round(rss_created, 1),
                    "rss_mib_after_restart": round(rss_restarted, 1),
                    "restart_to_ready_seconds": round(ready, 3),
                    "idle_cpu_percent_of_core": round(idle, 3),
                    "idle_cpu_percent_of_core_after_restart": round(idle_restarted, 3),
                    "list_page_ms_p95": list_p95, "list_page_ms_p95_after_restart": list_p95_restarted,
                    "raw_sqlite_first_page_ms_p95": round(pct(raw, 95), 3),
                    "ratio_first_page_to_raw_sqlite": round(list_p95["first"] / max(pct(raw, 95), 0.001), 1)}


def bench_signin(binary, results):
    """50 people signing in at once, each from their own address behind a
    trusted proxy: latency per sign-in and the server's peak RSS, which the
    hashing semaphore bounds (cores x 64 MiB), not the crowd."""
    import concurrent.futures
    from argon2 import PasswordHasher, Type
    data = tempfile.mkdtemp(prefix="stw-signin-")
    port = free_port()
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), port, {"STEWARD_TRUSTED_PROXIES": "127.0.0.1"})
    n = 50
    pw = "a sign-in benchmark passphrase"
    for i in range(n):
        st, body = api.call("POST", "/api/v1/users", {"username": f"user{i}", "password": pw, "roles": ["viewer"]})
        assert st == 201, body
    ps = psutil.Process(proc.pid)
    time.sleep(0.5)
    idle = ps.memory_info().rss / 2**20
    peak = [idle]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], ps.memory_info().rss / 2**20)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    barrier = threading.Barrier(n)
    lat = [None] * n

    def one(i):
        barrier.wait()
        t0 = time.perf_counter()
        st, _, body = sign_in(port, f"user{i}", pw, forwarded_for=f"10.9.{i // 200}.{i % 200 + 1}")
        lat[i] = (time.perf_counter() - t0) * 1000
        assert st == 200, body

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done.set()
    sampler.join()
    stop(proc)
    shutil.rmtree(data, ignore_errors=True)

    # The raw tool: the same Argon2id parameters, the same crowd, a pool as wide as the machine.
    cores = os.cpu_count()
    ph = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1, hash_len=32, type=Type.ID)
    h = ph.hash(pw)
    raw = [None] * n
    with concurrent.futures.ThreadPoolExecutor(max_workers=cores) as pool:
        t0 = time.perf_counter()

        def verify(i):
            ph.verify(h, pw)
            raw[i] = (time.perf_counter() - t0) * 1000

        list(pool.map(verify, range(n)))
    s50, s99 = pct(lat, 50), pct(lat, 99)
    r50, r99 = pct(raw, 50), pct(raw, 99)
    results["signin_50_concurrent"] = {
        "steward_ms_p50": round(s50, 1), "steward_ms_p99": round(s99, 1), "steward_ms_max": round(max(lat), 1),
        "raw_argon2_ms_p50": round(r50, 1), "raw_argon2_ms_p99": round(r99, 1),
        "ratio_steward_to_raw_p50": round(s50 / r50, 3), "ratio_steward_to_raw_p99": round(s99 / r99, 3),
        "rss_mib_before": round(idle, 1), "rss_mib_peak": round(peak[0], 1),
        "rss_before_plus_permits_x_64_mib": round(idle + cores * 64, 1), "hashing_permits": cores,
    }


def wrk(url, seconds, headers=()):
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout
    rps = float([l for l in out.splitlines() if l.startswith("Requests/sec:")][0].split()[1])
    p99 = [l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")]
    non2xx = [l for l in out.splitlines() if "Non-2xx" in l]
    assert not non2xx, out
    return rps, (p99[0] if p99 else None)


def bench_api(binary, results, rounds=5, seconds=4, key="api_rps"):
    """Alternating windows of /healthz and authenticated /api/v1/jobs on the same
    server, so drift on a shared machine hits both alike; the ratio is taken per
    pair and the median reported."""
    data = tempfile.mkdtemp(prefix="stw-api-")
    port = free_port()
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), port)
    for i in range(10):
        st, _ = api.call("POST", "/api/v1/jobs", {"name": f"job{i}", "schedule": "0 3 * * *",
                                                 "spec": {"kind": "command", "argv": ["true"]}})
        assert st == 201
    token = api.headers["authorization"]
    base = f"http://127.0.0.1:{port}"
    wrk(base + "/healthz", 2)  # warm-up
    pairs = []
    for _ in range(rounds):
        h_rps, h_p99 = wrk(base + "/healthz", seconds)
        j_rps, j_p99 = wrk(base + "/api/v1/jobs", seconds, [f"Authorization: {token}"])
        pairs.append((h_rps, j_rps, h_p99, j_p99))
    stop(proc)
    shutil.rmtree(data, ignore_errors=True)
    ratios = sorted(j / h for h, j, _, _ in pairs)
    results[key] = {"rounds": rounds, "seconds_per_window": seconds, "jobs_listed": 10,
                          "healthz_rps": [round(p[0]) for p in pairs],
                          "jobs_authenticated_rps": [round(p[1]) for p in pairs],
                          "healthz_p99": [p[2] for p in pairs], "jobs_authenticated_p99": [p[3] for p in pairs],
                          "ratio_jobs_to_healthz_per_round": [round(r, 3) for r in ratios],
                          "ratio_jobs_to_healthz_median": round(statistics.median(ratios), 3)}


def rss_mib(proc):
    return psutil.Process(proc.pid).memory_info().rss / 2**20


class Sampler(threading.Thread):
    """Peak RSS of `proc` while running, sampled every 20 ms."""
    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop_flag = proc, 0.0, threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            self.peak = max(self.peak, rss_mib(self.proc))
            time.sleep(0.02)

    def stop(self):
        self.stop_flag.set()
        self.join()
        return self.peak


class Prober:
    """Other requests while followers run, from a process of its own (wrk, one
    connection back to back), so the load generator's own threads do not
    inflate the figure: p99 in ms."""
    def __init__(self, port, token, path, seconds):
        self.proc = subprocess.Popen(
            ["wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", "-H", f"Authorization: {token}",
             f"http://127.0.0.1:{port}{path}"], stdout=subprocess.PIPE, text=True)

    def result(self):
        out = self.proc.communicate()[0]
        line = [l for l in out.splitlines() if l.strip().startswith("99%")][0].split()[1]
        n = int([l for l in out.splitlines() if "requests in" in l][0].split()[0])
        value = float(line.rstrip("usm"))
        ms = value / 1000.0 if line.endswith("us") else (value if line.endswith("ms") else value * 1000.0)
        return round(ms, 2), n


def open_follower(port, token, run):
    s = socket.create_connection(("127.0.0.1", port))
    # Connection: close, so the server closes the socket after the `end` event.
    s.sendall((f"GET /api/v1/runs/{run}/output/follow HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: {token}\r\nConnection: close\r\n\r\n").encode())
    return s


def read_all(s, counts, i):
    n = 0
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        n += len(b)
    counts[i] = n


def follow_phase(proc, port, token, target, followers):
    """Idle followers, then readers while they stay; returns measurements."""
    m = {}
    sampler = Sampler(proc); sampler.start()
    idle = [open_follower(port, token, target) for _ in range(followers)] if followers else []
    time.sleep(4)
    m["peak_idle"] = sampler.peak
    counts = [0] * followers
    prober = Prober(port, token, f"/api/v1/runs/{target}", 6)
    readers = [open_follower(port, token, target) for _ in range(followers)]
    threads = [threading.Thread(target=read_all, args=(s_, counts, i)) for i, s_ in enumerate(readers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m["read_seconds"] = round(time.perf_counter() - t0, 1)
    m["p99"], m["probes"] = prober.result()
    m["peak_all"] = sampler.stop()
    for s_ in idle + readers:
        s_.close()
    m["min_bytes_read"] = min(counts) if counts else 0
    return m


def bench_followers(binary, results, followers=200):
    """Each scenario runs twice on one server, without followers (control) and
    with them, and compares the two at the same points."""
    data = tempfile.mkdtemp(prefix="stw-follow-")
    port = free_port()
    proc, api, _ = start_steward(binary, os.path.join(data, "d"), port, {
        "STEWARD_OUTPUT_LIMIT": str(16 * 2**20), "STEWARD_MAX_FOLLOWERS": "1000",
        "STEWARD_MAX_FOLLOWERS_PER_USER": "1000"})  # the default sending budget, 32 MiB/s
    token = api.headers["authorization"]
    eight_mb = "head -c 6000000 /dev/zero | tr '\\0' x | fold -w 100"
    # The live run prints the same 8 MB in about 8 s, then waits 16 s: the
    # followers join when all of it is printed and stay until the run ends.
    live = ("i=0; while [ $i -lt 80 ]; do head -c 75000 /dev/zero | tr '\\0' x | fold -w 100; "
            "sleep 0.1; i=$((i+1)); done; sleep 16")
    for name, script in (("finished", eight_mb), ("live", live)):
        st, _ = api.call("POST", "/api/v1/jobs", {"name": name, "policies": {"overlap": "allow"},
                                                 "spec": {"kind": "command", "argv": ["sh", "-c", script]}})
        assert st == 201
    def wait_end(run):
        while api.call("GET", f"/api/v1/runs/{run}")[1]["status"] in ("queued", "running"):
            time.sleep(0.1)
    st, run = api.call("POST", "/api/v1/jobs/finished/run")
    finished = run["id"]
    wait_end(finished)
    # One follower reads it all first: what one follower leaves in the
    # allocator is part of the baseline; growth past it is what many cost.
    warm = [0]
    read_all(open_follower(port, token, finished), warm, 0)
    out = {}
    for scenario in ("finished", "live"):
        passes = {}
        for label, n in (("control", 0), ("followers", followers)):
            if scenario == "live":
                st, run = api.call("POST", "/api/v1/jobs/live/run")
                target = run["id"]
                time.sleep(9)  # all printed, still running
            else:
                target = finished
            before = rss_mib(proc)
            m = follow_phase(proc, port, token, target, n)
            if scenario == "live":
                wait_end(target)
            time.sleep(4)
            m["before"], m["after"] = before, rss_mib(proc)
            passes[label] = m
        c, f = passes["control"], passes["followers"]
        out[scenario] = {
            "followers_idle": followers, "followers_reading": followers,
            "rss_mib_before": round(f["before"], 1),
            "rss_mib_peak_idle_followers": round(f["peak_idle"], 1),
            "rss_mib_peak_all_followers": round(f["peak_all"], 1),
            "rss_mib_after": round(f["after"], 1),
            "control_rss_mib_before_peak_after": [round(c["before"], 1), round(c["peak_all"], 1), round(c["after"], 1)],
            "growth_mib_idle_followers_vs_control": round(f["peak_idle"] - max(c["peak_idle"], f["before"]), 1),
            "growth_mib_all_followers_vs_control": round(f["peak_all"] - max(c["peak_all"], f["before"]), 1),
            "after_vs_control_after": round(f["after"] / c["after"], 3),
            "bytes_read_per_reader_min": f["min_bytes_read"], "read_seconds": f["read_seconds"],
            "p99_ms_other_requests_control": c["p99"], "p99_ms_other_requests_with_followers": f["p99"],
            "probes_control_followers": [c["probes"], f["probes"]],
        }
    stop(proc)
    shutil.rmtree(data, ignore_errors=True)
    results["followers"] = out


def bench_audit(results, key="audit_append", env=None):
    out = subprocess.run(["cargo", "bench", "-q", "-p", "steward-store", "--bench", "audit_append"],
                         cwd=ROOT, check=True, capture_output=True, text=True,
                         env=dict(os.environ, **(env or {}))).stdout
    results[key] = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def bench_backends(binary, results, cluster_dir):
    """The store-bound benchmarks on SQLite and on PostgreSQL (a local cluster
    with PostgreSQL's default durability: fsync on every commit), one after the
    other in the same run, reported as PostgreSQL / SQLite ratios."""
    global PG_CLUSTER
    subprocess.run([TESTKIT, "start", cluster_dir, "--durable"], check=True, stdout=subprocess.DEVNULL)
    out = {}
    try:
        for backend in ("sqlite", "postgres"):
            PG_CLUSTER = cluster_dir if backend == "postgres" else None
            bench_throughput(binary, out, key=f"{backend}_throughput")
            bench_api(binary, out, key=f"{backend}_api_rps")
        PG_CLUSTER = None
        url = subprocess.run([TESTKIT, "database", cluster_dir], check=True, capture_output=True,
                             text=True).stdout.strip()
        bench_audit(out, key="audit_append", env={"STEWARD_BENCH_PG_URL": url})
    finally:
        PG_CLUSTER = None
        subprocess.run([TESTKIT, "stop", cluster_dir], check=False, stdout=subprocess.DEVNULL)
    r = lambda a, b: round(a / b, 3)
    out["ratio_postgres_to_sqlite"] = {
        "manual_runs_per_second": r(out["postgres_throughput"]["steward_runs_per_second"],
                                    out["sqlite_throughput"]["steward_runs_per_second"]),
        "authenticated_api_rps_median": r(statistics.median(out["postgres_api_rps"]["jobs_authenticated_rps"]),
                                          statistics.median(out["sqlite_api_rps"]["jobs_authenticated_rps"])),
        "audit_appends_per_second": out["audit_append"].get("ratio_postgres_to_sqlite_appends"),
    }
    results["backends"] = out


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
    todo = a.only or ["startup", "burst", "throughput", "idle", "signin", "api", "audit", "backends", "followers",
                      "precision", "many_jobs"]
    if "startup" in todo:
        bench_startup(a.steward, results)
    if "burst" in todo:
        bench_burst(a.steward, results)
        # Side by side: the same burst without preparing runs ahead.
        bench_burst(a.steward, results, key="burst_prepare_ahead_off", env={"STEWARD_PREPARE_AHEAD": "0s"})
        bench_burst(a.steward, results, jobs=1500, argv=("sleep", "5"), key="burst_sleep_5")
    if "throughput" in todo:
        bench_throughput(a.steward, results)
    if "idle" in todo:
        bench_idle(a.steward, results)
    if "many_jobs" in todo:
        bench_many_jobs(a.steward, results)
    if "signin" in todo:
        bench_signin(a.steward, results)
    if "api" in todo:
        bench_api(a.steward, results)
    if "audit" in todo:
        bench_audit(results)
    if "backends" in todo:
        bench_backends(a.steward, results, os.path.join(tempfile.gettempdir(), "steward-bench-pg"))
    if "followers" in todo:
        bench_followers(a.steward, results)
    if "precision" in todo:
        for per_second in a.per_second:
            bench_precision_steward(a.steward, stamp, a.window, per_second, results)
            bench_precision_apscheduler(stamp, a.window, per_second, results)
            bench_precision_floor(stamp, a.window, per_second, results)
            if per_second <= 100:
                bench_precision_steward(a.steward, stamp, a.window, per_second, results,
                                        env={"STEWARD_PREPARE_AHEAD": "0s"}, suffix="_prepare_ahead_off")
            s = results[f"precision_steward_{per_second}_per_second"]
            p = results[f"precision_apscheduler_{per_second}_per_second"]
            results[f"precision_ratio_steward_to_apscheduler_{per_second}_per_second"] = {
                k: round(s[k] / p[k], 3) if s.get(k) and p.get(k) else None
                for k in ("runs", "lag_ms_p50", "lag_ms_p99", "lag_ms_max", "cpu_percent_of_core", "rss_mib_max")}
            f = results[f"precision_floor_{per_second}_per_second"]
            results[f"precision_ratio_steward_to_floor_{per_second}_per_second"] = {
                k: round(s[k] / f[k], 3) if s.get(k) and f.get(k) else None
                for k in ("lag_ms_p50", "lag_ms_p99", "lag_ms_max")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
